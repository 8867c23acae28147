"""Chinese NER's BMES scheme (B, M, E, S, O; one character a token): read and detected, checked,
scored strictly as BIOES (M- is BIOES's I-), trained, and predicted on raw text without spaces with
character offsets right."""

from __future__ import annotations

import json
import random

import pytest
from helpers import tiny_bert, write_config

from weitiao.cli import main
from weitiao.errors import UserError
from weitiao.tasks.token_classification import tags as T
from weitiao.tasks.token_classification.reader import TagReader, label_scheme

NAMES = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊"]  # two characters: B-PER E-PER
PLACES = ["北京市", "上海市", "广州市", "深圳市"]  # three: B-LOC M-LOC E-LOC
FILLERS = ["在", "去", "住在", "喜欢", "离开"]
ENDS = ["工作", "学习", "旅游", "", "了"]


def bmes(word: str, kind: str) -> list[str]:
    if len(word) == 1:
        return [f"S-{kind}"]
    return [f"B-{kind}"] + [f"M-{kind}"] * (len(word) - 2) + [f"E-{kind}"]


def sentence(rng: random.Random) -> list[tuple[str, str]]:
    name, place, filler, end = rng.choice(NAMES), rng.choice(PLACES), rng.choice(FILLERS), rng.choice(ENDS)
    chars = list(zip(name, bmes(name, "PER"))) + [(c, "O") for c in filler] + list(zip(place, bmes(place, "LOC")))
    if rng.random() < 0.3:
        chars += [("和", "O"), ("京", "S-LOC")]  # a one-character entity
    return chars + [(c, "O") for c in end]


def write_conll(path, sentences) -> str:
    path.write_text("\n\n".join("\n".join(f"{c}\t{t}" for c, t in s) for s in sentences) + "\n", encoding="utf-8")
    return str(path)


class Data:
    format, tokens_column, tags_column, labels, labels_file = "conll", "tokens", "tags", None, None


def test_a_bmes_file_is_detected_and_its_label_set_keeps_m(tmp_path):
    rng = random.Random(0)
    path = write_conll(tmp_path / "train.txt", [sentence(rng) for _ in range(20)])
    reader = TagReader(Data())
    ex, labels = reader.read(path, "data.train", None)
    assert reader.found == "BMES" and label_scheme(labels.names) == "BMES"
    assert labels.names == ["O", "B-LOC", "M-LOC", "E-LOC", "S-LOC", "B-PER", "M-PER", "E-PER", "S-PER"]
    assert ex.text[0][:2] == tuple(NAMES[0]) or len(ex.text[0][0]) == 1  # one character a token


def test_a_broken_bmes_sequence_names_its_line_and_scheme(tmp_path):
    path = write_conll(tmp_path / "bad.txt", [[("北", "B-LOC"), ("京", "M-LOC"), ("在", "O")]])  # B M without E
    with pytest.raises(UserError, match=r"line 3: tag 'O' breaks BMES"):
        TagReader(Data()).read(path, "data.train", None)


def test_bmes_scores_equal_the_same_tags_written_in_bioes():
    gold = [["B-PER", "E-PER", "O", "B-LOC", "M-LOC", "E-LOC", "S-LOC"], ["S-PER", "O", "B-LOC", "M-LOC", "M-LOC", "E-LOC"]]
    pred = [["B-PER", "E-PER", "O", "B-LOC", "M-LOC", "O", "S-LOC"], ["S-PER", "O", "B-LOC", "M-LOC", "M-LOC", "E-LOC"]]
    as_bioes = lambda seqs: [[t.replace("M-", "I-") for t in s] for s in seqs]  # noqa: E731
    ours = T.strict_scores(gold, pred, "BMES")["micro"]
    assert ours == T.strict_scores(as_bioes(gold), as_bioes(pred), "BIOES")["micro"]
    assert ours["support"] == 5 and ours["precision"] == 1.0 and ours["recall"] == 0.8  # the B M O is no entity, strictly
    assert T.repair(["M-LOC", "E-LOC", "O", "B-PER"], "BMES") == ["B-LOC", "E-LOC", "O", "S-PER"]  # repaired in BMES's own tags


def test_bmes_trains_and_predicts_raw_chinese_with_character_offsets(tmp_path, capsys):
    rng = random.Random(1)
    train = write_conll(tmp_path / "train.txt", [sentence(rng) for _ in range(300)])
    dev = write_conll(tmp_path / "dev.txt", [sentence(rng) for _ in range(60)])
    cfg = write_config(tmp_path / "c.yaml", {
        "version": 1, "model": str(tiny_bert(tmp_path / "tiny", hidden=64)), "task": "token_classification",
        "data": {"train": train, "validation": dev},
        "strategy": "full", "training": {"epochs": 8, "batch_size": 16, "lr": 3e-3, "warmup_ratio": 0.0, "progress": False},
        "output": {"dir": str(tmp_path / "runs")}})
    assert main(["train", str(cfg), "--name", "zh"]) == 0
    run = tmp_path / "runs" / "zh"
    final = json.loads((run / "metrics.json").read_text())["validation"]
    assert final["f1"] > 0.9, final  # a constant O predictor scores 0
    labels = json.loads((run / "model" / "config.json").read_text())["id2label"].values()
    assert "M-LOC" in labels and "I-LOC" not in labels
    capsys.readouterr()
    text = "王芳住在上海市工作"
    assert main(["predict", str(run), "--text", text]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["words"] == list(text)  # every character a word, though the text has no spaces
    found = {(e["text"], e["type"], e["start"], e["end"]) for e in out["entities"]}
    assert found == {("王芳", "PER", 0, 2), ("上海市", "LOC", 4, 7)}, out["entities"]
    assert out["tags"][4:7] == ["B-LOC", "M-LOC", "E-LOC"]
