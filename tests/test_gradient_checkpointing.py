"""training.gradient_checkpointing: the same training, step for step, with less activation memory."""

from __future__ import annotations

import pytest
import yaml
from helpers import sst2_slice, tiny_bert, train_tiny


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gc")
    return tmp, tiny_bert(tmp / "bert", layers=2), *sst2_slice(tmp, 128, 32)


def train(base, name, strategy, **training):
    run, records = train_tiny(base, name, strategy, **training)
    return [r["loss"] for r in records if "loss" in r], run


# freeze_bottom without the cache: the first trained layer's input needs no grad (reentrant checkpointing would
# silently drop that layer's gradients)
@pytest.mark.parametrize("strategy, extra", [("full", {}), ("lora", {}), ({"method": "freeze_bottom", "layers": 1}, {"feature_cache": False})])
def test_checkpointed_training_gives_the_same_losses_step_for_step(base, strategy, extra):
    plain, _ = train(base, "plain", strategy, **extra)
    checkpointed, run = train(base, "checkpointed", strategy, gradient_checkpointing=True, **extra)
    assert len(plain) == len(checkpointed) == 8
    # dropout is on in the tiny BERT: equal losses also show the recomputation replays the same dropout masks
    assert max(abs(a - b) for a, b in zip(plain, checkpointed)) < 1e-5
    assert checkpointed[-1] != checkpointed[0]
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["gradient_checkpointing"] is True


@pytest.mark.parametrize("method", ["full", "lora"])
def test_each_layer_runs_again_in_the_backward_pass(base, method):
    """Proof that checkpointing is on: a layer's insides run twice per training step (once more when recomputed)."""
    import torch

    from weitiao.config import StrategyConfig
    from weitiao.models.layers import find_layer_stack, unwrap
    from weitiao.strategies import apply_strategy
    from weitiao.tasks.classification import build_model
    from weitiao.train.recipe import enable_checkpointing

    calls = []
    for checkpointing in (False, True):
        model, _ = build_model(str(base[1]), ["a", "b"], False)
        if checkpointing:
            enable_checkpointing(model)
        model = apply_strategy(model, StrategyConfig(method=method)).model
        _, stack = find_layer_stack(unwrap(model))
        count = [0]
        # a module inside the layer: transformers checkpoints the layer's forward, not its hooks
        next(stack[1].children()).register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
        model.train()
        ids = torch.randint(1000, 2000, (4, 12))
        model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.sum().backward()
        calls.append(count[0])
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert calls == [1, 2]
