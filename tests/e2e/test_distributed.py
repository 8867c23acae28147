"""`accelerate launch` with 2 CPU processes (DDP over gloo): same run, same result, each example scored once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT, sst2_slice, write_config

ACCELERATE = shutil.which("accelerate", path=os.path.dirname(sys.executable))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow  # 44 s: two training processes over gloo (make test-all)
@pytest.mark.skipif(ACCELERATE is None, reason="the accelerate CLI is not installed beside this python")
def test_two_processes_match_one(tmp_path):
    train, dev = sst2_slice(tmp_path, 480, 151)  # an odd count: the last example belongs to one process only
    cfg = write_config(tmp_path / "c.yaml", {
        "version": 1, "model": "minilm",
        "data": {"train": str(train), "validation": str(dev), "text_column": "sentence", "label_column": "label", "max_length": 48},
        # dropout off: each process draws its own masks, which would be the only other difference
        "strategy": {"method": "full", "dropout": {"hidden": 0.0, "attention": 0.0, "classifier": 0.0}},
        "training": {"epochs": 1, "batch_size": 32, "lr": 1e-4, "eval_every": 5, "metric": "loss", "progress": False, "num_threads": 1},
        "output": {"dir": str(tmp_path / "runs")},
    })
    single = subprocess.run([sys.executable, "-m", "weitiao", "train", str(cfg), "--name", "one"], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    launch = [ACCELERATE, "launch", "--config_file", str(ROOT / "examples" / "accelerate" / "cpu_2proc.yaml"),
              "-m", "weitiao", "train", str(cfg), "--name", "two"]
    double = subprocess.run(launch, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    assert "x 2 processes" in double.stdout
    assert double.stdout.count("validation: accuracy=") == 1  # only the main process reports and writes

    one, two = (tmp_path / "runs" / n for n in ("one", "two"))
    assert json.loads((two / "env.json").read_text())["processes"] == 2
    evals = lambda run: [r["eval"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval" in r]  # noqa: E731
    assert len(evals(one)) == len(evals(two)) == 3
    for a, b in zip(evals(one), evals(two)):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)  # same global batch; only float summation order differs
        assert abs(a["accuracy"] - b["accuracy"]) <= 2 / 151
    m1, m2 = (json.loads((r / "metrics.json").read_text())["validation"] for r in (one, two))
    assert m2["n"] == 151 and sum(sum(row) for row in m2["confusion_matrix"]) == 151  # every example exactly once
    assert m2["loss"] == pytest.approx(m1["loss"], abs=1e-4)
    first, last = evals(two)[0], evals(two)[-1]
    assert last["loss"] < first["loss"] - 0.01 and last["roc_auc"] > 0.7  # it did learn, so agreeing means something


@pytest.mark.parametrize("name", ["cpu_2proc.yaml", "ddp_4gpu.yaml", "fsdp_8gpu.yaml", "deepspeed_zero2.yaml"])
def test_example_accelerate_configs_parse(name):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(ROOT / "examples" / "accelerate" / name))
    assert cfg.num_processes >= 2 and cfg.distributed_type.value in ("MULTI_GPU", "FSDP", "DEEPSPEED")
