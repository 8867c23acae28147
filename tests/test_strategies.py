"""The parameter selector: every registered method on a tiny BERT and a tiny Llama.

The matrix is parametrized over the registry itself, so a newly registered method is trained,
checked and saved here without a new test. For the methods listed in EXPECTED the trainable
set is checked exactly; for any other one, at least that the task head learns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from weitiao.config import StrategyConfig
from weitiao.errors import UserError
from weitiao.strategies import STRATEGIES, apply_strategy, get_strategy, load_all, register
from weitiao.strategies.lr_groups import build_param_groups
from weitiao.tasks.classification import build_model, build_model_from_run
from weitiao.train.optim import build_scheduler
from weitiao.train.recipe import merge_adapter, save_adapter, save_model

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning")  # peft, on LN tuning's norms

LABELS = ["neg", "neu", "pos"]
VOCAB = 1000
LR, HEAD_LR, DECAY = 1e-2, 3e-2, 0.5
# lr · 0.5^(4 − (i + 1)) for layer i of 4; embeddings lr · 0.5^4; head HEAD_LR; anything else lr.
LAYER_LR = {0: 1.25e-3, 1: 2.5e-3, 2: 5e-3, 3: 1e-2}
EMBEDDINGS_LR = 6.25e-4


@dataclass
class Arch:
    head: tuple[str, ...]
    embeddings: tuple[str, ...]
    layers: str  # the stack's prefix, e.g. "bert.encoder.layer."
    norm: re.Pattern  # parameters of normalization modules


ARCHS = {
    "bert": Arch(("bert.pooler.", "classifier."), ("bert.embeddings.",), "bert.encoder.layer.", re.compile(r"LayerNorm\.")),
    "llama": Arch(("score.",), ("model.embed_tokens.",), "model.layers.", re.compile(r"(layernorm|^model\.norm)\.")),
}


def base_model(arch: str):
    """A tiny pretrained encoder without head: 4 layers, hidden 32, 2 heads, vocabulary 1000."""
    if arch == "bert":
        from transformers import BertConfig, BertModel

        return BertModel(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                    intermediate_size=64, max_position_embeddings=64))
    from transformers import LlamaConfig, LlamaModel

    return LlamaModel(LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                  num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64, pad_token_id=0))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two cores shared with other test runs: one thread is several times faster for models this small."""
    from weitiao.train.recipe import quiet_hf

    quiet_hf()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, str]:
    """Each tiny encoder saved as a Hugging Face folder, the way a pretrained model arrives."""
    root = tmp_path_factory.mktemp("bases")
    folders = {}
    for arch in ARCHS:
        torch.manual_seed(0)
        base_model(arch).save_pretrained(root / arch)
        folders[arch] = str(root / arch)
    return folders


class NoTokenizer:
    """save_model and save_adapter also save the tokenizer; these tests feed token ids directly."""

    def save_pretrained(self, folder) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)


def spec_for(method: str, **extra) -> StrategyConfig:
    """The method with small settings for the options it reads (layers: 2)."""
    options = STRATEGIES[method].options
    small = {"layers": 2, "num_virtual_tokens": 4, "adapter_size": 8, "r": 4}
    return StrategyConfig(method=method, **{k: v for k, v in small.items() if k in options}, **extra)


def input_ids(seed: int = 0) -> torch.Tensor:
    # Token 0 is Llama's pad token: the classifier reads the last non-pad token.
    return torch.randint(1, VOCAB, (4, 9), generator=torch.Generator().manual_seed(seed))


TARGETS = torch.tensor([0, 1, 2, 1])


def plain(name: str, selection) -> str:
    """The parameter's name in the plain transformers model (peft adds prefixes and copies)."""
    if selection.peft:
        prompt = selection.model.peft_config["default"].is_prompt_learning
        name = name.removeprefix("base_model." if prompt else "base_model.model.")
    return name.replace(".modules_to_save.default", "").replace(".original_module", "")


def layer_of(name: str, arch: Arch) -> int | None:
    match = re.match(re.escape(arch.layers) + r"(\d+)\.", name)
    return int(match.group(1)) if match else None


PEFT_MARKERS = {
    "lora": ("lora_A.", "lora_B."),
    "dora": ("lora_A.", "lora_B.", "lora_magnitude_vector."),
    "ia3": ("ia3_l.",),
    "ln_tuning": ("ln_tuning_layers.",),
    "prefix": ("prompt_encoder.",),
    "prompt": ("prompt_encoder.",),
    "ptuning": ("prompt_encoder.",),
}


