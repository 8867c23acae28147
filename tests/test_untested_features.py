"""Features that had no test of their own, each through a real (tiny) run: early stopping, rsLoRA
scaling, top_p in generation, multi-label image classification, image augmentation during
training, packing and chat format for causal-LM SFT, and training.auto_batch_size.

Tiny models built from a config (a 2-layer BERT, a 2-layer ViT of 16x16 images, a 2-layer Llama
with its own byte-level BPE tokenizer) and synthetic data that they learn in a few steps. Where a
test reads what happens inside a run (weights at each evaluation, training batches, model inputs),
it wraps a weitiao function with monkeypatch and calls the real one."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from helpers import tiny_bert, tiny_llama, write_config
from test_tasks import classification_data


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def cli_train(tmp: Path, cfg: dict, name: str) -> Path:
    from weitiao.cli import main

    assert main(["train", str(write_config(tmp / f"{name}.yaml", cfg)), "--name", name, "--overwrite"]) == 0
    return tmp / "runs" / name


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("bert") / "model")


@pytest.fixture(scope="module")
def keyword_data(tmp_path_factory) -> dict:
    """The keyword sentiment of the task matrix: 64 training rows, 40 validation rows."""
    folder = tmp_path_factory.mktemp("keywords")
    return classification_data(folder, random.Random(0), n=64)["data"]


def bert_config(tmp: Path, bert: Path, data: dict, strategy, **training) -> dict:
    return {"version": 1, "model": str(bert), "data": data, "strategy": strategy,
            "training": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "log_every": 1, "progress": False, "warmup_ratio": 0.0, **training},
            "output": {"dir": str(tmp / "runs"), "tracking": "none"}}


# ---------------------------------------------------------------------------------------
# 1. Early stopping (training.patience)


def test_early_stopping_stops_after_patience_evaluations_and_keeps_the_best_model(tmp_path, bert, keyword_data, monkeypatch):
    """The validation accuracy is scripted (0.5, 0.7, 0.6, 0.65, 0.69, ...: best at the 2nd evaluation)
    on top of the real evaluation; the model is evaluated after every step. With patience 3 the run
    stops at the 5th evaluation (step 5 of 12 configured), mid-epoch, and model/ holds the weights of
    step 2, not those of the last step."""
    from safetensors.torch import load_file

    from weitiao.train.recipe import TaskSteps

    script = [0.5, 0.7, 0.6, 0.65, 0.69, 0.9, 0.95, 0.99] + [1.0] * 10
    seen: list[dict] = []  # per evaluation: the real metrics and the weights evaluated
    real = TaskSteps.validation_headline

    def scripted(self, m):
        out = real(self, m)
        seen.append({"loss": out["loss"], "state": {k: v.detach().cpu().clone() for k, v in self.accelerator.unwrap_model(m).state_dict().items()}})
        return {**out, "accuracy": script[len(seen) - 1]}

    monkeypatch.setattr(TaskSteps, "validation_headline", scripted)
    cfg = bert_config(tmp_path, bert, keyword_data, "full", epochs=3, eval_every=1, patience=3, metric="accuracy")
    run = cli_train(tmp_path, cfg, "early")

    evals = [r for r in records(run) if "eval" in r]
    assert [e["step"] for e in evals] == [1, 2, 3, 4, 5]  # 64 rows / 16 = 4 steps an epoch, 3 epochs = 12 configured
    assert [e["eval"]["accuracy"] for e in evals] == script[:5] and [e["best"] for e in evals] == [0.5, 0.7, 0.7, 0.7, 0.7]
    train = json.loads((run / "metrics.json").read_text())["train"]
    assert train["steps"] == 5 and train["stopped_early"] is True
    assert train["best_step"] == 2 and train["best_accuracy"] == 0.7
    assert train["epochs"] == pytest.approx(5 / 4)

    saved = load_file(run / "model" / "model.safetensors")
    shared = [k for k in saved if k in seen[1]["state"]]
    assert len(shared) >= 20 and "classifier.weight" in shared
    assert all(torch.equal(saved[k], seen[1]["state"][k]) for k in shared)  # the weights of step 2 ...
    assert not all(torch.equal(saved[k], seen[4]["state"][k]) for k in shared)  # ... not those of the last step
    # The final validation scores are those of the kept model (evaluation 2), not of the last one.
    assert json.loads((run / "metrics.json").read_text())["validation"]["loss"] == pytest.approx(seen[1]["loss"])


# ---------------------------------------------------------------------------------------
# 2. rsLoRA (strategy.rslora)


def test_rslora_scales_the_adapter_by_alpha_over_sqrt_r_and_trains(tmp_path, bert, keyword_data, monkeypatch):
    """r 4, alpha 8: every LoRA layer of the training model has scaling 8 / sqrt(4) = 4 (not 8 / 4 = 2);
    the saved adapter says use_rslora; the adapter trained (B is no longer zero) and the merged model's
    weights are W0 + 4 * B @ A."""
    from safetensors.torch import load_file

    import weitiao.train.recipe as recipe

    captured = {}
    real_prepare = recipe.prepare

    def spy(cfg):
        setup = real_prepare(cfg)  # read before training: the run ends by merging the adapter into the model
        captured["scalings"] = [m.scaling["default"] for m in setup.selection.model.modules() if hasattr(m, "lora_A") and hasattr(m, "scaling")]
        return setup

    monkeypatch.setattr(recipe, "prepare", spy)
    strategy = {"method": "lora", "r": 4, "alpha": 8, "rslora": True, "target_modules": ["query", "value"], "lora_dropout": 0.0}
    run = cli_train(tmp_path, bert_config(tmp_path, bert, keyword_data, strategy, epochs=2), "rslora")

    scalings = captured["scalings"]
    assert len(scalings) == 4  # query and value of 2 layers
    assert all(s == pytest.approx(8 / math.sqrt(4)) for s in scalings), scalings

    adapter_cfg = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["use_rslora"] is True and adapter_cfg["r"] == 4 and adapter_cfg["lora_alpha"] == 8
    assert json.loads((run / "metrics.json").read_text())["train"]["steps"] == 8

    adapter = load_file(run / "adapter" / "adapter_model.safetensors")
    a_key = next(k for k in adapter if k.endswith("layer.0.attention.self.query.lora_A.weight"))
    A, B = adapter[a_key], adapter[a_key.replace("lora_A", "lora_B")]
    assert B.abs().max() > 1e-4  # LoRA's B starts at zero: it learned
    base = load_file(bert / "model.safetensors")
    w0 = base[next(k for k in base if k.endswith("layer.0.attention.self.query.weight"))]
    merged = load_file(run / "model" / "model.safetensors")
    w = merged[next(k for k in merged if k.endswith("layer.0.attention.self.query.weight"))]
    delta = (B.double() @ A.double()).float()
    assert torch.allclose(w, w0 + 4.0 * delta, atol=1e-6)
    assert not torch.allclose(w, w0 + 2.0 * delta, atol=1e-6)  # plain LoRA's alpha / r


# ---------------------------------------------------------------------------------------
# Causal LM data: short conversations (chat records) on a tiny Llama

ASK = ["what", "colour", "is", "the", "sky", "grass", "snow", "tell", "me", "please", "about"]
ANSWERS = {"sky": "blue", "grass": "green", "snow": "white"}


def conversation(rng: random.Random) -> dict:
    messages = []
    for _ in range(rng.choice([1, 1, 2])):
        thing = rng.choice(sorted(ANSWERS))
        ask = " ".join(rng.sample(ASK[7:], rng.randint(0, 2)) + ["what", "colour", "is", "the", thing])
        messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": " ".join([ANSWERS[thing]] * rng.randint(1, 2))}]
    return {"messages": messages}


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory) -> dict:
    """64 distinct training conversations (one or two exchanges), 8 others for validation, up to 64 tokens each."""
    folder = tmp_path_factory.mktemp("chat")
    rng = random.Random(1)
    unique: dict[str, dict] = {}
    while len(unique) < 72:
        r = conversation(rng)
        unique.setdefault(json.dumps(r), r)
    rows = list(unique.values())
    train, dev = rows[:64], rows[64:]
    for name, part in (("train", train), ("dev", dev)):
        (folder / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in part) + "\n")
    texts = [" ".join(m["content"] for m in r["messages"]) for r in train] + ["user assistant system"]
    model = tiny_llama(folder / "llama", texts, layers=2)
    return {"model": model, "train": train, "dev": dev,
            "data": {"train": str(folder / "train.jsonl"), "validation": str(folder / "dev.jsonl"), "format": "chat", "max_length": 64}}


def lm_config(tmp: Path, chat_data: dict, task: dict, **training) -> dict:
    return {"version": 1, "model": str(chat_data["model"]), "task": {"type": "causal_lm", **task}, "data": chat_data["data"],
            "strategy": "full",
            "training": {"epochs": 2, "batch_size": 8, "lr": 5e-3, "log_every": 1, "progress": False, "warmup_ratio": 0.0, **training},
            "output": {"dir": str(tmp / "runs"), "tracking": "none"}}


# ---------------------------------------------------------------------------------------
# 3. top_p


def test_top_p_reaches_generation(tmp_path, chat_data):
    """At a high temperature (5), a tiny top_p leaves only the most likely token: the answers are the
    greedy ones; with top_p 1 they are not. Direct, through task.generate at every evaluation
    (generations.jsonl), and as `predict`'s default from the run's config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import weitiao
    from weitiao.tasks.common.generation import Sampling, generate, stop_ids
    from weitiao.tasks.causal_lm.lm_text import prompt_text

    users = [r["messages"][0]["content"] for r in chat_data["dev"][:4]]
    tok = AutoTokenizer.from_pretrained(chat_data["model"])
    model = AutoModelForCausalLM.from_pretrained(chat_data["model"])
    prompts = [tok(prompt_text(tok, (("user", u),)), add_special_tokens=False)["input_ids"] for u in users]
    stops = stop_ids(tok, model, "<|im_end|>")
    greedy = generate(model, tok, prompts, Sampling(8, 0.0), stops, "cpu")
    assert generate(model, tok, prompts, Sampling(8, 5.0, 1e-6), stops, "cpu") == greedy
    assert generate(model, tok, prompts, Sampling(8, 5.0, 1.0), stops, "cpu") != greedy

    task = {"generate": {"samples": 4, "max_new_tokens": 8, "temperature": 5.0, "top_p": 1e-6}}
    run = cli_train(tmp_path, lm_config(tmp_path, chat_data, task, max_steps=1, epochs=1), "topp")
    gens = [json.loads(line) for line in (run / "generations.jsonl").read_text().splitlines()]
    trained = AutoModelForCausalLM.from_pretrained(run / "model")  # max_steps 1: the model that was evaluated
    asked = [tok(g["prompt"], add_special_tokens=False)["input_ids"] for g in gens]  # multi-turn prompts too
    assert len(gens) == 4 and [g["generation"] for g in gens] == generate(trained, tok, asked, Sampling(8, 0.0), stops, "cpu")

    loaded = weitiao.load(run)
    greedy = [r["generation"] for r in loaded.predict(users, temperature=0.0)]
    assert [r["generation"] for r in loaded.predict(users)] == greedy  # predict's defaults: the run's temperature 5, top_p 1e-6
    assert [r["generation"] for r in loaded.predict(users, top_p=1.0)] != greedy  # temperature 5 without the nucleus


