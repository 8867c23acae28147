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
from weitiao.rundir.folder import MetricsLog
from weitiao.tasks.classification import Encoded, collate, loss_fn
from weitiao.train.loop import train_loop


def tiny_classifier():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=64, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg)


def tiny_data(multi_label: bool = False):
    gen = torch.Generator().manual_seed(1)
    lengths = [int(n) for n in torch.randint(4, 20, (10,), generator=gen)]
    ids = [torch.randint(1, 100, (n,), generator=gen).tolist() for n in lengths]
    labels = [[i % 3, (i + 1) % 3] if multi_label else i % 3 for i in range(10)]
    return Encoded(ids, None, labels)


def summed_loss(m, batch, multi_label: bool = False):
    labels = batch.pop("labels")
    return loss_fn(m(**batch).logits, labels, multi_label, reduction="sum")


def penalty_of(model):
    return 0.5 * (model.classifier.weight ** 2).sum()


def optimizer_steps(tmp_path, batches: list[list[int]], grad_accum: int, steps: int = 1, multi_label: bool = False) -> list[tuple]:
    """Run `steps` optimizer steps over `batches`; for each, (the gradients the optimizer saw, the weights they were taken at)."""
    tmp_path.mkdir()
    data = tiny_data(multi_label)
    model = tiny_classifier()
    seen = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: seen.append(
        ([p.grad.clone() for g in opt.param_groups for p in g["params"]], {k: v.clone() for k, v in model.state_dict().items()})))
    try:
        opts = TrainingConfig(max_steps=steps, batch_size=5, grad_accum=grad_accum, max_grad_norm=None, progress=False, warmup_ratio=0.0)
        train_loop(model, Accelerator(cpu=True), param_groups=[{"params": list(model.parameters()), "lr": 1e-3}],
                   epoch_batches=lambda e: batches, make_batch=lambda idx: collate(data, idx, 0, 3, multi_label),
                   compute_loss=lambda m, b: summed_loss(m, b, multi_label), count_targets=lambda b: len(b["labels"]),
                   penalty=lambda: penalty_of(model), evaluate=lambda m: {"loss": 0.0}, save_best=lambda m: None, run_dir=tmp_path,
                   log=MetricsLog(tmp_path / "m.jsonl"), opts=opts, train_mode=lambda m: m.eval())
    finally:
        handle.remove()
    assert len(seen) == steps
    return seen


def gradients_of_one_step(tmp_path, batches: list[list[int]], grad_accum: int, multi_label: bool = False) -> list[torch.Tensor]:
    """Run one optimizer step over `batches` and return the gradients the optimizer saw."""
    return optimizer_steps(tmp_path, batches, grad_accum, 1, multi_label)[0][0]


@pytest.mark.parametrize("multi_label", [False, True])
def test_unequal_micro_batches_give_the_gradient_of_their_union(tmp_path, multi_label):
    union = gradients_of_one_step(tmp_path / "one", [list(range(10))], grad_accum=1, multi_label=multi_label)
    accumulated = gradients_of_one_step(tmp_path / "three", [[0, 1, 2, 3, 4, 5], [6], [7, 8, 9]], grad_accum=3, multi_label=multi_label)
    assert len(union) == len(accumulated)
    for a, b in zip(union, accumulated):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert max(float(g.abs().max()) for g in union) > 1e-3  # the gradients are not trivially zero


def test_a_short_last_window_is_weighted_by_its_own_examples(tmp_path):
    """An epoch of 3 micro-batches with grad_accum 2: the second step's window holds the last micro-batch alone
    (3 examples after windows of 4 + 3), and its loss is divided by those 3, not by the first window's 7 or by 2 x 5."""
    (_, weights_before), (short, weights) = optimizer_steps(tmp_path / "run", [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]], grad_accum=2, steps=2)
    assert any(not torch.equal(weights[k], weights_before[k]) for k in weights), "the first step moved the weights"
    model = tiny_classifier()
    model.load_state_dict(weights)  # the weights the second step's gradients were taken at
    model.eval()
    batch = collate(tiny_data(), [7, 8, 9], 0, 3, False)

    def grads(scale: float) -> list[torch.Tensor]:
        model.zero_grad()
        (summed_loss(model, dict(batch)) * scale + penalty_of(model)).backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]

    expected = grads(1 / 3)
    assert len(short) == len(expected)
    for a, b in zip(short, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    # the scaling is what tells them apart: over 7 or 10 examples the loss's share of the gradient would be 3/7 or 3/10 of it
    for wrong in (1 / 7, 1 / 10):
        assert max(float((a - b).abs().max()) for a, b in zip(short, grads(wrong))) > 1e-3
