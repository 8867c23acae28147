"""report.html and plots/, TensorBoard event files, and the runs table."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import write_config
from PIL import Image


def test_ece_matches_a_hand_computation():
    from weitiao.evaluate.report import expected_calibration_error

    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.35, 0.65], [0.4, 0.6], [0.2, 0.8], [0.55, 0.45]])
    labels = np.array([0, 1, 1, 0, 1, 0])
    # confidences 0.95 0.9 0.65 0.6 0.8 0.55; correct 1 0 1 0 1 1
    # bins (0.5,0.6]: {0.6 wrong, 0.55 right} acc 0.5 conf 0.575; (0.6,0.7]: {0.65 right} acc 1 conf 0.65;
    # (0.7,0.8]: {0.8 right}; (0.8,0.9]: {0.9 wrong}; (0.9,1]: {0.95 right}
    hand = (2 * abs(0.5 - 0.575) + abs(1 - 0.65) + abs(1 - 0.8) + abs(0 - 0.9) + abs(1 - 0.95)) / 6
    ece, bins = expected_calibration_error(probs, labels)
    assert ece == pytest.approx(hand, abs=1e-12)
    assert sum(b["count"] for b in bins) == 6


def test_entity_confusion_matches_spans_exactly():
    from weitiao.evaluate.report import entity_confusion

    gold = [["B-person", "I-person", "O", "B-location"], ["B-location", "O"]]
    pred = [["B-person", "O", "O", "B-person"], ["B-location", "B-person"]]
    kinds, matrix = entity_confusion(gold, pred)
    assert kinds == ["location", "person", "(none)"]
    # person "alice bob" predicted only as "alice": a missed person and a spurious one; location 3 read as a person;
    # location 0 right; word 1 of sentence 2 a spurious person
    assert matrix.tolist() == [[1, 1, 0], [0, 0, 1], [0, 2, 0]]


def _valid_png(path) -> bool:
    image = np.asarray(Image.open(path).convert("L"), dtype=float)
    return image.size > 10_000 and image.std() > 5  # not blank: a drawn plot has lines and text on white


@pytest.fixture(scope="module")
def reported(tmp_path_factory, tiny_runs):
    """A tiny classifier trained with the report on (as users get it), and TensorBoard tracking."""
    import os
    import random

    from test_tasks import classification_data

    from weitiao.cli import main

    tmp = tmp_path_factory.mktemp("report")
    cfg = {"version": 1, "model": str(tiny_runs["classification"].parents[1] / "tiny"), **classification_data(tmp, random.Random(1)),
           "strategy": {"method": "lora", "r": 4, "target_modules": "all-linear", "head_lr": 3e-3},
           "training": {"epochs": 2, "batch_size": 16, "lr": 1e-3, "progress": False, "log_every": 1, "eval_every": 5},
           "output": {"dir": str(tmp / "runs")}}
    os.environ["WEITIAO_REPORT"] = "1"
    try:
        assert main(["train", str(write_config(tmp / "c.yaml", cfg)), "--name", "r"]) == 0
    finally:
        os.environ["WEITIAO_REPORT"] = "0"
    return tmp / "runs" / "r"


CLASSIFIER_PLOTS = ["loss", "lr", "metrics", "throughput", "confusion", "confusion_normalized", "per_class", "reliability"]


def test_a_finished_run_has_a_report_with_every_plot(reported):
    page = (reported / "report.html").read_text()
    for name in CLASSIFIER_PLOTS:
        assert _valid_png(reported / "plots" / f"{name}.png"), name
        assert f"alt='{name}.png'" in page
    assert "data:image/png;base64," in page and "<b>finished</b>" in page
    assert "Trainable parameters" in page and "Most confidently wrong" in page and "Data: reading and cleaning" in page
    ece = json.loads((reported / "plots" / "calibration.json").read_text())["ece"]
    assert 0 <= ece <= 1 and f"expected calibration error {ece:.4f}" in page


def test_the_lr_plot_has_a_line_per_parameter_group(reported, tmp_path, monkeypatch):
    """lr.png draws one line per parameter group (head_lr gives the head its own), each the linear schedule
    (warmup, then decay to 0) times that group's learning rate, at every logged step."""
    import math

    import yaml

    from weitiao.evaluate import report

    drawn = {}
    real_figure = report._figure

    def figure(path, draw, size=(6.4, 3.6)):
        def spy(fig, ax):
            draw(fig, ax)
            drawn[path.name] = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
        return real_figure(path, spy, size)

    monkeypatch.setattr(report, "_figure", figure)
    run = tmp_path / "r"
    shutil.copytree(reported, run)
    (run / "plots" / "lr.png").unlink()
    report.write_report(run, score=False)
    assert _valid_png(run / "plots" / "lr.png")

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    t = cfg["training"]
    total = json.loads((run / "metrics.json").read_text())["train"]["steps"]  # the run's optimizer steps: the schedule's length
    warmup = math.ceil(total * t["warmup_ratio"])
    assert t["log_every"] < warmup < total, (t["log_every"], warmup, total)  # a logged step falls inside the warmup

    def scheduled(step: int) -> float:  # the factor in force after `step` optimizer steps
        return (step + 1) / (warmup + 1) if step < warmup else max(0.0, 1 - (step - warmup) / (total - warmup))

    steps = list(range(t["log_every"], total + 1, t["log_every"])) + ([total] if total % t["log_every"] else [])
    lines = drawn["lr.png"]
    assert set(lines) == {"head", "body"}, lines.keys()
    for name, lr in (("head", cfg["strategy"]["head_lr"]), ("body", t["lr"])):
        xs, ys = lines[name]
        assert xs == steps, (name, xs)
        assert ys == pytest.approx([lr * scheduled(s) for s in steps], rel=1e-6, abs=1e-12), name
    assert lines["body"][1][0] > 0 and lines["head"][1][0] == pytest.approx(3 * lines["body"][1][0])