# ---------------------------------------------------------------------------------------
# 6. packing and format: chat through `weitiao train`


def rendered_targets(tok, chat_data) -> dict[str, str]:
    """The chat template's text of each training conversation -> the text of its target tokens (every
    assistant turn through its end-of-turn)."""
    out = {}
    for r in chat_data["train"]:
        text = tok.apply_chat_template(r["messages"], tokenize=False)
        out[text] = "".join(m["content"] + "<|im_end|>\n" for m in r["messages"] if m["role"] == "assistant")
    return out


def train_batches_of(monkeypatch) -> list[dict]:
    from weitiao.train.recipe import TaskSteps

    batches = []
    real = TaskSteps.make_batch

    def spy(self, index):
        batch = real(self, index)
        batches.append({k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)})
        return batch

    monkeypatch.setattr(TaskSteps, "make_batch", spy)
    return batches


def segments(batch: dict, pad: int) -> list[list[tuple[list[int], list[int]]]]:
    """Per row: (token ids, labels) of each example in it (packed rows: split where the positions restart)."""
    rows = []
    for r in range(batch["input_ids"].shape[0]):
        ids, labels = batch["input_ids"][r].tolist(), batch["labels"][r].tolist()
        n = sum(1 for t in ids if t != pad)
        assert all(t == pad for t in ids[n:])  # right-padded, the pad token never in the text
        starts = [0] if "position_ids" not in batch else [i for i, p in enumerate(batch["position_ids"][r].tolist()[:n]) if p == 0]
        bounds = starts + [n]
        rows.append([(ids[a:b], labels[a:b]) for a, b in zip(bounds, bounds[1:])])
    return rows


