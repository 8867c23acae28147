"""training.prune_last_layer: the last layer computes only the token the head reads, and nothing changes.

The same logits and the same gradients as the whole layer, for every registered strategy, for each
architecture it applies to (and none where it does not), under gradient checkpointing, and in real
runs step for step, cached or not.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import minilm_path, sst2_slice, tiny_bert, train_tiny

from weitiao.models.last_layer import prune_last_layer, restore_last_layer
from weitiao.models.layers import find_layer_stack, unwrap
from weitiao.strategies import apply_strategy, load_all
from weitiao.tasks.classification import build_model

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning")  # peft, on LN tuning's norms

NO_DROPOUT = {"hidden": 0.0, "attention": 0.0, "classifier": 0.0}


def padded_batch(vocab: int = 1000, lengths=(9, 3, 6, 1)) -> dict:
    """Token ids of different lengths, right-padded, with their attention mask."""
    g = torch.Generator().manual_seed(0)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(5, vocab, (n,), generator=g)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


def last_layer_width(model, batch: dict) -> int:
    """How many positions the last layer returned on this batch."""
    seen = []
    layer = find_layer_stack(unwrap(model))[1][-1]
    handle = layer.register_forward_hook(lambda m, a, out: seen.append((out[0] if isinstance(out, tuple) else out).shape[1]))
    with torch.no_grad():
        model(**batch)
    handle.remove()
    return seen[0]


def logits_and_grads(model, batch: dict, targets: torch.Tensor):
    model.zero_grad(set_to_none=True)
    logits = model(**batch).logits
    torch.nn.functional.cross_entropy(logits, targets).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a, b, tol: float) -> None:
    (la, ga), (lb, gb) = a, b
    assert (la - lb).abs().max().item() < tol
    assert ga.keys() == gb.keys() and ga
    for n in ga:
        scale = max(ga[n].abs().max().item(), 1e-3)
        assert (ga[n] - gb[n]).abs().max().item() / scale < tol, n


@pytest.fixture(scope="module")
def bert4(tmp_path_factory):
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("bert4")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("method", load_all())
def test_every_strategy_gets_the_same_logits_and_gradients(bert4, method):
    from weitiao.config import StrategyConfig
    from weitiao.strategies import STRATEGIES

    options = STRATEGIES[method].options
    small = {"layers": 2, "num_virtual_tokens": 4, "adapter_size": 8, "r": 4, "lora_dropout": 0.0}
    torch.manual_seed(1)
    model, _ = build_model(bert4, ["a", "b", "c"], False, NO_DROPOUT, "eager")
    model = apply_strategy(model, StrategyConfig(method=method, **{k: v for k, v in small.items() if k in options})).model
    model.train()
    batch, targets = padded_batch(), torch.tensor([0, 1, 2, 1])
    whole = logits_and_grads(model, batch, targets)
    assert prune_last_layer(model)
    pruned = logits_and_grads(model, batch, targets)
    # prefix tuning hands every layer cached keys and values: the layer then runs whole
    assert last_layer_width(model, batch) == (batch["input_ids"].shape[1] if method == "prefix" else 1)
    restore_last_layer(model)
    assert last_layer_width(model, batch) > 1
    assert_same(whole, pruned, 1e-5)


def encoder(arch: str):
    """A tiny randomly initialised encoder with a sequence-classification head, per architecture."""
    import transformers as tf

    small = dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=64, num_labels=3)
    configs = {
        "bert": tf.BertConfig, "roberta": tf.RobertaConfig, "xlm-roberta": tf.XLMRobertaConfig,
        "camembert": tf.CamembertConfig, "electra": lambda **kw: tf.ElectraConfig(embedding_size=16, **kw),
        "distilbert": lambda **kw: tf.DistilBertConfig(vocab_size=1000, dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=3),
        "albert": lambda **kw: tf.AlbertConfig(embedding_size=16, **kw),
    }
    torch.manual_seed(0)
    return tf.AutoModelForSequenceClassification.from_config(configs[arch](**small))


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", ["bert", "roberta", "xlm-roberta", "camembert", "electra"])
def test_bert_layout_architectures_are_pruned_exactly(arch, attention):
    model = encoder(arch)
    model.config._attn_implementation = attention
    model.train()
    for module in model.modules():  # dropout off: the same function, deterministic
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    batch, targets = padded_batch(lengths=(7, 2, 5)), torch.tensor([0, 2, 1])
    whole = logits_and_grads(model, batch, targets)
    assert prune_last_layer(model)
    assert last_layer_width(model, batch) == 1
    assert_same(whole, logits_and_grads(model, batch, targets), 1e-5)


@pytest.mark.parametrize("arch", ["distilbert", "albert"])
def test_other_layouts_are_left_whole(arch):
    model = encoder(arch).eval()
    batch = padded_batch(lengths=(7, 2, 5))
    assert not prune_last_layer(model)
    assert last_layer_width(model, batch) == 7


def test_pruned_layer_is_still_recomputed_under_gradient_checkpointing(bert4):
    from weitiao.train.recipe import enable_checkpointing

    torch.manual_seed(1)
    model, _ = build_model(bert4, ["a", "b"], False, NO_DROPOUT, "eager")
    batch, targets = padded_batch(), torch.tensor([0, 1, 1, 0])
    model.train()
    whole = logits_and_grads(model, batch, targets)
    enable_checkpointing(model)
    assert prune_last_layer(model)
    layer = find_layer_stack(model)[1][-1]
    calls = [0]
    layer.intermediate.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    checkpointed = logits_and_grads(model, batch, targets)
    assert calls[0] == 2  # forward, then again in backward
    assert_same(whole, checkpointed, 1e-5)


def test_minilm_logits_are_unchanged_on_real_sentences():
    from helpers import SST2
    from transformers import AutoTokenizer

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    sentences = [line.split("\t")[0] for line in SST2.joinpath("dev.tsv").read_text(encoding="utf-8").splitlines()[1:65]]
    batch = dict(tokenizer(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt"))
    torch.manual_seed(0)
    model, _ = build_model(path, ["negative", "positive"], False, None, "eager")
    model.eval()
    with torch.no_grad():
        whole = model(**batch).logits
        assert prune_last_layer(model)
        pruned = model(**batch).logits
    assert (whole - pruned).abs().max().item() < 1e-5


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prune")
    return tmp, tiny_bert(tmp / "bert", layers=2), *sst2_slice(tmp, 128, 32)


@pytest.mark.parametrize("strategy", ["full", "lora", "head_only", {"method": "train_top", "layers": 1}])
def test_runs_train_the_same_step_for_step(base, strategy):
    """Real CLI runs (the cache on where the strategy allows it) with and without the pruned layer."""
    dropout = {"dropout": NO_DROPOUT} | ({"lora_dropout": 0.0} if strategy == "lora" else {})
    spec = ({"method": strategy} if isinstance(strategy, str) else strategy) | dropout
    losses, reports = [], []
    for prune in (True, False):
        run, records = train_tiny(base, f"prune-{prune}", spec, prune_last_layer=prune)
        losses.append([r["loss"] for r in records if "loss" in r])
        reports.append(json.loads((run / "metrics.json").read_text()))
    assert len(losses[0]) == len(losses[1]) == 8
    assert max(abs(a - b) for a, b in zip(*losses)) < 1e-5
    assert losses[0][-1] != losses[0][0]
    assert [r["train"]["pruned_last_layer"] for r in reports] == [True, False]
    assert abs(reports[0]["validation"]["loss"] - reports[1]["validation"]["loss"]) < 1e-5
    assert (reports[0]["train"]["feature_cache"] is not None) == (spec["method"] in ("head_only", "train_top"))


def test_predicting_from_a_run_uses_the_pruned_layer_and_gives_the_same_logits(base):
    from transformers import AutoTokenizer

    from weitiao.rundir.opening import open_run

    run, _ = train_tiny(base, "predict", "full")
    model = open_run(str(run)).model
    tokenizer = AutoTokenizer.from_pretrained(str(run / "model"))
    batch = dict(tokenizer(["a gripping , funny film", "dull", "it is neither good nor bad , just long"], padding=True, return_tensors="pt"))
    model.eval()
    assert last_layer_width(model, batch) == 1
    with torch.no_grad():
        pruned = model(**batch).logits
        restore_last_layer(model)
        whole = model(**batch).logits
    assert (pruned - whole).abs().max().item() < 1e-5