def expected_trainable(method: str, name: str, p: str, arch: Arch) -> bool | None:
    """Whether parameter `name` (plain name `p`) should learn right after selection; None: a method not listed here."""
    head, emb, i = p.startswith(arch.head), p.startswith(arch.embeddings), layer_of(p, arch)
    rest = not head and not emb and i is None  # Llama's final norm, after the stack
    if method in PEFT_MARKERS:  # the method's own weights and the head copies (modules_to_save)
        return any(m in name for m in PEFT_MARKERS[method]) or ".modules_to_save." in name
    return {
        "full": True,
        "head_only": head,
        "freeze_bottom": not emb and not (i is not None and i < 2),
        "train_top": head or (i is not None and i >= 2) or rest,
        "gradual_unfreeze": head or rest,  # stage 0 of ULMFiT; the later stages: test_gradual_unfreezing_*
        "adapter": ".adapter." in name or head or bool(arch.norm.search(p)),
    }.get(method)


def expected_lr(p: str, arch: Arch) -> float:
    if p.startswith(arch.head):
        return HEAD_LR
    i = layer_of(p, arch)
    if i is not None:
        return LAYER_LR[i]
    return EMBEDDINGS_LR if p.startswith(arch.embeddings) else LR


def select_and_train(bases, method: str, arch: str, steps: int = 3):
    """Build the classifier from the saved base, apply `method`, train `steps` AdamW steps.

    Returns:
        (selection, groups, before: name -> tensor at the start, first: name -> (tensor
        after step 1, gradient of step 1)).
    """
    torch.manual_seed(1)
    model, _ = build_model(bases[arch], LABELS, False)
    selection = apply_strategy(model, spec_for(method))
    model = selection.model
    groups = build_param_groups(model, selection.all_trainable_later or None, LR, 0.0, layer_lr_decay=DECAY, head_lr=HEAD_LR)
    optimizer = torch.optim.AdamW(groups, lr=LR)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    first = {}
    for step in range(steps):
        loss = torch.nn.functional.cross_entropy(model(input_ids=input_ids()).logits, TARGETS)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step == 0:
            first = {n: (p.detach().clone(), grads.get(n)) for n, p in model.named_parameters()}
    return selection, groups, before, first


MATRIX = [(method, arch) for method in load_all() for arch in ARCHS]


