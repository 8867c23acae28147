"""End-to-end: `weitiao train / eval / predict` on real data, checked with numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import GOEMOTIONS, ROOT, minilm_path, sst2_slice, tiny_bert, write_config, write_rows

from weitiao.cli import main


def run_cli(*args: str) -> int:
    return main(list(args))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="module")
def sst2_small(tmp_path_factory):
    return sst2_slice(tmp_path_factory.mktemp("sst2"), 600, 200)


def sst2_config(tmp, model, train, dev, **training):
    return {
        "version": 1, "model": str(model), "task": "classification",
        "data": {"train": str(train), "validation": str(dev), "text_column": "sentence", "label_column": "label",
                 "labels": ["negative", "positive"], "max_length": 64},
        "strategy": "full",
        "training": {"epochs": 1, "batch_size": 32, "lr": 1e-3, "progress": False, **training},
        "output": {"dir": str(tmp / "runs")},
    }


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tiny_bert_run_folder_is_complete_and_loads_with_plain_transformers(tmp_path, tiny_model, sst2_small):
    from transformers import AutoModelForSequenceClassification, pipeline

    cfg = write_config(tmp_path / "c.yaml", sst2_config(tmp_path, tiny_model, *sst2_small, epochs=2, keep_checkpoints=1))
    assert run_cli("train", str(cfg), "--name", "tiny") == 0
    run = tmp_path / "runs" / "tiny"
    for name in ("config.yaml", "env.json", "metrics.jsonl", "metrics.json", "model/config.json", "model/model.safetensors", "model/tokenizer.json"):
        assert (run / name).is_file(), name
    ckpts = sorted((run / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == ["step-00000038"]  # keep_checkpoints: 1 kept only the last (2 epochs x 19 steps)
    assert not list((run / "checkpoints").glob(".tmp*"))

    env = json.loads((run / "env.json").read_text())
    assert env["seed"] == 42 and env["device"] == "cpu" and env["torch"].startswith("2.")
    records = read_jsonl(run / "metrics.jsonl")
    assert sum("eval" in r for r in records) == 2  # one evaluation per epoch
    final = json.loads((run / "metrics.json").read_text())
    assert final["validation"]["n"] == 200 and len(final["validation"]["confusion_matrix"]) == 2
    assert set(final["validation"]["per_class"]) == {"negative", "positive"}

    model = AutoModelForSequenceClassification.from_pretrained(run / "model")
    assert model.config.id2label == {0: "negative", 1: "positive"}
    clf = pipeline("text-classification", model=str(run / "model"), device="cpu")
    assert clf("a gorgeous , witty film")[0]["label"] in {"negative", "positive"}


def test_resolved_config_repeats_the_run(tmp_path, tiny_model, sst2_small):
    cfg = write_config(tmp_path / "c.yaml", sst2_config(tmp_path, tiny_model, *sst2_small, max_steps=5))
    assert run_cli("train", str(cfg), "--name", "a", "--set", "training.lr=3e-4") == 0
    first = tmp_path / "runs" / "a"
    resolved = yaml.safe_load((first / "config.yaml").read_text())
    assert resolved["training"]["lr"] == 3e-4 and resolved["training"]["warmup_ratio"] == 0.06  # defaults filled in
    assert run_cli("train", str(first / "config.yaml"), "--name", "b") == 0
    a = json.loads((first / "metrics.json").read_text())["validation"]
    b = json.loads((tmp_path / "runs" / "b" / "metrics.json").read_text())["validation"]
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)  # same seed, same config: same result


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory):
    """The real MiniLM, fine-tuned on 1,600 real SST-2 sentences, evaluated on the full dev set."""
    tmp = tmp_path_factory.mktemp("minilm")
    train, dev = sst2_slice(tmp, 1600)
    cfg = write_config(tmp / "c.yaml", sst2_config(tmp, "minilm", train, dev, lr=1e-4, log_every=5))
    assert run_cli("train", str(cfg), "--name", "sst2") == 0
    return tmp / "runs" / "sst2", dev


def test_minilm_learns_sst2(minilm_run):
    run, _ = minilm_run
    losses = [r["loss"] for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]
    assert losses[-1] < losses[0] - 0.2, losses  # the training loss went down
    val = json.loads((run / "metrics.json").read_text())["validation"]
    assert val["n"] == 872
    assert val["accuracy"] > 0.75, val["accuracy"]  # chance is 0.51 (444 of 872 positive)
    assert val["roc_auc"] > 0.8


def test_eval_and_predict_on_the_trained_run(minilm_run, tmp_path, capsys):
    run, dev = minilm_run
    assert run_cli("eval", str(run), "--data", str(dev), "--output", str(tmp_path / "m.json")) == 0
    again = json.loads((tmp_path / "m.json").read_text())
    trained = json.loads((run / "metrics.json").read_text())["validation"]
    assert again["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-9)

    capsys.readouterr()
    assert run_cli("predict", str(run), "--text", "a masterpiece , moving and funny", "a dull , lifeless mess") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == ["positive", "negative"]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)

    out = tmp_path / "p.csv"
    assert run_cli("predict", str(run), "--file", str(dev), "--output", str(out)) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "text,label,p_negative,p_positive" and len(lines) == 873


@pytest.mark.slow  # 47 s; export parity stays in make test on tiny models and on the real EfficientNet (make test-all)
def test_the_real_minilm_exports_with_parity(minilm_run, tmp_path, capsys):
    """ONNX fp32 and torch.export (pt2) reproduce the fine-tuned MiniLM on the 872 dev sentences; int8 keeps nearly every prediction."""
    run, dev = minilm_run
    trained = json.loads((run / "metrics.json").read_text())["validation"]
    for fmt in ("onnx", "pt2", "onnx-int8"):
        assert run_cli("export", str(run), "--format", fmt, "--out", str(tmp_path / fmt)) == 0
        parity = json.loads((tmp_path / fmt / "parity.json").read_text())
        assert parity["rows"] == 872 and parity["metrics_before"]["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-9)
        if fmt == "onnx-int8":
            assert parity["agreement"] >= 0.95 and abs(parity["metrics_after"]["accuracy"] - trained["accuracy"]) < 0.02, parity
        else:
            assert parity["max_abs_logit_diff"] <= 1e-4 and parity["agreement"] == 1.0, parity
    capsys.readouterr()
    assert run_cli("eval", str(tmp_path / "onnx-int8"), "--data", str(dev)) == 0  # the int8 model scored with the same command
    scored = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert scored["accuracy"] == pytest.approx(json.loads((tmp_path / "onnx-int8" / "parity.json").read_text())["metrics_after"]["accuracy"], abs=1e-9)


def test_predict_into_a_missing_folder_is_a_user_error(minilm_run, tmp_path):
    run, _ = minilm_run
    missing = tmp_path / "no" / "such" / "p.jsonl"
    proc = subprocess.run([sys.executable, "-m", "weitiao", "predict", str(run), "--text", "fine", "--output", str(missing)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [f"error: --output: folder '{missing.parent}' does not exist; "
                                        f"fix: create it first (mkdir -p {missing.parent}) or write elsewhere"]
    assert not missing.parent.exists()


def test_eval_and_predict_skip_empty_texts_alike_and_say_so(minilm_run, tmp_path, capsys):
    run, dev = minilm_run
    lines = dev.read_text(encoding="utf-8").splitlines()
    blank = [lines[0]] + lines[1:21] + [f" \t{lines[21].split(chr(9))[1]}", f"\t{lines[22].split(chr(9))[1]}"] + lines[23:31]
    with_blanks = write_rows(tmp_path / "blanks.tsv", None, blank)
    capsys.readouterr()
    assert run_cli("eval", str(run), "--data", str(with_blanks)) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["n"] == 28
    assert "note: 2 of 30 rows" in out.err and "empty text" in out.err
    assert run_cli("predict", str(run), "--file", str(with_blanks)) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 28 and "note: 2 of 30 rows" in out.err


def test_texts_cut_to_max_length_are_counted(minilm_run, tmp_path, capsys):
    from transformers import AutoTokenizer

    run, dev = minilm_run  # max_length 64
    long = " ".join(["a remarkably long and winding sentence about a film"] * 12)
    capsys.readouterr()
    assert run_cli("predict", str(run), "--text", "short and sweet", long, long) == 0
    assert "note: 2 of 3 texts were longer than data.max_length (64 tokens)" in capsys.readouterr().err
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    sentences = [line.split("\t")[0].strip() for line in dev.read_text(encoding="utf-8").splitlines()[1:]]
    longer = sum(len(ids) > 64 for ids in tokenizer(sentences)["input_ids"])
    final = json.loads((run / "metrics.json").read_text())
    assert final["truncated"]["validation"] == longer and final["truncated"]["max_length"] == 64


def test_cli_subprocess_help_lists_every_command():
    commands = ["train", "eval", "predict", "chat", "export", "distill", "tune", "report", "runs", "compare", "ui", "serve"]
    out = subprocess.run([sys.executable, "-m", "weitiao", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    listed = [line.split()[0] for line in out.stdout.split("COMMAND", 2)[-1].splitlines() if line[:4] == "    " and line[4:5].strip()]
    assert listed == commands, out.stdout
    bare = subprocess.run([sys.executable, "-m", "weitiao"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bare.returncode == 2 and bare.stderr.startswith("usage: weitiao") and "COMMAND" in bare.stderr


@pytest.mark.parametrize("strategy,frozen,trained", [
    ("head_only", ("bert.embeddings.", "bert.encoder.layer.0.", "bert.encoder.layer.1."), ("classifier.",)),
    ({"freeze_bottom": 1}, ("bert.embeddings.", "bert.encoder.layer.0."), ("bert.encoder.layer.1.", "classifier.")),
])
def test_frozen_weights_are_bitwise_unchanged(tmp_path, tiny_model, sst2_small, strategy, frozen, trained):
    from safetensors.torch import load_file
    from transformers import AutoModel

    from weitiao.tasks.classification import build_model

    cfg = sst2_config(tmp_path, tiny_model, *sst2_small, max_steps=6)
    cfg["strategy"] = strategy
    assert run_cli("train", str(write_config(tmp_path / "c.yaml", cfg)), "--name", "s") == 0
    after = load_file(tmp_path / "runs" / "s" / "model" / "model.safetensors")
    before = {f"bert.{k}": v for k, v in AutoModel.from_pretrained(tiny_model).state_dict().items()}
    torch.manual_seed(42)  # the seed the run builds its new head with: the head as it was before training
    before.update({k: v for k, v in build_model(str(tiny_model), ["negative", "positive"], False)[0].state_dict().items()
                   if k.startswith("classifier.")})
    for name, w in after.items():
        if name.startswith(frozen):
            assert torch.equal(w, before[name]), name
    for prefix in trained:  # every trained part moved: the head included
        moved = [n for n in after if n.startswith(prefix) and not torch.equal(after[n], before[n])]
        assert moved, f"nothing under {prefix} changed"
    assert (after["classifier.weight"] - before["classifier.weight"]).abs().max() > 1e-4


def test_goemotions_multi_label(tmp_path, tiny_model):
    """Multi-label: comma-separated ids, names from emotions.txt, sigmoid outputs, F1 and subset accuracy."""
    train_rows = GOEMOTIONS.joinpath("train.tsv").read_text(encoding="utf-8").splitlines()[:800]
    dev_rows = GOEMOTIONS.joinpath("dev.tsv").read_text(encoding="utf-8").splitlines()[:300]
    (tmp_path / "train.tsv").write_text("\n".join(train_rows) + "\n", encoding="utf-8")
    (tmp_path / "dev.tsv").write_text("\n".join(dev_rows) + "\n", encoding="utf-8")
    cfg = yaml.safe_load((ROOT / "examples" / "goemotions.yaml").read_text())
    cfg["model"] = str(tiny_model)
    cfg["data"].update(train=str(tmp_path / "train.tsv"), validation=str(tmp_path / "dev.tsv"), test=None,
                       labels_file=str(GOEMOTIONS / "emotions.txt"))
    cfg["training"].update(max_steps=10, lr=1e-3, progress=False)
    cfg["output"] = {"dir": str(tmp_path / "runs")}
    assert run_cli("train", str(write_config(tmp_path / "g.yaml", cfg)), "--name", "g") == 0
    final = json.loads((tmp_path / "runs" / "g" / "metrics.json").read_text())["validation"]
    assert {"f1_micro", "f1_macro", "subset_accuracy"} <= set(final) and final["n"] == 300
    assert "neutral" in final["per_class"] and len(final["per_class"]) == 28
    from transformers import AutoConfig

    conf = AutoConfig.from_pretrained(tmp_path / "runs" / "g" / "model")
    assert conf.problem_type == "multi_label_classification" and conf.id2label[27] == "neutral"


def best_constant_micro_f1(train_sets: list[set], dev_sets: list[set]) -> float:
    """The best micro-F1 of a predictor that answers every text with the same labels: the k most
    frequent training labels, for the best k."""
    from collections import Counter

    order = [label for label, _ in Counter(x for s in train_sets for x in s).most_common()]
    best = 0.0
    for k in range(1, len(order) + 1):
        guess = set(order[:k])
        tp = sum(len(guess & s) for s in dev_sets)
        fp, fn = len(guess) * len(dev_sets) - tp, sum(len(s) for s in dev_sets) - tp
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


def test_minilm_learns_multi_label_goemotions_with_the_default_metric(tmp_path, capsys):
    """Real GoEmotions comments labelled only with admiration, amusement, gratitude, love or neutral
    (several per comment possible), with the multi-label defaults only: no training.metric (micro-F1 picks
    the model), no threshold (tuned on validation, saved with the model, used by predict), no head LR of
    its own (before the prior bias and the loss summed over labels, this needed head_lr 3e-3 to learn)."""
    keep = {"0", "1", "15", "18", "27"}

    def subset(split: str, cap: int) -> tuple[str, list[set]]:
        rows = [line for line in GOEMOTIONS.joinpath(f"{split}.tsv").read_text(encoding="utf-8").splitlines()
                if set(line.split("\t")[1].split(",")) <= keep][:cap]
        (tmp_path / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        return str(tmp_path / f"{split}.tsv"), [set(line.split("\t")[1].split(",")) for line in rows]

    (train, train_sets), (dev, dev_sets) = subset("train", 1500), subset("dev", 300)
    cfg = write_config(tmp_path / "g.yaml", {
        "version": 1, "model": "minilm", "task": {"type": "classification", "multi_label": True},
        "data": {"train": train, "validation": dev, "columns": ["text", "labels", "comment_id"], "label_column": "labels", "max_length": 64},
        "strategy": "full",
        "training": {"epochs": 1, "batch_size": 32, "lr": 1e-4, "progress": False}, "output": {"dir": str(tmp_path / "runs")}})
    assert run_cli("train", str(cfg), "--name", "go") == 0
    run = tmp_path / "runs" / "go"
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["metric"] == "f1_micro"
    final = json.loads((run / "metrics.json").read_text())
    assert final["validation"]["n"] == 300 and set(final["validation"]["per_class"]) == keep  # the five labels seen, no more
    constant = best_constant_micro_f1(train_sets, dev_sets)  # about 0.50 (everything "neutral")
    assert final["validation"]["f1_micro"] > constant + 0.15, (final["validation"]["f1_micro"], constant)
    assert final["validation"]["roc_auc"] > 0.85
    saved = json.loads((run / "model" / "config.json").read_text())["weitiao_threshold"]
    assert saved == final["validation"]["threshold"] and 0.05 <= saved <= 0.95
    capsys.readouterr()
    assert run_cli("predict", str(run), "--text", "Thank you so much, this is really helpful!") == 0
    assert "15" in json.loads(capsys.readouterr().out)["label"]  # gratitude
