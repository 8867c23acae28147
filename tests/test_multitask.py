"""Multi-task: batches of one task each, as the sampling rule says; one encoder shared by every task's
model (one parameter, saved once); a run that reloads, predicts every task per input, and exports one
task as a plain transformers model; and the config's mistakes named at their key."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from helpers import write_config
from test_tasks import multitask_data

from weitiao.config import validate
from weitiao.errors import UserError
from weitiao.tasks.multitask import MultiEncoded, epoch_batches


class Rows:
    """An encoded split of n rows of the given lengths."""

    def __init__(self, lengths):
        self.lengths = list(lengths)

    def __len__(self):
        return len(self.lengths)


def encoded(sizes: dict[str, int]) -> MultiEncoded:
    return MultiEncoded({name: Rows([(i % 7) + 3 for i in range(n)]) for name, n in sizes.items()})


def task_of(enc: MultiEncoded, batch: list[int]) -> str:
    return enc.locate(batch)[0]  # raises when a batch mixes tasks


def test_proportional_sampling_gives_every_row_once_in_batches_of_one_task():
    enc = encoded({"big": 300, "small": 40})
    batches = epoch_batches(enc, 16, seed=1, epoch=0, sampling="proportional")
    assert sorted(i for b in batches for i in b) == list(range(340))
    assert Counter(task_of(enc, b) for b in batches) == {"big": 19, "small": 3}
    assert batches == epoch_batches(enc, 16, seed=1, epoch=0, sampling="proportional")  # a resumed run rebuilds the epoch
    assert batches != epoch_batches(enc, 16, seed=1, epoch=1, sampling="proportional")


@pytest.mark.parametrize("sampling, small_share", [("uniform", 0.5), ({"temperature": 2.0}, (40 ** 0.5) / (40 ** 0.5 + 300 ** 0.5))])
def test_uniform_and_temperature_sampling_draw_tasks_with_their_probabilities(sampling, small_share):
    from weitiao.tasks.multitask import Temperature

    rule = Temperature(**sampling) if isinstance(sampling, dict) else sampling
    enc = encoded({"big": 3000, "small": 400})
    batches = epoch_batches(enc, 16, seed=3, epoch=0, sampling=rule)
    counts = Counter(task_of(enc, b) for b in batches)
    assert len(batches) == 188 + 25
    assert counts["small"] / len(batches) == pytest.approx(small_share, abs=0.07)
    # the small task runs out of rows and starts another pass: every row of it is seen
    assert {i for b in batches if task_of(enc, b) == "small" for i in b} == set(range(3000, 3400))


def test_config_mistakes_are_named_at_their_key():
    def refusal(task, **top):
        with pytest.raises(UserError) as e:
            validate({"task": task, **top})
        return e.value

    ok = {"a": {"type": "classification", "data": {"train": "x"}}, "b": {"type": "ner", "data": {"train": "y"}}}
    assert validate({"task": {"type": "multitask", "tasks": ok}}).training.metric == "mean"
    assert refusal({"type": "multitask", "tasks": {"a": ok["a"]}}).field == "task.tasks"
    e = refusal({"type": "multitask", "tasks": {**ok, "a": {**ok["a"], "multi_labl": True}}})
    assert (e.field, e.fix) == ("task.tasks.a.multi_labl", "did you mean 'multi_label'?")
    assert refusal({"type": "multitask", "tasks": {**ok, "a": {**ok["a"], "data": {"tran": "x"}}}}).field == "task.tasks.a.data.tran"
    assert refusal({"type": "multitask", "tasks": {**ok, "a": {**ok["a"], "data": {"train": "x", "tags_column": "t"}}}}).field == \
        "task.tasks.a.data.tags_column"
    assert refusal({"type": "multitask", "tasks": {**ok, "b": {"type": "image_classification", "data": {"train": "y"}}}}).field == "task.tasks.b.type"
    assert refusal({"type": "multitask", "sampling": {"temp": 2}, "tasks": ok}).field == "task.sampling"
    assert refusal({"type": "multitask", "tasks": ok}, data={"train": "z"}).field == "data.train"
    assert refusal({"type": "multitask", "tasks": ok}, training={"metric": "accuracy"}).field == "training.metric"
    shared = validate({"task": {"type": "multitask", "tasks": {**ok, "b": {**ok["b"], "data": {"train": "y", "max_length": 100}}}},
                       "data": {"max_length": 64}})
    assert (shared.task.tasks["a"].data.max_length, shared.task.tasks["b"].data.max_length) == (64, 100)  # the top's keys are defaults


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished multi-task run on MiniLM (both tasks learnable from a keyword / a name list)."""
    from weitiao.cli import main

    tmp = tmp_path_factory.mktemp("mt")
    cfg = {"version": 1, "model": "minilm", **multitask_data(tmp, random.Random(5)),
           "strategy": {"method": "full", "layer_lr_decay": 0.8},
           "training": {"epochs": 2, "batch_size": 16, "lr": 2e-4, "progress": False, "warmup_ratio": 0.0}, "output": {"dir": str(tmp / "runs")}}
    assert main(["train", str(write_config(tmp / "mt.yaml", cfg)), "--name", "mt"]) == 0
    return tmp / "runs" / "mt"