@pytest.mark.parametrize("method, arch", MATRIX)
def test_method_trains_what_it_selects(bases, method, arch):
    selection, groups, before, first = select_and_train(bases, method, arch)
    a, model = ARCHS[arch], selection.model
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}

    # (a) the trainable set is the method's
    if expected_trainable(method, "", "", a) is not None:
        expected = {n for n in params if expected_trainable(method, n, plain(n, selection), a)}
        assert trainable == expected, f"extra: {sorted(trainable - expected)[:5]}, missing: {sorted(expected - trainable)[:5]}"
    head_params = {n for n in before if plain(n, selection).startswith(a.head) and ".original_module." not in n}
    assert head_params and head_params <= trainable, "the task head must learn with every method"
    if selection.peft:  # the head copies are exactly the head's parameters; the originals stay frozen
        saved = {plain(n, selection) for n in trainable if ".modules_to_save." in n}
        assert saved == {plain(n, selection) for n in params if plain(n, selection).startswith(a.head)}
        assert not any(params[n].requires_grad for n in params if ".original_module." in n)
    markers = {**PEFT_MARKERS, "adapter": (".adapter.",)}.get(method)
    if markers and method not in ("prefix", "prompt", "ptuning"):  # virtual tokens sit before the stack
        own = [n for n in trainable if any(m in n for m in markers)]
        assert {layer_of(plain(n, selection), a) for n in own} - {None} == {0, 1, 2, 3}, "the method reaches every layer"

    # (b) frozen weights are bitwise unchanged, every trainable one moved
    for n, p in params.items():
        if n in trainable:
            assert not torch.equal(p, before[n]), f"{n} is trainable but did not change"
        else:
            assert torch.equal(p, before[n]), f"{n} is frozen but changed"

    # (c) the groups hold the parameters the optimizer should see, at the expected LRs ...
    in_groups = [id(p) for g in groups for p in g["params"]]
    assert len(in_groups) == len(set(in_groups))
    optimized = selection.all_trainable_later or [params[n] for n in trainable]
    wanted = {id(p) for p in optimized}
    assert set(in_groups) == wanted
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    for n, p in params.items():
        if id(p) in lr_of:
            assert lr_of[id(p)] == pytest.approx(expected_lr(plain(n, selection), a), rel=1e-12), n
    # ... and the first AdamW step moved each element by lr · g / (|g| + eps): the LR took effect
    for n in trainable:
        after, grad = first[n]
        step = torch.zeros_like(after) if grad is None else -expected_lr(plain(n, selection), a) * grad / (grad.abs() + 1e-8)
        torch.testing.assert_close(after - before[n], step, rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("method, arch", MATRIX)
def test_saved_model_predicts_like_the_trained_one(bases, tmp_path, method, arch):
    selection, _, _, _ = select_and_train(bases, method, arch, steps=2)
    model = selection.model.eval()
    with torch.no_grad():
        trained = model(input_ids=input_ids(1)).logits
    if selection.peft:
        save_adapter(model, NoTokenizer(), tmp_path / "adapter")
        merge_adapter(model, tmp_path, NoTokenizer())
    else:
        save_model(model, NoTokenizer(), tmp_path / "model")
    reloaded = build_model_from_run(tmp_path / "model").eval()
    with torch.no_grad():
        again = reloaded(input_ids=input_ids(1)).logits
    # merging adds the low-rank product into the weights: float rounding, nothing more
    assert (again - trained).abs().max().item() < (1e-4 if selection.peft else 1e-6)
    assert reloaded.config.id2label == dict(enumerate(LABELS))


def test_lora_adapter_and_merged_model_load_with_plain_libraries(bases, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(1)
    model, new = build_model(bases["bert"], LABELS, False)
    assert new == {"classifier.weight", "classifier.bias"}
    fresh_head = model.classifier.weight.detach().clone()
    selection = apply_strategy(model, spec_for("lora"))
    peft_model = selection.model
    optimizer = torch.optim.AdamW(build_param_groups(peft_model, None, LR, 0.0), lr=LR)
    for _ in range(3):
        torch.nn.functional.cross_entropy(peft_model(input_ids=input_ids()).logits, TARGETS).backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.eval()
    trained_head = peft_model.base_model.model.classifier.modules_to_save["default"].weight.detach().clone()
    assert (trained_head - fresh_head).abs().max() > 1e-3
    with torch.no_grad():
        unmerged = peft_model(input_ids=input_ids(1)).logits

    save_adapter(peft_model, NoTokenizer(), tmp_path / "adapter")
    merge_adapter(peft_model, tmp_path, NoTokenizer())

    torch.manual_seed(2)  # another fresh head: the saved one must replace it
    base, _ = build_model(bases["bert"], LABELS, False)
    adapter = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    merged = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "model")).eval()
    with torch.no_grad():
        from_adapter = adapter(input_ids=input_ids(1)).logits
        from_merged = merged(input_ids=input_ids(1)).logits
    assert (from_adapter - unmerged).abs().max().item() < 1e-6
    assert (from_merged - unmerged).abs().max().item() < 1e-4
    torch.testing.assert_close(adapter.base_model.model.classifier.modules_to_save["default"].weight, trained_head)
    torch.testing.assert_close(merged.classifier.weight, trained_head)
    assert not any("lora_" in n or "modules_to_save" in n for n in merged.state_dict())
    pristine, _ = build_model(bases["bert"], LABELS, False)
    query = "bert.encoder.layer.0.attention.self.query.weight"  # the LoRA update is inside the merged weight
    assert (merged.state_dict()[query] - pristine.state_dict()[query]).abs().max() > 1e-5


def tiny_bert_classifier():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                                    intermediate_size=64, max_position_embeddings=64, num_labels=3))


def stage_names(model, stage: int) -> set[str]:
    """ULMFiT stage s of a 4-layer BERT: the head, then layers 3, 2, 1, 0, then the embeddings."""
    bottom = 4 - stage
    return {n for n, _ in model.named_parameters()
            if n.startswith(("bert.pooler.", "classifier.")) or (stage >= 5)
            or (n.startswith("bert.encoder.layer.") and int(n.split(".")[3]) >= bottom)}


def test_gradual_unfreezing_follows_the_schedule_with_the_scheduled_lr():
    model = tiny_bert_classifier()
    selection = apply_strategy(model, StrategyConfig(method="gradual_unfreeze", unfreeze_unit="steps", unfreeze_every=2))
    params = dict(model.named_parameters())
    groups = build_param_groups(model, selection.all_trainable_later, 1e-2, 0.01, layer_lr_decay=0.8)
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in params.values()}  # all in from the start
    optimizer = torch.optim.AdamW(groups, lr=1e-2)
    scheduler = build_scheduler(optimizer, "linear", warmup=2, total_steps=12)
    # linear warmup (step + 1) / 3, then 1 - (step - 2) / 10
    factors = [1 / 3, 2 / 3, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    start = {n: p.detach().clone() for n, p in params.items()}
    trainable_before: set[str] = set()
    for step in range(12):
        changed = selection.on_progress(0, step)
        trainable = {n for n, p in params.items() if p.requires_grad}
        assert trainable == stage_names(model, step // 2), f"step {step}"
        assert changed == (step in (2, 4, 6, 8, 10)) and trainable_before <= trainable
        new = trainable - trainable_before
        for n in new:  # frozen until now: untouched since the start
            assert torch.equal(params[n], start[n]), n
        for g in optimizer.param_groups:  # every group at its own LR times one shared factor
            assert g["lr"] == pytest.approx(g["initial_lr"] * factors[step], rel=1e-12)
        lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}

        before = {n: p.detach().clone() for n, p in params.items()}
        torch.nn.functional.cross_entropy(model(input_ids=input_ids(step)).logits, TARGETS).backward()
        grads = {n: p.grad.clone() for n, p in params.items() if p.grad is not None}
        assert set(grads) == trainable
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        for n, p in params.items():
            if n not in trainable:
                assert torch.equal(p, before[n]), f"{n} frozen at step {step} but changed"
            elif n in new:  # its first AdamW step, at the scheduled LR of its group
                lr, wd = lr_of[id(p)]
                expected = before[n] * (1 - lr * wd) - lr * grads[n] / (grads[n].abs() + 1e-8)
                torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7, msg=f"{n} at step {step}")
                assert not torch.equal(p, before[n])
        trainable_before = trainable
    assert trainable_before == set(params)


