"""The gradient controller: layer-wise LR decay, head LR, regex overrides, weight decay, schedules."""

from __future__ import annotations

import math

import pytest
import torch

from weitiao.strategies.lr_groups import build_param_groups, lr_table
from weitiao.train.optim import build_optimizer, build_scheduler, warmup_steps

LR = 1e-3
# decay 0.5 over 4 layers: layer i (0-based) gets 1e-3 · 0.5^(4 − (i + 1)), the embeddings 1e-3 · 0.5^4
LAYER_LR = {0: 1.25e-4, 1: 2.5e-4, 2: 5e-4, 3: 1e-3}
EMBEDDINGS_LR = 6.25e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                                    intermediate_size=64, max_position_embeddings=64, num_labels=3))


def tiny_llama():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    return LlamaForSequenceClassification(LlamaConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                                                      num_labels=3, pad_token_id=0))


def by_name(model, groups) -> dict[str, dict]:
    """Parameter name -> its group; each parameter must be in exactly one group."""
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    group_of = {id(p): g for g in groups for p in g["params"]}
    return {n: group_of[id(p)] for n, p in model.named_parameters() if id(p) in group_of}


def bert_lr(name: str, head: float = LR) -> float:
    if name.startswith(("bert.pooler.", "classifier.")):
        return head
    if name.startswith("bert.embeddings."):
        return EMBEDDINGS_LR
    return LAYER_LR[int(name.split(".")[3])]


def test_layer_wise_decay_is_a_pyramid_from_the_head_down_to_the_embeddings():
    model = tiny_bert()
    groups = by_name(model, build_param_groups(model, None, LR, 0.01, layer_lr_decay=0.5))
    assert len(groups) == sum(1 for _ in model.parameters())
    for name, g in groups.items():
        assert g["lr"] == pytest.approx(bert_lr(name), rel=1e-12), name
    assert groups["bert.encoder.layer.0.output.dense.weight"]["lr"] == pytest.approx(1.25e-4)
    assert groups["bert.embeddings.word_embeddings.weight"]["lr"] == pytest.approx(6.25e-5)
    assert groups["classifier.weight"]["lr"] == groups["bert.pooler.dense.weight"]["lr"] == LR
    assert {g["name"] for g in groups.values()} == {"embeddings", "layer 0", "layer 1", "layer 2", "layer 3", "head"}


def test_head_lr_sets_the_head_alone():
    model = tiny_bert()
    groups = by_name(model, build_param_groups(model, None, LR, 0.01, layer_lr_decay=0.5, head_lr=5e-3))
    for name, g in groups.items():
        assert g["lr"] == pytest.approx(bert_lr(name, head=5e-3), rel=1e-12), name
    without_decay = by_name(model, build_param_groups(model, None, LR, 0.01, head_lr=5e-3))
    assert {n: g["lr"] for n, g in without_decay.items()} == {n: 5e-3 if n.startswith(("bert.pooler.", "classifier.")) else LR
                                                              for n in without_decay}


def test_lr_overrides_win_and_the_first_matching_pattern_counts():
    model = tiny_bert()
    overrides = {r"layer\.1\.attention\.": 9e-4, r"layer\.1\.": 8e-4, r"^classifier\.": 7e-4}
    groups = by_name(model, build_param_groups(model, None, LR, 0.01, layer_lr_decay=0.5, head_lr=5e-3, lr_overrides=overrides))
    for name, g in groups.items():
        if ".layer.1.attention." in name:
            assert g["lr"] == 9e-4, name
        elif ".layer.1." in name:
            assert g["lr"] == 8e-4, name
        elif name.startswith("classifier."):
            assert g["lr"] == 7e-4, name  # beats head_lr
        else:
            assert g["lr"] == pytest.approx(bert_lr(name, head=5e-3), rel=1e-12), name


def test_no_weight_decay_on_biases_and_norms():
    model = tiny_bert()
    groups = by_name(model, build_param_groups(model, None, LR, 0.01, layer_lr_decay=0.5))
    for name, g in groups.items():
        assert g["weight_decay"] == (0.0 if name.endswith(".bias") or ".LayerNorm." in name else 0.01), name
    llama = tiny_llama()
    groups = by_name(llama, build_param_groups(llama, None, LR, 0.01, layer_lr_decay=0.5))
    for name, g in groups.items():
        assert g["weight_decay"] == (0.0 if "norm" in name else 0.01), name
    assert groups["model.layers.0.input_layernorm.weight"]["weight_decay"] == 0.0
    assert groups["model.layers.0.self_attn.q_proj.weight"]["weight_decay"] == 0.01


