"""Image classification end to end on real photos: the bundled EfficientNet-Lite0, head_only, on a
hymenoptera subset with unreadable files mixed in; eval and predict on the saved run."""

from __future__ import annotations

import json

import pytest
from helpers import DATA, write_config

from weitiao.cli import main

HYMENOPTERA = DATA / "hymenoptera" / "hymenoptera_data"


def subset(src, dst, n: int) -> None:
    for cls in ("ants", "bees"):
        (dst / cls).mkdir(parents=True)
        for f in sorted((src / cls).iterdir())[:n]:
            (dst / cls / f.name).symlink_to(f)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("images")
    subset(HYMENOPTERA / "train", tmp / "train", 40)
    subset(HYMENOPTERA / "val", tmp / "val", 30)
    (tmp / "train" / "ants" / "notes.jpg").write_text("not an image")  # skipped and counted, never a crash
    full = (HYMENOPTERA / "train" / "bees" / sorted(p.name for p in (HYMENOPTERA / "train" / "bees").iterdir())[0]).read_bytes()
    (tmp / "train" / "bees" / "truncated.jpg").write_bytes(full[: len(full) // 3])
    cfg = {"version": 1, "model": "efficientnet_lite0", "task": "image_classification",
           "data": {"train": str(tmp / "train"), "validation": str(tmp / "val")}, "strategy": "head_only",
           "training": {"epochs": 3, "batch_size": 16, "lr": 3e-3, "progress": False}, "output": {"dir": str(tmp / "runs")}}
    assert main(["train", str(write_config(tmp / "c.yaml", cfg)), "--name", "img"]) == 0  # the head fitted by the solver first
    cfg["strategy"] = {"method": "head_only", "head_fit": "gradient"}
    assert main(["train", str(write_config(tmp / "gradient.yaml", cfg)), "--name", "gradient"]) == 0
    cfg["training"]["feature_cache"] = False
    assert main(["train", str(write_config(tmp / "plain.yaml", cfg)), "--name", "plain"]) == 0
    return tmp / "runs" / "img", tmp


def test_head_only_efficientnet_tells_ants_from_bees(image_run):
    run, _ = image_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] >= 0.85  # 60 photos; the best constant answer scores 0.5
    assert metrics["train"]["trainable_params"] == 2 * 1280 + 2  # only the new classifier learned
    report = next(json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"data"' in line)["data"]
    assert report["unreadable"] == {"train": 2, "validation": 0}


def test_eval_and_predict_on_the_saved_run(image_run, capsys):
    run, tmp = image_run
    capsys.readouterr()
    assert main(["eval", str(run), "--data", str(tmp / "val")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["accuracy"] == pytest.approx(json.loads((run / "metrics.json").read_text())["validation"]["accuracy"])
    bee = sorted((tmp / "val" / "bees").iterdir())[0]
    assert main(["predict", str(run), "--image", str(bee)]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["image"] == str(bee) and set(row["probabilities"]) == {"ants", "bees"}
    assert main(["predict", str(run), "--image", str(tmp / "missing.jpg")]) == 2
    assert "--image: file" in capsys.readouterr().err


def test_efficientnet_exports_to_onnx_fp32_and_int8_with_parity(image_run, tmp_path):
    """The bundled EfficientNet-Lite0 (channels-last in torch) as ONNX: every prediction the same in fp32;
    int8 quantizes its matrix products only (quantized convolutions lose most predictions) and keeps them too."""
    run, _ = image_run
    for fmt in ("onnx", "onnx-int8"):
        assert main(["export", str(run), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
        parity = json.loads((tmp_path / fmt / "parity.json").read_text())
        assert parity["rows"] == 60 and parity["agreement"] >= (1.0 if fmt == "onnx" else 0.95), parity
    assert parity["metrics_after"]["accuracy"] == pytest.approx(parity["metrics_before"]["accuracy"], abs=0.05)


def test_head_only_computes_the_frozen_backbone_once_and_learns_the_same(image_run):
    """The cache replays the frozen body's output (EfficientNet's pooled features); without it the body
    runs every step in eval mode: the same function, so the same scores."""
    run, tmp = image_run
    cached, plain = (json.loads((tmp / "runs" / name / "metrics.json").read_text()) for name in ("gradient", "plain"))
    assert cached["train"]["feature_cache"]["frozen_body"] == "efficientnet" and plain["train"]["feature_cache"] is None
    assert cached["validation"]["accuracy"] == plain["validation"]["accuracy"]
    assert cached["validation"]["loss"] == pytest.approx(plain["validation"]["loss"], rel=1e-4)
    assert cached["train"]["feature_cache"]["megabytes"] == round((80 + 60) * 1280 * 4 / 2**20, 1)  # one 1280-float vector per readable photo, training and validation


def test_head_only_starts_from_the_solvers_head_and_keeps_the_better(image_run):
    """The cached features make the head a logistic regression: L-BFGS fits it for each C of the grid, the
    validation accuracy picks C, and training goes on from there; the saved model is the better on validation."""
    run, tmp = image_run
    solver, gradient = (json.loads((tmp / "runs" / name / "metrics.json").read_text()) for name in ("img", "gradient"))
    fit = solver["train"]["head_fit"]
    assert fit["method"].startswith("L-BFGS") and len(fit["tried"]) == 7 and fit["validation_accuracy"] == max(fit["tried"].values())
    assert str(fit["C"]) in fit["tried"] and fit["tried"][str(fit["C"])] == fit["validation_accuracy"]
    assert solver["validation"]["accuracy"] >= fit["validation_accuracy"]  # the solver's head, or a better one from training
    assert solver["validation"]["accuracy"] >= gradient["validation"]["accuracy"]  # never below the gradient-only head
    assert "head_fit" not in gradient["train"]


def test_digits_from_pixel_rows_train_far_above_chance(tmp_path):
    """Full fine-tuning on real images: examples/digits.yaml (8x8 pixel rows as images, EfficientNet-Lite0,
    every weight learning) on 600 training rows, two epochs, scored on its 180 validation rows."""
    import json

    from helpers import ROOT

    from weitiao.cli import main

    assert main(["train", str(ROOT / "examples/digits.yaml"), "--name", "digits", "--set", "training.epochs=2",
                 "--set", "data.train_limit=600", "--set", f"output.dir={tmp_path}", "--set", "training.progress=false"]) == 0
    metrics = json.loads((tmp_path / "digits" / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] > 0.6  # 10 balanced classes: a constant predictor scores about 0.1
