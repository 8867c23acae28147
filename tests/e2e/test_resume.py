"""Exact resume: a run killed with SIGKILL and resumed ends bitwise identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import pytest
import torch
from helpers import ROOT, sst2_slice, tiny_bert, write_config
from safetensors.torch import load_file

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    model = tiny_bert(tmp / "bert")  # dropout 0.1 stays on: the RNG state must be restored too
    train, dev = sst2_slice(tmp, 320, 100)
    cfg = {
        "version": 1, "model": str(model),
        "data": {"train": str(train), "validation": str(dev), "text_column": "sentence", "label_column": "label", "max_length": 48},
        "training": {"epochs": 2, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 5, "eval_every": 10, "keep_checkpoints": 2,
                     "progress": False, "num_threads": 2},
        "output": {"dir": str(tmp / "runs")},
    }
    config = write_config(tmp / "c.yaml", cfg)
    ref = train_cli(config, "reference")
    assert ref.returncode == 0, ref.stderr
    return tmp, config


def train_cli(config, name, *extra, crash=None, wait=True):
    env = dict(ENV, WEITIAO_CRASH_AT=crash) if crash else ENV
    args = [sys.executable, "-m", "weitiao", "train", str(config), "--name", name, *extra]
    if not wait:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def assert_same_run(tmp, name, reference="reference"):
    ref, run = tmp / "runs" / reference, tmp / "runs" / name
    a, b = load_file(ref / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (ref, run))
    assert ma["validation"] == mb["validation"]
    assert ma["train"]["steps"] == mb["train"]["steps"] == 40
    cache = lambda m: m["train"]["feature_cache"] and m["train"]["feature_cache"]["frozen_layers"]  # noqa: E731
    assert cache(ma) == cache(mb)
    evals = lambda r: [x["eval"] for x in map(json.loads, (r / "metrics.jsonl").read_text().splitlines()) if "eval" in x]  # noqa: E731
    assert evals(ref) == evals(run)  # the log has each evaluation once, with the same numbers


# step:20 and checkpoint:20 (a kill in the last epoch) run with `make test-all`: the default run keeps
# one kill mid-step and one mid-checkpoint, and the registry matrix kills every task at step 7.
@pytest.mark.parametrize("crash", ["step:7", "checkpoint:15", pytest.param("step:20", marks=pytest.mark.slow),
                                   pytest.param("checkpoint:20", marks=pytest.mark.slow)])
def test_killed_and_resumed_run_is_bitwise_identical(setup, crash):
    tmp, config = setup
    name = "killed-" + crash.replace(":", "-")
    killed = train_cli(config, name, crash=crash)
    assert killed.returncode == -9  # SIGKILL
    run = tmp / "runs" / name
    assert not (run / "metrics.json").exists()
    leftovers = list((run / "checkpoints").glob(".tmp*"))
    assert leftovers if crash.startswith("checkpoint") else not leftovers  # the torn write is still there...
    resumed = train_cli(config, name, "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert_same_run(tmp, name)  # ...and ignored: resume used the last complete checkpoint


def test_resume_is_exact_with_the_feature_cache_on(setup):
    """head_only: the frozen encoder's output is cached; a resumed run rebuilds the same cache."""
    tmp, config = setup
    head_only = ("--set", "strategy.method=head_only")
    assert train_cli(config, "cached-reference", *head_only).returncode == 0
    assert train_cli(config, "cached", *head_only, crash="step:13").returncode == -9
    resumed = train_cli(config, "cached", "--resume", str(tmp / "runs" / "cached"), *head_only)
    assert resumed.returncode == 0, resumed.stderr
    assert "feature cache: embeddings and layers 0-1 of 2 run once" in resumed.stdout
    assert_same_run(tmp, "cached", reference="cached-reference")


def test_kill_at_a_random_moment(setup):
    tmp, config = setup
    proc = train_cli(config, "random-kill", wait=False)
    ckpts = tmp / "runs" / "random-kill" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not list(ckpts.glob("step-*")):
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 1.5))
    proc.kill()
    proc.wait()
    resumed = train_cli(config, "random-kill", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp, "random-kill")


def test_corrupt_checkpoint_falls_back_to_the_previous_one(setup):
    tmp, config = setup
    assert train_cli(config, "corrupt", crash="step:12").returncode == -9
    ckpts = sorted((tmp / "runs" / "corrupt" / "checkpoints").glob("step-*"))
    assert [c.name for c in ckpts] == ["step-00000005", "step-00000010"]
    with open(ckpts[-1] / "state.pt", "r+b") as f:  # flip bytes in the newest checkpoint
        f.seek(100)
        f.write(b"garbage!")
    resumed = train_cli(config, "corrupt", "--resume", str(tmp / "runs" / "corrupt"))
    assert resumed.returncode == 0, resumed.stderr
    assert "step-00000010 is incomplete or corrupt" in resumed.stdout and "from step-00000005" in resumed.stdout
    assert_same_run(tmp, "corrupt")


def test_resume_refuses_a_changed_config_or_data_unless_forced(setup):
    tmp, config = setup
    assert train_cli(config, "changed", crash="step:6").returncode == -9
    run = str(tmp / "runs" / "changed")
    refused = train_cli(config, "changed", "--resume", run, "--set", "training.lr=0.01")
    assert refused.returncode == 2
    assert "training.lr: 0.001 -> 0.01" in refused.stderr and "--force" in refused.stderr

    cfg = json.loads(json.dumps(__import__("yaml").safe_load(config.read_text())))
    other = tmp / "other_train.tsv"
    other.write_text(open(cfg["data"]["train"]).read().replace("\t0\n", "\t1\n", 1))
    cfg["data"]["train"] = str(other)
    moved = write_config(tmp / "moved.yaml", cfg)
    refused = train_cli(moved, "changed", "--resume", run)
    assert refused.returncode == 2 and "config differs" in refused.stderr  # the path is part of the config
    forced = train_cli(config, "changed", "--resume", run, "--set", "training.lr=0.01", "--force")
    assert forced.returncode == 0, forced.stderr


def test_data_change_is_named(setup, tmp_path):
    """Same config text, different bytes in the training file: the fingerprint catches it."""
    tmp, config = setup
    cfg = __import__("yaml").safe_load(config.read_text())
    data = tmp_path / "train.tsv"
    data.write_text(open(cfg["data"]["train"]).read())
    cfg["data"]["train"] = str(data)
    cfg["output"]["dir"] = str(tmp_path / "runs")
    c = write_config(tmp_path / "c.yaml", cfg)
    assert train_cli(c, "d", crash="step:6").returncode == -9
    data.write_text(data.read_text().replace("\t0\n", "\t1\n", 1))
    refused = train_cli(c, "d", "--resume", str(tmp_path / "runs" / "d"))
    assert refused.returncode == 2 and "data changed since the checkpoint (data.train)" in refused.stderr


def test_a_locked_run_folder_refuses_a_second_train(setup):
    from weitiao.rundir.folder import RunLock

    tmp, config = setup
    run = tmp / "runs" / "reference"
    lock = RunLock(run)
    try:
        second = train_cli(config, "reference", "--overwrite")
        assert second.returncode == 2 and "being trained into by another process" in second.stderr
        assert (run / "metrics.json").exists()  # --overwrite did not touch the locked run
    finally:
        lock.release()
