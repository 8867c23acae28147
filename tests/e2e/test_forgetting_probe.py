"""End-to-end: the forgetting probe (`strategy.probe: <run folder>`), checked with numbers.

Run A learns SST-2 sentiment with a tiny BERT. Runs B then learn the opposite task (the same
sentences with their labels flipped) with `strategy.probe: runs/A`: A's head and A's validation
file, scored over B's encoder before and after B's training. Every number the probe reports is
also recomputed here by hand with plain transformers (A's classifier and pooler, the other
encoder's weights loaded under them), so a probe that scored the wrong encoder, the wrong data or
the wrong head would fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, sst2_slice, tiny_bert, write_config, write_rows

from weitiao.cli import main

MAX_LENGTH = 32
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run_cli(*args: str) -> int:
    return main(list(args))


def flipped(src, dst):
    """The same TSV with every SST-2 label turned over (0 <-> 1): the opposite task."""
    header, *rows = src.read_text(encoding="utf-8").splitlines()
    return write_rows(dst, header, [f"{text}\t{1 - int(label)}" for text, label in (r.rsplit("\t", 1) for r in rows)])


def config(tmp, model, train, dev, strategy="full", **training) -> dict:
    return {
        "version": 1, "model": str(model), "task": "classification",
        "data": {"train": str(train), "validation": str(dev), "text_column": "sentence", "label_column": "label",
                 "labels": ["negative", "positive"], "max_length": MAX_LENGTH},
        "strategy": strategy,
        "training": {"epochs": 3, "batch_size": 32, "lr": 3e-3, "device": "cpu", "progress": False, **training},
        "output": {"dir": str(tmp / "runs")},
    }


def metrics(run) -> dict:
    return json.loads((run / "metrics.json").read_text())


def encoder_weights(folder) -> dict:
    """The encoder (embeddings + layers) of a saved BERT folder, without `bert.`, pooler or classifier."""
    from safetensors.torch import load_file

    state = {k.removeprefix("bert."): v for k, v in load_file(folder / "model.safetensors").items()}
    return {k: v for k, v in state.items() if not k.startswith(("pooler.", "classifier."))}


@torch.no_grad()
def score_by_hand(run_a, encoder_folder, dev) -> dict:
    """Accuracy and loss of A's head (classifier + pooler) over another encoder on a labelled TSV."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(run_a / "model").eval()
    missing, unexpected = model.bert.load_state_dict(encoder_weights(encoder_folder), strict=False)
    assert not unexpected and all(k.startswith("pooler.") for k in missing), (missing, unexpected)
    tokenizer = AutoTokenizer.from_pretrained(run_a / "model")
    _, *rows = dev.read_text(encoding="utf-8").splitlines()
    texts, labels = zip(*(r.rsplit("\t", 1) for r in rows))
    batch = tokenizer([t.strip() for t in texts], truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
    logits = model(**batch).logits
    y = torch.tensor([int(label) for label in labels])
    return {"accuracy": (logits.argmax(-1) == y).sum().item() / len(y),
            "loss": torch.nn.functional.cross_entropy(logits, y).item(), "n": len(y)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Run A (SST-2, 3,000 training sentences, 200 dev) and the flipped data for the B runs."""
    tmp = tmp_path_factory.mktemp("probe")
    bert = tiny_bert(tmp / "bert")
    train, dev = sst2_slice(tmp, 3000, 200)
    cfg = write_config(tmp / "a.yaml", config(tmp, bert, train, dev))
    assert run_cli("train", str(cfg), "--name", "A") == 0
    return {"tmp": tmp, "bert": bert, "dev": dev, "A": tmp / "runs" / "A",
            "flipped_train": flipped(train, tmp / "flipped_train.tsv"), "flipped_dev": flipped(dev, tmp / "flipped_dev.tsv")}


def train_b(s, name: str, start, method: str, **training) -> dict:
    strategy = {"method": method, "probe": str(s["A"])}
    cfg = config(s["tmp"], start, s["flipped_train"], s["flipped_dev"], strategy, **{"epochs": 1, **training})
    assert run_cli("train", str(write_config(s["tmp"] / f"{name}.yaml", cfg)), "--name", name) == 0
    return metrics(s["tmp"] / "runs" / name)


@pytest.fixture(scope="module")
def run_a(setup):
    a = metrics(setup["A"])["validation"]
    assert a["n"] == 200
    assert a["accuracy"] >= 0.64, a  # measured 0.73; a fresh head on this encoder gets 0.495 (all one class)
    return a


def test_run_a_learned_sst2(setup, run_a):
    by_hand = score_by_hand(setup["A"], setup["A"] / "model", setup["dev"])  # A's own encoder: A itself
    assert by_hand["accuracy"] == run_a["accuracy"] and by_hand["loss"] == pytest.approx(run_a["loss"], abs=1e-4)
    fresh = score_by_hand(setup["A"], setup["bert"], setup["dev"])  # A's head over the untrained encoder
    assert run_a["accuracy"] > fresh["accuracy"] + 0.12, (run_a, fresh)


def test_full_fine_tuning_on_flipped_labels_forgets_run_a(setup, run_a, capsys):
    """B starts from A's model: `before` is A itself on A's dev file; learning the opposite task
    inverts the encoder's sentiment features, and the probe sees A's accuracy fall below chance."""
    capsys.readouterr()
    b = train_b(setup, "forget", setup["A"] / "model", "full")
    out = capsys.readouterr().out
    probe = b["probe"]
    assert probe["run"] == str(setup["A"])
    before, after = probe["before"], probe["after"]
    assert {"accuracy", "f1_macro", "roc_auc", "loss"} <= set(before) and set(after) == set(before)

    # (a) before = run A's own validation numbers: A's head, A's encoder, A's 200 dev rows with A's labels
    # (on B's flipped dev file the same model scores 1 - accuracy; on B's train file, other numbers).
    assert before["accuracy"] == run_a["accuracy"]
    for key in ("f1_macro", "roc_auc", "loss"):
        assert before[key] == pytest.approx(run_a[key], abs=1e-4), key

    # (b) forgetting: measured 0.730 -> 0.275 accuracy, ROC AUC 0.78 -> 0.25, loss 0.56 -> 0.89
    assert after["accuracy"] < 0.45 and after["accuracy"] < before["accuracy"] - 0.2, (before, after)
    assert after["roc_auc"] < 0.4 and after["loss"] > before["loss"] + 0.2, (before, after)
    assert b["validation"]["accuracy"] > 0.6  # B did learn its own (flipped) task: measured 0.67

    # `after` is A's head over B's saved (best) encoder, on A's dev file, recomputed by hand.
    by_hand = score_by_hand(setup["A"], setup["tmp"] / "runs" / "forget" / "model", setup["dev"])
    assert by_hand["n"] == run_a["n"]
    assert after["accuracy"] == by_hand["accuracy"] and after["loss"] == pytest.approx(by_hand["loss"], abs=1e-4)

    assert f"forgetting probe ({setup['A']}): accuracy {before['accuracy']:.4f} -> {after['accuracy']:.4f}" in out
    final = [json.loads(line) for line in (setup["tmp"] / "runs" / "forget" / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["final"]["probe"] == probe


def test_head_only_leaves_the_probe_unchanged(setup, run_a):
    """(c) The encoder is frozen, so A's head over it scores exactly the same after as before,
    although B's own head learned the flipped task."""
    b = train_b(setup, "frozen", setup["A"] / "model", "head_only")
    before, after = b["probe"]["before"], b["probe"]["after"]
    assert before["accuracy"] == run_a["accuracy"]
    assert after == before  # every metric, bit for bit
    assert b["validation"]["accuracy"] > 0.6  # measured 0.74 on the flipped dev file: the head did train
    a_enc, b_enc = encoder_weights(setup["A"] / "model"), encoder_weights(setup["tmp"] / "runs" / "frozen" / "model")
    assert a_enc.keys() == b_enc.keys() and all(torch.equal(a_enc[k], b_enc[k]) for k in a_enc)


def test_before_is_scored_with_this_runs_initial_encoder(setup, run_a):
    """B starts from the untrained tiny BERT (A's base model), not from A: `before` is A's head
    over that encoder, so it is not A's accuracy; `after` is A's head over B's trained encoder."""
    b = train_b(setup, "from_base", setup["bert"], "full")
    before, after = b["probe"]["before"], b["probe"]["after"]
    expected = score_by_hand(setup["A"], setup["bert"], setup["dev"])
    assert before["accuracy"] == expected["accuracy"] and before["loss"] == pytest.approx(expected["loss"], abs=1e-4)
    assert before["accuracy"] < run_a["accuracy"] - 0.12  # measured 0.495 vs 0.70
    expected = score_by_hand(setup["A"], setup["tmp"] / "runs" / "from_base" / "model", setup["dev"])
    assert after["accuracy"] == expected["accuracy"] and after["loss"] == pytest.approx(expected["loss"], abs=1e-4)
    assert abs(after["loss"] - before["loss"]) > 0.02  # the encoder moved, and the probe saw it (0.786 -> 0.842)


def test_probe_of_a_folder_without_a_model_is_refused(setup, tmp_path):
    """(d) exit code 2, one `error: strategy.probe:` line, no traceback, no run folder."""
    unfinished = tmp_path / "unfinished"  # a run that never finished: config.yaml, no model/
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((setup["A"] / "config.yaml").read_text())
    cfg = config(tmp_path, setup["bert"], setup["flipped_train"], setup["flipped_dev"], {"method": "full", "probe": str(unfinished)})
    proc = subprocess.run([sys.executable, "-m", "weitiao", "train", str(write_config(tmp_path / "b.yaml", cfg)), "--name", "bad"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and proc.returncode == 2, proc.stderr
    assert lines[0].startswith("error: strategy.probe: ") and f"'{unfinished}' is not a finished run folder" in lines[0]
    assert "; fix: " in lines[0]
    assert not (tmp_path / "runs" / "bad").exists()


def test_probe_of_a_different_encoder_is_refused(setup, tmp_path, capsys):
    wider = tiny_bert(tmp_path / "wider", hidden=48)
    cfg = config(tmp_path, wider, setup["flipped_train"], setup["flipped_dev"], {"method": "full", "probe": str(setup["A"])})
    capsys.readouterr()
    assert run_cli("train", str(write_config(tmp_path / "b.yaml", cfg)), "--name", "bad") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: strategy.probe: ") and f"the encoder of '{setup['A']}' differs from this run's" in err, err
    assert not (tmp_path / "runs" / "bad").exists()


def test_probe_of_a_run_with_a_validation_split_uses_that_split(setup, tmp_path):
    from weitiao.evaluate.forgetting import ForgettingProbe

    cfg = config(tmp_path, setup["bert"], setup["flipped_train"], None, max_steps=2)
    del cfg["data"]["validation"]  # split off 10% of the 3,000 rows
    assert run_cli("train", str(write_config(tmp_path / "a.yaml", cfg)), "--name", "split") == 0
    n = metrics(tmp_path / "runs" / "split")["validation"]["n"]
    assert n == 300
    probe = ForgettingProbe(str(tmp_path / "runs" / "split"), 128)
    assert len(probe.data) == n
    # the same rows: the run's own encoder under its own head scores what the run reported on them
    own = probe.score(probe.encoder_state(probe.model), "cpu")
    assert abs(own["accuracy"] - metrics(tmp_path / "runs" / "split")["validation"]["accuracy"]) < 1e-9


def test_probe_of_a_deeper_encoder_is_refused(setup, tmp_path, capsys):
    shallow = tiny_bert(tmp_path / "shallow", layers=1)  # A has 2 layers: its layer 1 would be scored with this run's layer 0
    cfg = config(tmp_path, shallow, setup["flipped_train"], setup["flipped_dev"], {"method": "full", "probe": str(setup["A"])}, max_steps=2)
    capsys.readouterr()
    assert run_cli("train", str(write_config(tmp_path / "b.yaml", cfg)), "--name", "bad") == 2
    assert "error: strategy.probe: " in capsys.readouterr().err
