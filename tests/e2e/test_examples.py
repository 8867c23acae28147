"""Every file in examples/ runs as shipped, on slices of its own data: the config's fields, data
formats, paths and model load together (quality on the full data: benchmarks/examples.py; the
real-data runs of each task: the other tests in tests/e2e/).

Each example trains for 2 steps of 4 rows (from its first 64 training rows) and is scored on 32 validation
(and test) rows written in the example's own format; everything else is the shipped file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, write_config

from weitiao.cli import main

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def sliced(path: Path, out: Path, n: int) -> Path:
    """The first n rows of a data file (or n images of each class of an ImageFolder) in its own format."""
    if path.is_dir():
        for cls in sorted(p for p in path.iterdir() if p.is_dir()):
            (out / cls.name).mkdir(parents=True)
            for f in sorted(cls.iterdir())[:n]:
                (out / cls.name / f.name).symlink_to(f)
        return out
    if path.suffix == ".gz":
        return path  # one compressed file with a split: data.train_limit keeps the run small
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        out.write_text(json.dumps(json.loads(text)[:n]), encoding="utf-8")
    elif path.suffix in (".conll", ".annotated"):
        out.write_text("\n\n".join(text.replace("\n\t\n", "\n\n").split("\n\n")[:n]) + "\n", encoding="utf-8")
    else:
        out.write_text("\n".join(text.splitlines()[: n + 1]) + "\n", encoding="utf-8")  # + a header, where there is one
    return out


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_example_runs_as_shipped(example, tmp_path):
    cfg = yaml.safe_load(example.read_text())
    task = cfg["task"] if isinstance(cfg["task"], dict) else {"type": cfg["task"]}
    members = task.get("tasks", {})  # a multi-task example: each task names its own data
    for name, data in [("", cfg["data"])] + [(f"{m}_", spec.get("data", {})) for m, spec in members.items()]:
        for key, n in (("train", 64), ("validation", 32), ("test", 32)):
            if data.get(key):
                source = (ROOT / data[key]).resolve()
                assert source.exists(), f"{example.name}: {name}data.{key} {data[key]} is missing"
                data[key] = str(sliced(source, tmp_path / f"{name}{key}{''.join(source.suffixes)}", n))
        if data.get("labels_file"):
            data["labels_file"] = str((ROOT / data["labels_file"]).resolve())
        if data.get("train"):
            data["train_limit"] = 64
    if "generate" in task:
        task["generate"] = {**task["generate"], "samples": 2, "max_new_tokens": 8}
    cfg["task"] = task
    cfg["training"] = {**cfg.get("training", {}), "max_steps": 2, "batch_size": 4, "progress": False}
    cfg["output"] = {"dir": str(tmp_path / "runs")}
    assert main(["train", str(write_config(tmp_path / example.name, cfg)), "--name", example.stem]) == 0
    run = tmp_path / "runs" / example.stem
    final = json.loads((run / "metrics.json").read_text())
    assert final["train"]["steps"] == 2
    assert final["validation"]["n"] > 0 and math.isfinite(final["validation"]["loss"])
    assert (run / "model" / "config.json").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["model"] == cfg["model"]