def test_gradual_unfreezing_keeps_include_exclude_and_frozen_embeddings_at_every_stage():
    model = tiny_bert_classifier()
    spec = StrategyConfig(method="gradual_unfreeze", unfreeze_unit="steps", unfreeze_every=1, freeze_embeddings=True,
                          include=[r"layer\.0\.attention\.self\.query\."], exclude=[r"layer\.3\.output\.dense\."])
    selection = apply_strategy(model, spec)
    for step in range(7):
        selection.on_progress(0, step)
        grad = {n: p.requires_grad for n, p in model.named_parameters()}
        assert grad["bert.encoder.layer.0.attention.self.query.weight"], step
        assert not grad["bert.encoder.layer.3.output.dense.weight"], step
        assert not any(v for n, v in grad.items() if n.startswith("bert.embeddings.")), step
    assert grad["bert.encoder.layer.0.attention.self.key.weight"]  # the schedule itself went on


def test_layer_selectors_refuse_a_missing_or_too_large_layer_count():
    for method in ("freeze_bottom", "train_top"):
        for layers in (None, 5):
            with pytest.raises(UserError) as info:
                apply_strategy(tiny_bert_classifier(), StrategyConfig(method=method, layers=layers))
            assert info.value.field == "strategy.layers"
            assert f"needs a layer count 0..4, got {layers}" in info.value.problem


def test_registering_a_name_twice_is_refused():
    load_all()
    original = STRATEGIES["full"]
    with pytest.raises(ValueError, match="strategy 'full' is registered twice"):
        register("full")(lambda model, spec: None)
    assert STRATEGIES["full"] is original


def test_a_newly_registered_method_is_found_with_its_options():
    load_all()
    try:
        register("test_probe_only", options=("layers",))(lambda model, spec: None)
        assert get_strategy(StrategyConfig(method="test_probe_only", layers=1)) is STRATEGIES["test_probe_only"]
        with pytest.raises(UserError) as info:
            get_strategy(StrategyConfig(method="full", layers=1))
        assert "test_probe_only" in info.value.fix  # the methods that do use the option are named
    finally:
        STRATEGIES.pop("test_probe_only", None)


@pytest.mark.parametrize("method, hint", [
    ("lorra", "did you mean 'lora'?"),
    ("head-only", "did you mean 'head_only'?"),
    ("zzzz", f"use one of {', '.join(sorted(load_all()))}"),
])
def test_an_unknown_method_is_a_user_error_with_a_suggestion(method, hint):
    with pytest.raises(UserError) as info:
        get_strategy(StrategyConfig(method=method))
    assert info.value.field == "strategy.method"
    assert info.value.problem == f"unknown strategy '{method}'"
    assert info.value.fix == hint


@pytest.mark.parametrize("method, option, users", [
    ("full", {"r": 4}, "dora, lora"),
    ("head_only", {"layers": 2}, "freeze_bottom, train_top"),
    ("lora", {"adapter_size": 16}, "adapter"),
    ("freeze_bottom", {"layers": 2, "unfreeze_every": 3}, "gradual_unfreeze"),
])
def test_an_option_the_method_does_not_use_is_refused(method, option, users):
    key = list(option)[-1]
    with pytest.raises(UserError) as info:
        get_strategy(StrategyConfig(method=method, **option))
    assert info.value.field == f"strategy.{key}"
    assert info.value.problem == f"is not used by method '{method}'"
    assert info.value.fix == f"remove it, or use it with {users}"


def test_common_options_are_accepted_by_every_method():
    for method in load_all():
        get_strategy(StrategyConfig(method=method, layer_lr_decay=0.9, head_lr=1e-3, l2sp=0.1, label_smoothing=0.1))
