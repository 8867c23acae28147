"""Gradient accumulation: k micro-batches of unequal sizes give the gradient of one batch of their union.

The loss is normalized by the examples of the whole accumulation window, not micro-batch by
micro-batch (the weighting bug transformers fixed in 2024, huggingface/transformers#34191).
"""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from torch.optim.optimizer import register_optimizer_step_pre_hook

from weitiao.config import TrainingConfig
from weitiao.tasks.classification import Encoded, collate, loss_fn
from weitiao.train.loop import train_loop
from weitiao.train.run_folder import MetricsLog


def tiny_classifier():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=64, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg)


def gradients_of_one_step(tmp_path, batches: list[list[int]], grad_accum: int, multi_label: bool = False) -> list[torch.Tensor]:
    """Run one optimizer step over `batches` and return the gradients the optimizer saw."""
    tmp_path.mkdir()
    gen = torch.Generator().manual_seed(1)
    lengths = [int(n) for n in torch.randint(4, 20, (10,), generator=gen)]
    ids = [torch.randint(1, 100, (n,), generator=gen).tolist() for n in lengths]
    labels = [[i % 3, (i + 1) % 3] if multi_label else i % 3 for i in range(10)]
    data = Encoded(ids, None, labels)
    model = tiny_classifier()
    head = model.classifier.weight

    def compute_loss(m, batch):
        labels = batch.pop("labels")
        return loss_fn(m(**batch).logits, labels, multi_label, reduction="sum")

    seen = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append([p.grad.clone() for g in opt.param_groups for p in g["params"]]))
    try:
        opts = TrainingConfig(max_steps=1, batch_size=5, grad_accum=grad_accum, max_grad_norm=None, progress=False, warmup_ratio=0.0)
        train_loop(model, Accelerator(cpu=True), param_groups=[{"params": list(model.parameters()), "lr": 1e-3}],
                   epoch_batches=lambda e: batches, make_batch=lambda idx: collate(data, idx, 0, 3, multi_label),
                   compute_loss=compute_loss, count_targets=lambda b: len(b["labels"]), penalty=lambda: 0.5 * (head**2).sum(),
                   evaluate=lambda m: {"loss": 0.0}, save_best=lambda m: None, run_dir=tmp_path, log=MetricsLog(tmp_path / "m.jsonl"),
                   opts=opts, train_mode=lambda m: m.eval())
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("multi_label", [False, True])
def test_unequal_micro_batches_give_the_gradient_of_their_union(tmp_path, multi_label):
    union = gradients_of_one_step(tmp_path / "one", [list(range(10))], grad_accum=1, multi_label=multi_label)
    accumulated = gradients_of_one_step(tmp_path / "three", [[0, 1, 2, 3, 4, 5], [6], [7, 8, 9]], grad_accum=3, multi_label=multi_label)
    assert len(union) == len(accumulated)
    for a, b in zip(union, accumulated):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert max(float(g.abs().max()) for g in union) > 1e-3  # the gradients are not trivially zero


def test_a_short_last_window_is_weighted_by_its_own_examples(tmp_path):
    """An epoch of 3 micro-batches with grad_accum 2: the last step has one micro-batch, normalized by its size alone."""
    alone = gradients_of_one_step(tmp_path / "a", [[7, 8, 9]], grad_accum=1)
    # max_steps=1 stops after the first window, so put the short window first in its own epoch
    short = gradients_of_one_step(tmp_path / "b", [[7, 8, 9]], grad_accum=2)
    for a, b in zip(alone, short):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
