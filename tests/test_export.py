"""`weitiao export`: every format of every task that has logits, checked against the run.

Tiny models (a 2-layer BERT, a ViT, a Llama, all built from configs) trained for a few steps:
each export must reproduce the run's logits (parity.json, max |delta| <= 1e-4 and every
prediction the same for fp32), and `weitiao eval` / `predict` on the export folder must give
what they give on the run. The real MiniLM is exported in tests/e2e/test_export_real.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import LORA
from conftest import TINY_RUNS as RUNS

from weitiao.errors import UserError

FORMATS = ["hf", "adapter", "onnx", "onnx-int8", "pt2"]


@pytest.fixture(scope="module")
def runs(tiny_runs) -> dict[str, Path]:
    return tiny_runs


def _export(run: Path, fmt: str, task: str | None = None) -> Path:
    from weitiao.export import export

    return Path(export(str(run), fmt, str(run.parent / f"{run.name}-{fmt}"), task=task, overwrite=True))


@pytest.fixture(scope="module")
def exported(runs):
    """(task, format) -> that run's export folder, written once in this module by the first test that asks:
    every test gets its exports whichever tests ran before it."""
    made: dict[tuple[str, str], Path] = {}

    def get(task: str, fmt: str) -> Path:
        if (task, fmt) not in made:
            made[task, fmt] = _export(runs[task], fmt, RUNS[task][1])
        return made[task, fmt]

    return get


# int8 of images and of a multi-task member takes the onnx path above it; int8 of a real image model runs on
# EfficientNet-Lite0 in tests/e2e/test_image_classification.py
CASES = [(t, f) for t in ("classification", "token_classification", "image_classification", "multitask") for f in FORMATS
         if not (f == "onnx-int8" and t in ("image_classification", "multitask"))]


@pytest.mark.parametrize("task, fmt", CASES)
def test_every_format_reproduces_the_run(runs, exported, task, fmt):
    from weitiao.predict import evaluate_file

    run, member = runs[task], RUNS[task][1]
    if fmt == "adapter" and RUNS[task][0] != LORA:
        with pytest.raises(UserError, match="no PEFT adapter"):
            _export(run, fmt, member)
        return
    out = exported(task, fmt)
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and parity["rows"] > 0 and parity["predictions"] >= parity["rows"]
    if fmt != "onnx-int8":
        assert parity["max_abs_logit_diff"] <= 1e-4 and parity["agreement"] == 1.0, parity
        assert parity["metrics_after"] == pytest.approx(parity["metrics_before"], abs=1e-6)
    else:
        assert 0 < parity["max_abs_logit_diff"] < 0.5 and parity["agreement"] >= 0.8, parity  # int8 changes the numbers a little
    if member:  # the rest compares with the run's own scoring of the same single task: the multi-task view is checked above
        return
    # `weitiao eval` on the export: the run's metrics (fp32), from the same validation rows
    trust = ("pt2",) if fmt == "pt2" else ()  # a .pt2 can carry code: opened only when named
    assert evaluate_file(str(out), trust=trust)["loss"] == pytest.approx(evaluate_file(str(run))["loss"], abs=1e-5 if fmt != "onnx-int8" else 0.05)
    manifest = json.loads((out / "weitiao_export.json").read_text())
    assert manifest["format"] == fmt and manifest["inputs"][0] in ("input_ids", "pixel_values")
    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model: ") and f"exported as `{fmt}`" in card


def test_predict_on_an_export_prints_what_predict_on_the_run_prints(runs, exported, capsys):
    from weitiao.predict import predict

    texts = ["we saw a great film", "it was awful", "then went home"]
    expected = predict(str(runs["classification"]), texts, None, None)
    for fmt in ("onnx", "pt2"):
        got = predict(str(exported("classification", fmt)), texts, None, None, trust=("pt2",))
        assert [(r["text"], r["label"]) for r in got] == [(r["text"], r["label"]) for r in expected]
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in expected], abs=1e-5)


def test_the_hf_and_adapter_exports_load_with_transformers_and_peft_alone(exported):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hf, adapter = exported("classification", "hf"), exported("classification", "adapter")
    tok = AutoTokenizer.from_pretrained(str(hf))
    batch = tok(["we saw a great film", "dull"], padding=True, return_tensors="pt")
    merged = AutoModelForSequenceClassification.from_pretrained(str(hf)).eval()
    base_path = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=2)
    peft = PeftModel.from_pretrained(base, str(adapter)).eval()
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, peft(**batch).logits, atol=1e-5)
    assert merged.config.id2label == {0: "neg", 1: "pos"}


def test_generative_runs_export_as_folders_and_refuse_graphs(runs):
    from transformers import AutoModelForCausalLM

    run = runs["causal_lm"]
    for fmt in ("onnx", "pt2"):
        with pytest.raises(UserError, match="hf or adapter"):
            _export(run, fmt)
        assert not (run.parent / f"causal_lm-{fmt}").exists()
    for fmt in ("hf", "adapter"):
        out = _export(run, fmt)
        assert json.loads((out / "parity.json").read_text())["max_abs_logit_diff"] <= 1e-4
    AutoModelForCausalLM.from_pretrained(str(run.parent / "causal_lm-hf"))


def test_a_failed_parity_check_writes_nothing(runs, monkeypatch):
    import dataclasses

    from weitiao.formats import FORMATS, load_formats

    load_formats()
    monkeypatch.setitem(FORMATS, "pt2", dataclasses.replace(FORMATS["pt2"], tolerance=-1.0))
    out = runs["classification"].parent / "refused"
    from weitiao.export import export

    with pytest.raises(UserError, match=r"does not reproduce.*max \|delta logit\|"):
        export(str(runs["classification"]), "pt2", str(out))
    assert not out.exists() and not list(out.parent.glob(".refused*"))


def test_export_mistakes_are_one_line_errors(runs, tmp_path, capsys):
    from weitiao.cli import main

    run = str(runs["classification"])
    assert main(["export", run, "--format", "onix", "--out", str(tmp_path / "a")]) == 2
    assert "did you mean 'onnx'" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    assert main(["export", run, "--out", str(tmp_path / "b")]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", run, "--task", "x", "--out", str(tmp_path / "c")]) == 2
    assert "single-task" in capsys.readouterr().err
    assert main(["export", str(runs["multitask"]), "--out", str(tmp_path / "d")]) == 2
    assert "--task" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in "acd")


def test_what_a_killed_export_left_is_removed_and_a_failing_one_leaves_nothing(runs, tmp_path):
    """A killed export used to leave /tmp/weitiao-export-* and a hidden .FMT.tmp-PID for good: its scratch now
    sits beside the target, and the next export there removes what a dead process left."""
    import subprocess

    from weitiao.export import export

    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "exports"
    for left in (f".hf.scratch-{dead.pid}", f".hf.tmp-{dead.pid}"):
        (out / left).mkdir(parents=True)
        (out / left / "model.safetensors").write_bytes(b"half")
    export(str(runs["classification"]), "hf", str(out / "hf"))
    assert sorted(p.name for p in out.iterdir()) == ["hf"]
    with pytest.raises(UserError):
        export(str(runs["classification"]), "onnx", str(out / "x"), rows=0)
    assert sorted(p.name for p in out.iterdir()) == ["hf"]
