"""The task registry: every registered task x a representative set of strategies, on MiniLM and
small synthetic data (a keyword decides the label; names and cities are the entities).

Parametrized over the registry itself: a new task must add a small data set to TASK_DATA (the
test fails until it does), and is then trained, saved, reloaded and scored here. For each
pair: the training loss falls, model/ is written, and the reloaded run scores its validation
file exactly as training scored it (metrics.json).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import write_config

from weitiao.config import validate
from weitiao.tasks import TASKS, get_task, load_all, register_task

load_all()

# strategy -> (config, learning rate)
STRATEGIES = {"full": ("full", 1e-4), "head_only": ("head_only", 3e-3), "freeze_bottom": ({"freeze_bottom": 4}, 2e-4),
              "lora": ({"method": "lora", "r": 4, "target_modules": "all-linear"}, 1e-3), "adapter": ({"method": "adapter", "adapter_size": 8}, 1e-3)}
NAMES = ["alice", "bob", "carol", "dave", "erin", "frank"]
CITIES = ["paris", "london", "tokyo", "berlin", "madrid", "oslo"]
FILLER = ["the", "a", "we", "saw", "today", "and", "then", "went", "home", "it", "was", "in", "on"]


def classification_data(folder: Path, rng: random.Random, n: int = 160) -> dict:
    """Sentiment by a keyword among filler words: learnable by a tiny model in a few steps."""
    def rows(n):
        out = []
        for _ in range(n):
            label = rng.choice(["pos", "neg"])
            words = rng.sample(FILLER, 5) + [rng.choice(["great", "lovely", "superb"] if label == "pos" else ["awful", "dull", "bad"])]
            rng.shuffle(words)
            out.append(json.dumps({"text": " ".join(words), "label": label}))
        return out

    for split, k in (("train", n), ("dev", 40)):
        (folder / f"{split}.jsonl").write_text("\n".join(rows(k)) + "\n")
    return {"data": {"train": str(folder / "train.jsonl"), "validation": str(folder / "dev.jsonl"), "max_length": 32}}


def token_classification_data(folder: Path, rng: random.Random, n: int = 160) -> dict:
    """Person and location names among filler words, in CoNLL (IOB2)."""
    def sentence():
        words, tags = [], []
        for _ in range(rng.randint(4, 9)):
            r = rng.random()
            if r < 0.2:
                words += [rng.choice(NAMES), rng.choice(NAMES)]
                tags += ["B-person", "I-person"]
            elif r < 0.35:
                words.append(rng.choice(CITIES))
                tags.append("B-location")
            else:
                words.append(rng.choice(FILLER))
                tags.append("O")
        return "\n".join(f"{w}\t{t}" for w, t in zip(words, tags))

    for split, k in (("train", n), ("dev", 40)):
        (folder / f"{split}.conll").write_text("\n\n".join(sentence() for _ in range(k)) + "\n")
    return {"task": "token_classification", "data": {"train": str(folder / "train.conll"), "validation": str(folder / "dev.conll"), "max_length": 32}}


def image_classification_data(folder: Path, rng: random.Random) -> dict:
    """Reddish against bluish noisy squares (an ImageFolder of PNGs), on a tiny ViT built from a config."""
    import numpy as np
    from PIL import Image
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    noise = np.random.default_rng(rng.randrange(2**32))
    for split, n in (("train", 80), ("dev", 20)):
        for label, channel in (("red", 0), ("blue", 2)):
            (folder / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = noise.integers(0, 60, (16, 16, 3), dtype=np.uint8)
                pixels[..., channel] += 190
                Image.fromarray(pixels).save(folder / split / label / f"{i}.png")
    model = folder / "vit"
    ViTModel(ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=6, num_attention_heads=2, intermediate_size=64),
             add_pooling_layer=False).save_pretrained(model)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(model)
    return {"model": str(model), "task": "image_classification", "data": {"train": str(folder / "train"), "validation": str(folder / "dev")}}


def multitask_data(folder: Path, rng: random.Random) -> dict:
    """The keyword sentiment and the names-and-cities tags, learned at once by one encoder."""
    members = {}
    for name, make in (("sentiment", classification_data), ("entities", token_classification_data)):
        (folder / name).mkdir(exist_ok=True)
        cfg = make(folder / name, rng, n=112)  # two tasks: fewer rows each keeps the matrix as quick as for one
        members[name] = {"type": cfg.get("task", "classification"), "data": cfg["data"]}
    return {"task": {"type": "multitask", "tasks": members}}


def causal_lm_data(folder: Path, rng: random.Random) -> dict:
    """The keyword sentiment as instructions (alpaca records) answered with a word, on a tiny Llama
    with its own byte-level BPE tokenizer."""
    from helpers import tiny_llama

    def rows(n):
        out = []
        for _ in range(n):
            label = rng.choice(["positive", "negative"])
            words = rng.sample(FILLER, 5) + [rng.choice(["great", "lovely", "superb"] if label == "positive" else ["awful", "dull", "bad"])]
            rng.shuffle(words)
            out.append({"instruction": "Is this positive or negative?", "input": " ".join(words), "output": label})
        return out

    train, dev = rows(160), rows(40)
    (folder / "train.json").write_text(json.dumps(train))
    (folder / "dev.json").write_text(json.dumps(dev))
    model = tiny_llama(folder / "llama", [" ".join(r.values()) for r in train])
    return {"model": str(model), "task": {"type": "causal_lm", "generate": {"samples": 2, "max_new_tokens": 2}}, "lr_scale": 10,
            "data": {"train": str(folder / "train.json"), "validation": str(folder / "dev.json"), "max_length": 48}}


def seq2seq_data(folder: Path, rng: random.Random) -> dict:
    """Digits spelled as words ("3 1" -> "three one") on a tiny BART (6 layers in each stack)."""
    from helpers import tiny_bart

    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

    def rows(n):
        out = []
        for _ in range(n):
            digits = [rng.randrange(10) for _ in range(rng.randint(2, 4))]
            out.append(json.dumps({"source": " ".join(map(str, digits)), "target": " ".join(words[d] for d in digits)}))
        return out

    for split, k in (("train", 160), ("dev", 24)):
        (folder / f"{split}.jsonl").write_text("\n".join(rows(k)) + "\n")
    model = tiny_bart(folder / "bart", [" ".join(map(str, range(10))), " ".join(words)] * 10, layers=6, hidden=32, init_std=0.3)
    return {"model": str(model), "task": {"type": "seq2seq", "generate": {"samples": 2, "max_new_tokens": 12}}, "lr_scale": 10,
            "data": {"train": str(folder / "train.jsonl"), "validation": str(folder / "dev.jsonl"), "max_length": 24}}


TASK_DATA = {"classification": classification_data, "token_classification": token_classification_data,
             "image_classification": image_classification_data, "multitask": multitask_data, "causal_lm": causal_lm_data,
             "seq2seq": seq2seq_data}


def test_every_registered_task_has_test_data():
    assert set(TASKS) <= set(TASK_DATA), f"add a small data set for {sorted(set(TASKS) - set(TASK_DATA))} to TASK_DATA"


def test_a_task_registered_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register_task(get_task("classification"))


def test_an_unknown_task_type_gets_a_did_you_mean():
    from weitiao.config import validate
    from weitiao.errors import UserError

    with pytest.raises(UserError, match="did you mean 'token_classification'"):
        validate({"data": {"train": "x"}, "task": "token_clasification"})
    assert validate({"data": {"train": "x"}, "task": "ner"}).task.type == "token_classification"


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("task", sorted(TASK_DATA))
def test_task_trains_saves_reloads_and_scores_the_same(task, strategy, tmp_path):
    from weitiao.cli import main
    from weitiao.predict import evaluate_file

    cfg = TASK_DATA[task](tmp_path, random.Random(0))
    method, lr = STRATEGIES[strategy]
    lr *= cfg.pop("lr_scale", 1)  # a tiny randomly initialised LM needs larger steps than a pretrained encoder
    cfg = {"version": 1, "model": "minilm", **cfg, "strategy": method,
           "training": {"epochs": 3, "batch_size": 16, "lr": lr, "log_every": 1, "progress": False, "warmup_ratio": 0.0},
           "output": {"dir": str(tmp_path / "runs")}}
    assert main(["train", str(write_config(tmp_path / "run.yaml", cfg)), "--name", "r"]) == 0
    run = tmp_path / "runs" / "r"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r and "step" in r]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.8 * first, f"{task} / {strategy}: loss {first:.3f} -> {last:.3f}"
    assert (run / "model" / "config.json").is_file()

    saved = json.loads((run / "metrics.json").read_text())["validation"]
    again = evaluate_file(str(run), cfg.get("data", {}).get("validation"))  # None: the run's own validation data (multi-task: each task's)
    metric = validate(cfg).training.metric  # the task's default
    assert again[metric] == pytest.approx(saved[metric], rel=1e-6, abs=1e-6)
    assert again["loss"] == pytest.approx(saved["loss"], rel=1e-4, abs=1e-5)


def test_every_task_option_is_documented():
    from helpers import ROOT

    doc = (ROOT / "docs" / "config.md").read_text()
    missing = sorted(f"{t.name}.{k}" for t in TASKS.values() for k in t.Options.model_fields if f"`{k}`" not in doc)
    assert not missing, f"docs/config.md does not mention: {missing}"


# classification's resume is covered at length by tests/e2e/test_resume.py: here it runs with `make test-all`
@pytest.mark.parametrize("task", [pytest.param(t, marks=pytest.mark.slow) if t == "classification" else t for t in sorted(TASK_DATA)])
def test_task_resumes_exactly_after_a_kill(task, tmp_path):
    """SIGKILL after step 7, resume from the step-6 checkpoint: the same weights, bit for bit."""
    import os
    import subprocess
    import sys

    import torch
    from helpers import ROOT, tiny_bert
    from safetensors.torch import load_file

    data = TASK_DATA[task](tmp_path, random.Random(1))
    data.pop("lr_scale", None)
    cfg = {"version": 1, "model": str(tiny_bert(tmp_path / "bert")), **data, "strategy": "full",
           "training": {"max_steps": 12, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 3, "eval_every": 6, "progress": False, "num_threads": 2},
           "output": {"dir": str(tmp_path / "runs")}}
    config = write_config(tmp_path / "c.yaml", cfg)

    def train(name: str, *extra: str, crash: str | None = None) -> int:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **({"WEITIAO_CRASH_AT": crash} if crash else {})}
        return subprocess.run([sys.executable, "-m", "weitiao", "train", str(config), "--name", name, *extra], cwd=ROOT, env=env,
                              capture_output=True, timeout=300).returncode

    assert train("straight") == 0
    assert train("killed", crash="step:7") == -9
    assert train("killed", "--resume", str(tmp_path / "runs" / "killed")) == 0
    a, b = (load_file(tmp_path / "runs" / n / "model" / "model.safetensors") for n in ("straight", "killed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("task", sorted(TASK_DATA))
def test_the_forgetting_probe_measures_any_task(task, tmp_path):
    """Run A of each task, then a run B of the same task on other data, trained from A's model with
    `probe: A`: before training, the probe scores A's own encoder, so it must give A's validation score."""
    from helpers import tiny_bert

    from weitiao.cli import main

    runs = {}
    for name, seed in (("A", 2), ("B", 3)):
        (tmp_path / name).mkdir()
        runs[name] = {"version": 1, "model": str(tiny_bert(tmp_path / "bert")) if name == "A" else str(tmp_path / "runs" / "A" / "model"),
                      **{k: v for k, v in TASK_DATA[task](tmp_path / name, random.Random(seed)).items() if k != "lr_scale"},
                      "training": {"max_steps": 6, "batch_size": 16, "lr": 1e-3, "progress": False}, "output": {"dir": str(tmp_path / "runs")}}
        if name == "B":
            runs[name]["model"] = str(tmp_path / "runs" / "A" / "model")
            runs[name]["strategy"] = {"method": "full", "probe": str(tmp_path / "runs" / "A")}
        assert main(["train", str(write_config(tmp_path / f"{name}.yaml", runs[name])), "--name", name]) == 0
    metric = validate(runs["A"]).training.metric  # the task's default
    own = json.loads((tmp_path / "runs" / "A" / "metrics.json").read_text())["validation"]
    probe = json.loads((tmp_path / "runs" / "B" / "metrics.json").read_text())["probe"]
    assert probe["before"][metric] == pytest.approx(own[metric], rel=1e-6, abs=1e-9)  # rel: a perplexity is an exponential
    assert probe["before"]["loss"] == pytest.approx(own["loss"], rel=1e-5)
    assert metric in probe["after"]


def test_a_checkpoint_written_before_the_task_options_existed_still_resumes():
    """The resume hash of a default config is what it was before data.tokens_column/tags_column
    (weitiao commit cd8d279): keys added later are left out of the hash while at their defaults."""
    from weitiao.config import validate
    from weitiao.train.resume import config_hash

    assert config_hash(validate({"data": {"train": "x.csv"}}).model_dump(mode="json")) == "9d9ff3dd105bf3f4"
    assert config_hash(validate({"data": {"train": "x.csv"}, "task": {"multi_label": True}}).model_dump(mode="json")) == "f1dfc9d2a340a784"