def test_report_works_on_a_stopped_run(reported, tmp_path, capsys):
    from weitiao.cli import main

    stopped = tmp_path / "stopped"
    shutil.copytree(reported, stopped)
    (stopped / "metrics.json").unlink()  # as a run killed before it finished leaves it
    (stopped / "report.html").unlink()
    assert main(["report", str(stopped)]) == 0
    page = (stopped / "report.html").read_text()
    assert "<b>stopped</b>" in page and _valid_png(stopped / "plots" / "loss.png")


def test_token_and_generative_runs_get_their_plots(tiny_runs, tmp_path):
    from weitiao.evaluate.report import write_report

    for task in ("token_classification", "causal_lm"):
        run = tmp_path / task
        shutil.copytree(tiny_runs[task], run)
        page = write_report(run).read_text()
        assert _valid_png(run / "plots" / "metrics.png")
    assert _valid_png(tmp_path / "token_classification" / "plots" / "per_type.png")
    assert _valid_png(tmp_path / "token_classification" / "plots" / "entity_confusion.png")
    assert "perplexity" in (tmp_path / "causal_lm" / "metrics.jsonl").read_text() and "Sample generations" in page


def test_tensorboard_holds_the_logged_scalars(reported):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = [p for p in (reported / "tensorboard").rglob("events.out.tfevents.*")]
    assert events
    scalars = {}
    for path in events:
        acc = EventAccumulator(str(path))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
    records = [json.loads(line) for line in (reported / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["step"], r["loss"]) for r in records if "loss" in r and "step" in r and "eval" not in r]
    assert [s for s, _ in scalars["train/loss"]] == [s for s, _ in logged]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([v for _, v in logged], rel=1e-6)
    evals = [(r["step"], r["eval"]["accuracy"]) for r in records if "eval" in r]
    assert [(s, pytest.approx(v, rel=1e-6)) for s, v in scalars["eval/accuracy"]] == evals
    assert any(tag.startswith("train/lr/") for tag in scalars)


def test_tracking_none_writes_no_event_files(tmp_path, tiny_runs):
    import random

    from test_tasks import classification_data

    from weitiao.cli import main

    cfg = {"version": 1, "model": str(tiny_runs["classification"].parents[1] / "tiny"), **classification_data(tmp_path, random.Random(2)),
           "training": {"max_steps": 2, "progress": False}, "output": {"dir": str(tmp_path / "runs"), "tracking": "none"}}
    assert main(["train", str(write_config(tmp_path / "c.yaml", cfg)), "--name", "n"]) == 0
    assert not (tmp_path / "runs" / "n" / "tensorboard").exists()
    cfg["output"]["tracking"] = "tensorbored"
    assert main(["train", str(write_config(tmp_path / "c.yaml", cfg)), "--name", "m"]) == 2


def test_runs_lists_finished_and_stopped_runs_and_compare_lines_them_up(reported, tmp_path, capsys):
    from weitiao.cli import main

    folder = tmp_path / "many"
    shutil.copytree(reported, folder / "a")
    shutil.copytree(reported, folder / "b")
    (folder / "b" / "metrics.json").unlink()  # stopped before it finished
    config = (folder / "b" / "config.yaml").read_text().replace("lr: 0.001", "lr: 0.002")
    (folder / "b" / "config.yaml").write_text(config)
    capsys.readouterr()
    assert main(["runs", str(folder), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["a"]["status"] == "finished" and rows["b"]["status"] == "stopped"
    saved = json.loads((reported / "metrics.json").read_text())["validation"]["accuracy"]
    assert rows["a"]["value"] == pytest.approx(saved) and rows["a"]["task"] == "classification" and rows["a"]["strategy"] == "lora"
    assert rows["b"]["value"] is not None  # the best evaluation so far, from metrics.jsonl

    out = tmp_path / "c.html"
    assert main(["compare", str(folder / "a"), str(folder / "b"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "training.lr: 0.001 | 0.002" in printed
    page = out.read_text()
    assert page.count("data:image/png;base64,") >= 2 and "training.lr" in page
    assert main(["runs", str(tmp_path / "nope")]) == 2
