"""NER end to end on real data: MiniLM on a WNUT 2017 subset trains, evaluates, predicts with
character offsets, reloads in plain transformers (pipeline parity) and through the Python API."""

from __future__ import annotations

import json

import pytest

from helpers import DATA, write_config
from weitiao.cli import main

WNUT = DATA / "wnut17"


def sentences(path, n: int) -> list[str]:
    return path.read_text(encoding="utf-8").replace("\n\t\n", "\n\n").split("\n\n")[:n]


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ner")
    dev = tmp / "dev.conll"
    dev.write_text("\n\n".join(sentences(WNUT / "emerging.dev.conll", 400)) + "\n", encoding="utf-8")
    # Every sub-word labelled, so that transformers' pipeline with aggregation "simple" (which reads
    # each sub-word's own prediction) can agree with weitiao too; the default (first sub-word only)
    # is trained on real data in examples/wnut17.yaml and on synthetic data in tests/test_tasks.py.
    cfg = {"version": 1, "model": "minilm", "task": {"type": "token_classification", "label_all_subwords": True},
           "data": {"train": str(WNUT / "wnut17train.conll"), "validation": str(dev), "format": "conll", "train_limit": 1500, "max_length": 64},
           "strategy": "full",
           "training": {"epochs": 3, "batch_size": 32, "lr": 2e-4, "progress": False, "log_every": 5},
           "output": {"dir": str(tmp / "runs")}}
    assert main(["train", str(write_config(tmp / "wnut.yaml", cfg)), "--name", "ner"]) == 0
    return tmp / "runs" / "ner", dev


def predict_json(capsys, *args) -> list[dict]:
    capsys.readouterr()
    assert main(["predict", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_ner_learns_entities_that_a_constant_predictor_cannot(ner_run):
    run, _ = ner_run
    metrics = json.loads((run / "metrics.json").read_text())
    v = metrics["validation"]
    # Tagging every word O (the best constant) finds no entity: F1 0, token accuracy = share of O.
    assert v["f1"] > 0.15, v
    assert v["precision"] > 0 and v["recall"] > 0 and set(v["per_type"]) == {"corporation", "creative-work", "group", "location", "person", "product"}
    assert v["per_type"]["person"]["f1"] > 0.3
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r and "step" in r]
    assert losses[-1] < 0.5 * losses[0]


def test_eval_on_a_file_gives_the_saved_scores(ner_run, capsys):
    run, dev = ner_run
    capsys.readouterr()
    assert main(["eval", str(run), "--data", str(dev)]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((run / "metrics.json").read_text())["validation"]
    assert printed["f1"] == pytest.approx(saved["f1"], abs=1e-9) and printed["n"] == 400


def test_predict_gives_entities_with_character_offsets(ner_run, capsys):
    run, _ = ner_run
    text = "Barack Obama flew to Paris with @paulwalk on Monday to watch Star Wars ."
    (row,) = predict_json(capsys, str(run), "--text", text)
    assert row["text"] == text and len(row["words"]) == len(row["tags"])
    assert row["entities"], row
    for e in row["entities"]:
        assert text[e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1 and e["type"] in {"person", "location", "group", "corporation", "product", "creative-work"}
    assert any(e["type"] == "person" and "Obama" in e["text"] for e in row["entities"]), row["entities"]


@pytest.mark.parametrize("aggregation, share", [("first", 1.0), ("simple", 0.9)])  # simple: 113 of 120 measured
def test_the_saved_model_loads_in_transformers_and_its_pipeline_finds_the_same_entities(ner_run, capsys, aggregation, share):
    """"first" reads a word at its first sub-word, as weitiao does: identical. "simple" reads every
    sub-word's own tag, so a word whose later pieces are tagged otherwise is split; with every
    sub-word trained (this run) that is rare."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    run, dev = ner_run
    model = AutoModelForTokenClassification.from_pretrained(run / "model")
    tag = pipeline("token-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(run / "model"),
                   aggregation_strategy=aggregation, device=-1)
    texts = [" ".join(line.split("\t")[0] for line in s.splitlines() if line.strip()) for s in sentences(dev, 120)]
    ours = predict_json(capsys, str(run), "--text", *texts)
    same = sum({(e["start"], e["end"], e["entity_group"]) for e in tag(text)} == {(e["start"], e["end"], e["type"]) for e in row["entities"]}
               for text, row in zip(texts, ours))
    assert same >= share * len(texts), f"{same} of {len(texts)} sentences with the same entities"


def test_python_api_loads_the_run_and_predicts_what_the_cli_prints(ner_run, capsys):
    import weitiao

    run, _ = ner_run
    handle = weitiao.load(run)
    assert handle.path == run and handle.metrics["validation"]["f1"] > 0
    text = "Taylor Swift played in London last night"
    assert handle.predict([text]) == predict_json(capsys, str(run), "--text", text)
    with pytest.raises(weitiao.WeitiaoError, match=r"--text: text 1 is empty"):
        handle.predict([""])


def test_predict_a_conll_file_of_words_into_csv(ner_run, tmp_path):
    import csv

    run, _ = ner_run
    words = tmp_path / "words.conll"
    words.write_text("Elon\nMusk\nbought\nTwitter\n\nhello\nworld\n", encoding="utf-8")
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), "--file", str(words), "--output", str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["text"] for r in rows] == ["Elon Musk bought Twitter", "hello world"]
    assert all(isinstance(json.loads(r["entities"]), list) and len(r["tags"].split()) == len(r["text"].split()) for r in rows)
