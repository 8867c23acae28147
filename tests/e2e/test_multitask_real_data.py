"""Multi-task on real data: SST-2 sentiment and WNUT-17 entities learned at once by MiniLM (subsets)."""

from __future__ import annotations

import json

from helpers import DATA, write_config


def test_sst2_and_wnut17_on_one_encoder(tmp_path):
    from weitiao.cli import main

    dev = (DATA / "wnut17/emerging.dev.conll").read_text(encoding="utf-8").replace("\n\t\n", "\n\n").split("\n\n")[:300]
    (tmp_path / "wnut_dev.conll").write_text("\n\n".join(dev) + "\n", encoding="utf-8")
    cfg = {"version": 1, "model": "minilm",
           "task": {"type": "multitask", "tasks": {
               "sentiment": {"type": "classification", "data": {"train": str(DATA / "sst2/train.tsv"), "validation": str(DATA / "sst2/dev.tsv"),
                                                                 "text_column": "sentence", "train_limit": 300}},
               "entities": {"type": "token_classification", "data": {"train": str(DATA / "wnut17/wnut17train.conll"),
                                                                      "validation": str(tmp_path / "wnut_dev.conll"),
                                                                      "format": "conll", "train_limit": 600}}}},
           "data": {"max_length": 64},
           "training": {"epochs": 2, "batch_size": 32, "lr": 3e-4, "progress": False}, "output": {"dir": str(tmp_path)}}
    assert main(["train", str(write_config(tmp_path / "mt.yaml", cfg)), "--name", "mt"]) == 0
    metrics = json.loads((tmp_path / "mt" / "metrics.json").read_text())["validation"]
    assert metrics["sentiment/accuracy"] > 0.65  # the majority class of SST-2 dev: 0.51 (0.747 measured)
    # Tagging every word O (the best constant answer) finds no entity: entity F1 0. The entity head
    # learns real entities from 600 sentences beside the sentiment head (F1 0.293 measured).
    assert metrics["entities/f1"] > 0.15, metrics
    assert metrics["entities/precision"] > 0.2 and metrics["entities/recall"] > 0.1
    assert metrics["mean"] == (metrics["sentiment/accuracy"] + metrics["entities/f1"]) / 2