def test_packing_and_chat_format_through_weitiao_train(tmp_path, chat_data, monkeypatch):
    """Chat records through the CLI, with and without task.packing. Every example is the chat
    template's rendering of a training conversation and its targets are exactly the assistant turns
    (through <|im_end|>); packing puts several examples in a row (positions restart), so fewer rows,
    fewer steps and more tokens per row, with the same targets; the loss falls."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chat_data["model"])
    pad, expected = tok.pad_token_id, rendered_targets(tok, chat_data)
    result = {}
    for packing in (False, True):
        batches = train_batches_of(monkeypatch)
        run = cli_train(tmp_path, lm_config(tmp_path, chat_data, {"packing": packing, "generate": {"samples": 2, "max_new_tokens": 4}}),
                        f"packing-{packing}")
        rows = [row for b in batches for row in segments(b, pad)]
        for row in rows:
            assert sum(len(ids) for ids, _ in row) <= 64
            for ids, labels in row:
                text = tok.decode(ids)
                assert text in expected, text  # the chat template's rendering of one conversation
                assert tok.decode([t for t in labels if t != -100]) == expected[text]  # assistant turns only
                assert all(lab in (-100, t) for lab, t in zip(labels, ids))
        steps = json.loads((run / "metrics.json").read_text())["train"]["steps"]
        losses = [r["loss"] for r in records(run) if "loss" in r and "step" in r]
        result[packing] = {"rows": rows, "steps": steps, "losses": losses, "run": run}
        assert json.loads((run / "model" / "config.json").read_text())["weitiao_prompts"] == "chat"

    plain, packed = result[False], result[True]
    assert plain["steps"] == 2 * math.ceil(64 / 8) and len(plain["rows"]) == 2 * 64  # 2 epochs of 64 conversations
    assert all(len(row) == 1 for row in plain["rows"])
    assert sum(len(row) for row in packed["rows"]) == 2 * 64  # every example trained once an epoch ...
    per_epoch = len(packed["rows"]) // 2
    assert per_epoch <= 0.6 * 64 and max(len(row) for row in packed["rows"]) >= 3  # ... in far fewer rows
    assert packed["steps"] == 2 * math.ceil(per_epoch / 8) and packed["steps"] <= 0.6 * plain["steps"]
    tokens = {k: sum(len(ids) for row in v["rows"] for ids, _ in row) / len(v["rows"]) for k, v in result.items()}
    assert tokens[True] > 1.6 * tokens[False]  # fuller rows
    targets = {k: sum(1 for row in v["rows"] for _, labels in row for t in labels if t != -100) for k, v in result.items()}
    assert targets[True] == targets[False]  # no target lost to packing (the first token of a turn is <|im_start|>)
    for v in result.values():
        first, last = sum(v["losses"][:2]) / 2, sum(v["losses"][-2:]) / 2
        assert last < 0.7 * first, v["losses"]


# ---------------------------------------------------------------------------------------
# Images: a tiny ViT of 16 x 16 images

COLOURS = ["red", "green", "blue"]


def tiny_vit(folder: Path) -> Path:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
             add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
    return folder


def colour_image(path: Path, channels: list[int], noise) -> None:
    import numpy as np
    from PIL import Image

    pixels = noise.integers(0, 60, (16, 16, 3), dtype=np.uint8)
    for c in channels:
        pixels[..., c] += 190
    Image.fromarray(pixels).save(path)


# 4. multi-label image classification


def test_multi_label_image_classification_trains_and_reports_multi_label_metrics(tmp_path):
    """Images whose labels are the colour channels that are bright (one to three of red, green, blue):
    a JSONL table of paths and label lists. The run's metrics are the multi-label ones (f1_micro picks
    the best model) and beat every constant label set by far."""
    import numpy as np
    from sklearn.metrics import f1_score

    noise, rng = np.random.default_rng(0), random.Random(0)
    (tmp_path / "img").mkdir()
    sets = [[c for c in range(3) if m & (1 << c)] for m in range(1, 8)]
    tables = {}
    for split, n in (("train", 84), ("dev", 42)):
        rows = []
        for i in range(n):
            channels = sets[i % 7] if split == "dev" else rng.choice(sets)
            colour_image(tmp_path / "img" / f"{split}{i}.png", channels, noise)
            rows.append({"image": f"img/{split}{i}.png", "label": [COLOURS[c] for c in channels]})
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        tables[split] = rows
    cfg = {"version": 1, "model": str(tiny_vit(tmp_path / "vit")), "task": {"type": "image_classification", "multi_label": True},
           "data": {"train": str(tmp_path / "train.jsonl"), "validation": str(tmp_path / "dev.jsonl")}, "strategy": "full",
           "training": {"epochs": 2, "batch_size": 16, "lr": 3e-3, "progress": False, "warmup_ratio": 0.0},
           "output": {"dir": str(tmp_path / "runs"), "tracking": "none"}}
    run = cli_train(tmp_path, cfg, "multilabel")
    metrics = json.loads((run / "metrics.json").read_text())
    v = metrics["validation"]
    assert {"f1_micro", "f1_macro", "subset_accuracy", "roc_auc"} <= set(v) and "accuracy" not in v and "confusion_matrix" not in v
    assert set(v["per_class"]) == set(COLOURS) and v["n"] == 42
    assert "best_f1_micro" in metrics["train"]

    y = np.array([[int(c in r["label"]) for c in COLOURS] for r in tables["dev"]])
    constant = max(f1_score(y, np.tile(np.array([int(c in s) for c in range(3)]), (len(y), 1)), average="micro", zero_division=0) for s in sets)
    assert constant < 0.75  # predicting every colour for every image: about 0.73
    assert v["f1_micro"] > 0.9 and v["roc_auc"] > 0.95 and v["subset_accuracy"] > 0.6, v

    import weitiao

    out = weitiao.load(run).predict([str(tmp_path / "img" / "dev6.png")])  # dev6: all three channels bright
    assert sorted(out[0]["label"]) == sorted(COLOURS), out


# 5. augmentation during training only


def test_augmentation_changes_what_the_model_sees_in_training_only(tmp_path, monkeypatch):
    """task.augment (color jitter, flips) in a run whose validation images are its training images: at
    every evaluation the model sees exactly the stored images (normalized), the same at each; in
    training it never sees one of them unchanged, and the augmenter runs once per training batch."""
    import numpy as np

    from weitiao.tasks.image_classification.augment import Augmenter
    from weitiao.tasks.image_classification import ImageClassification

    noise = np.random.default_rng(0)
    for label, channel in (("red", 0), ("blue", 2)):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(16):
            colour_image(tmp_path / "imgs" / label / f"{i}.png", [channel], noise)

    seen: list[tuple[bool, torch.Tensor]] = []
    real_build = ImageClassification.build

    def build(self, *args, **kwargs):
        model, new = real_build(self, *args, **kwargs)
        model.register_forward_pre_hook(lambda m, a, kw: seen.append((m.training, kw["pixel_values"].detach().cpu().clone())), with_kwargs=True)
        return model, new

    calls = []
    real_call = Augmenter.__call__
    monkeypatch.setattr(ImageClassification, "build", build)
    monkeypatch.setattr(Augmenter, "__call__", lambda self, x: calls.append(x.shape[0]) or real_call(self, x))

    cfg = {"version": 1, "model": str(tiny_vit(tmp_path / "vit")),
           "task": {"type": "image_classification", "augment": {"color_jitter": 0.4, "horizontal_flip": True, "vertical_flip": True}},
           "data": {"train": str(tmp_path / "imgs"), "validation": str(tmp_path / "imgs")}, "strategy": "full",
           "training": {"epochs": 2, "batch_size": 8, "lr": 1e-3, "progress": False}, "output": {"dir": str(tmp_path / "runs"), "tracking": "none"}}
    run = cli_train(tmp_path, cfg, "augment")

    train = [x for training, x in seen if training]
    evals = [x for training, x in seen if not training]
    assert sum(len(x) for x in train) == 2 * 32 and calls == [len(x) for x in train]  # every training batch, through the augmenter
    clean = {row.numpy().tobytes() for x in evals for row in x}
    assert sum(len(x) for x in evals) == 2 * 32 and len(clean) == 32  # two evaluations of the same 32 stored images
    assert not any(row.numpy().tobytes() in clean for x in train for row in x)  # no training image seen as stored
    assert json.loads((run / "metrics.json").read_text())["train"]["steps"] == 8


# ---------------------------------------------------------------------------------------
# 7. training.auto_batch_size through the Python API


class _FakeCuda(str):
    """A device string that reads "cpu" to torch but says cuda: auto_batch takes its GPU path on this CPU."""

    type = "cuda"


class _OnAGpu:
    def __init__(self, accelerator):
        self._acc = accelerator
        self.device = _FakeCuda("cpu")

    def __getattr__(self, name):
        return getattr(self._acc, name)


def test_auto_batch_size_through_the_python_api(tmp_path, bert, keyword_data, monkeypatch, capsys):
    """A "GPU" that holds 4 rows (the loss of a larger batch raises OutOfMemoryError): auto_batch_size
    tries 16, 8, then 4, and the run trains on micro-batches of 4 accumulated 4 at a time: the same
    4 optimizer steps of 16 rows as batch 16 would take. On the CPU it keeps the batch."""
    from types import SimpleNamespace

    import weitiao
    import weitiao.train.recipe as recipe
    from weitiao.config import TrainingConfig

    t = TrainingConfig(batch_size=16)
    assert recipe.auto_batch(None, None, [], t, SimpleNamespace(device=torch.device("cpu")), print) is t
    assert "auto_batch_size: not on a GPU, keeping training.batch_size" in capsys.readouterr().out

    sizes = []
    real_loss = recipe.TaskSteps.loss

    def loss(self, m, batch):
        sizes.append(len(batch["labels"]))
        if len(batch["labels"]) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated: 4 rows fit)")
        return real_loss(self, m, batch)

    real_auto = recipe.auto_batch
    monkeypatch.setattr(recipe.TaskSteps, "loss", loss)
    monkeypatch.setattr(recipe, "auto_batch", lambda model, steps, lengths, t, acc, say: real_auto(model, steps, lengths, t, _OnAGpu(acc), say))

    cfg = bert_config(tmp_path, bert, keyword_data, "full", auto_batch_size=True, epochs=3)
    run = weitiao.train(cfg, name="auto", overrides={"training.epochs": 1})
    assert "auto_batch_size: batch 16 does not fit; using 4 x 4 accumulation steps" in capsys.readouterr().out
    assert sizes[:3] == [16, 8, 4]  # the longest rows, halved until they fit
    assert sizes[3:] == [4] * (64 // 4)  # then every training micro-batch: 4 rows
    train = run.metrics["train"]
    assert train["steps"] == 4 and train["epochs"] == 1  # the effective batch is still 16: 4 optimizer steps of 64 rows
    steps = [r["step"] for r in records(run.path) if "loss" in r and "step" in r]
    assert steps == [1, 2, 3, 4]