def test_llama_final_norm_and_head_get_the_full_lr():
    model = tiny_llama()
    groups = by_name(model, build_param_groups(model, None, LR, 0.0, layer_lr_decay=0.5, head_lr=2e-3))
    assert groups["model.norm.weight"]["lr"] == LR
    assert groups["score.weight"]["lr"] == 2e-3
    assert groups["model.embed_tokens.weight"]["lr"] == pytest.approx(EMBEDDINGS_LR)
    for i in range(4):
        assert groups[f"model.layers.{i}.mlp.down_proj.weight"]["lr"] == pytest.approx(LAYER_LR[i]), i


def test_frozen_parameters_stay_out_unless_passed_explicitly():
    model = tiny_bert()
    for p in model.bert.embeddings.parameters():
        p.requires_grad_(False)
    groups = by_name(model, build_param_groups(model, None, LR, 0.01, layer_lr_decay=0.5))
    assert not any(n.startswith("bert.embeddings.") for n in groups)
    assert len(groups) == sum(p.requires_grad for p in model.parameters())
    everything = by_name(model, build_param_groups(model, list(model.parameters()), LR, 0.01, layer_lr_decay=0.5))
    assert len(everything) == sum(1 for _ in model.parameters())
    assert everything["bert.embeddings.word_embeddings.weight"]["lr"] == pytest.approx(EMBEDDINGS_LR)


def test_lr_table_lists_each_group_once_with_its_parameter_count():
    model = tiny_bert()
    table = lr_table(build_param_groups(model, None, LR, 0.01, layer_lr_decay=0.5))
    rows = {line.split()[0] + (" " + line.split()[1] if line.split()[0] == "layer" else ""): line for line in table.splitlines()}
    assert list(rows) == ["embeddings", "layer 0", "layer 1", "layer 2", "layer 3", "head"]
    layer = sum(p.numel() for p in model.bert.encoder.layer[0].parameters())
    assert f"lr=0.000125  params={layer:,}" in rows["layer 0"]


# Expected LR factor at steps 0, 2, 3, 8, 13, 18, 22 of 23 with 3 warmup steps (20 decay steps):
# warmup (step + 1) / 4; then progress p = (step − 3) / 20: linear 1 − p, cosine (1 + cos πp) / 2,
# two hard-restart cycles (1 + cos(π · (2p mod 1))) / 2.
CHECKPOINTS = (0, 2, 3, 8, 13, 18, 22)
EXPECTED = {
    "linear": (0.25, 0.75, 1.0, 0.75, 0.5, 0.25, 0.05),
    "cosine": (0.25, 0.75, 1.0, 0.8535534, 0.5, 0.1464466, 0.0061558),
    "cosine_restarts": (0.25, 0.75, 1.0, 0.5, 1.0, 0.5, 0.0244717),
    "constant": (0.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0),
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_the_schedule_scales_every_group_by_one_factor(kind):
    model = tiny_bert()
    groups = build_param_groups(model, None, LR, 0.01, layer_lr_decay=0.5, head_lr=4e-3)
    initial = [g["lr"] for g in groups]
    optimizer = build_optimizer(groups, LR)
    scheduler = build_scheduler(optimizer, kind, warmup=3, total_steps=23, num_cycles=2)
    assert len(set(initial)) == 6  # head, 4 layers, embeddings: six different LRs to keep apart
    seen = {}
    for step in range(23):
        factors = [g["lr"] / lr0 for g, lr0 in zip(optimizer.param_groups, initial)]
        assert max(factors) - min(factors) < 1e-12, f"step {step}: ratios between groups changed"
        seen[step] = factors[0]
        optimizer.step()
        scheduler.step()
    assert [seen[s] for s in CHECKPOINTS] == pytest.approx(EXPECTED[kind], abs=1e-6)


def test_cosine_with_restarts_goes_back_up_at_each_cycle():
    model = tiny_bert()
    optimizer = build_optimizer(build_param_groups(model, None, LR, 0.0), LR)
    scheduler = build_scheduler(optimizer, "cosine_restarts", warmup=0, total_steps=30, num_cycles=3)
    lrs = []
    for _ in range(30):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert [i for i in range(1, 30) if lrs[i] > lrs[i - 1]] == [10, 20]  # restarts after 10 and 20 steps
    assert lrs[0] == lrs[10] == lrs[20] == LR
    assert lrs[5] == pytest.approx(LR * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_warmup_steps_win_over_the_ratio():
    assert warmup_steps(100, 0.06, None) == 6
    assert warmup_steps(101, 0.06, None) == 7  # rounded up
    assert warmup_steps(100, 0.06, 10) == 10