def test_one_encoder_is_shared_and_saved_once(run):
    from safetensors import safe_open

    from weitiao.rundir.opening import open_run

    model = open_run(str(run)).model
    assert model.models["sentiment"].bert is model.encoder and model.models["entities"].bert is model.encoder
    with safe_open(str(run / "model" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if ".bert." in k]  # the encoder once, under encoder.*
    assert {k.split(".")[1] for k in keys if k.startswith("models.")} == {"sentiment", "entities"}


def test_each_head_is_its_own_lr_group_and_both_tasks_learn(run):
    from weitiao.config import load_config
    from weitiao.rundir.opening import open_run
    from weitiao.strategies.lr_groups import build_param_groups

    metrics = json.loads((run / "metrics.json").read_text())["validation"]
    assert metrics["sentiment/accuracy"] > 0.8  # the constant predictor: about 0.5
    assert metrics["entities/f1"] > 0.3  # a constant "O" finds no entity: 0
    assert metrics["mean"] == pytest.approx((metrics["sentiment/accuracy"] + metrics["entities/f1"]) / 2)
    cfg = load_config(run / "config.yaml")
    groups = build_param_groups(open_run(str(run)).model, None, 1e-3, 0.01, cfg.strategy.layer_lr_decay)
    lr = {g["name"]: g["lr"] for g in groups}
    assert lr["head sentiment"] == lr["head entities"] == 1e-3
    assert lr["embeddings"] < lr["layer 0"] < lr["head sentiment"]  # layer-wise decay on the shared encoder


def test_predict_gives_every_task_for_each_input(run):
    from weitiao.api import load

    rows = load(str(run)).predict(["we saw alice bob in paris and it was great", "a dull day in oslo"])
    assert [r["text"] for r in rows] == ["we saw alice bob in paris and it was great", "a dull day in oslo"]
    assert rows[0]["sentiment"]["label"] == "pos" and rows[1]["sentiment"]["label"] == "neg"
    assert {(e["text"], e["type"]) for e in rows[0]["entities"]["entities"]} >= {("paris", "location")}


def test_an_exported_task_is_a_plain_transformers_model_with_the_same_logits(run, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    from weitiao.export import export
    from weitiao.rundir.opening import open_run

    model = open_run(str(run)).model
    tok = AutoTokenizer.from_pretrained(str(run / "model"))
    batch = tok(["we saw alice in tokyo today", "it was awful"], padding=True, return_tensors="pt")
    for name, auto in (("sentiment", AutoModelForSequenceClassification), ("entities", AutoModelForTokenClassification)):
        out = export(str(run), "hf", str(tmp_path / name), task=name)
        plain = auto.from_pretrained(out).eval()
        with torch.no_grad():
            assert torch.allclose(plain(**batch).logits, model(task=name, **batch).logits.logits, atol=1e-5)
    with pytest.raises(UserError, match="--task"):
        export(str(run), "hf", str(tmp_path / "x"), task="nope")
    with pytest.raises(UserError, match="exists"):
        export(str(run), "hf", str(tmp_path / "sentiment"), task="sentiment")


def test_a_single_task_run_cannot_start_from_a_multi_task_model(run, tmp_path):
    from test_tasks import classification_data

    from weitiao.cli import main

    cfg = {"version": 1, "model": str(run / "model"), **classification_data(tmp_path, random.Random(0)),
           "training": {"max_steps": 2, "progress": False}, "output": {"dir": str(tmp_path / "runs")}}
    assert main(["train", str(write_config(tmp_path / "c.yaml", cfg)), "--name", "x"]) == 2
    assert not (tmp_path / "runs" / "x").exists()
