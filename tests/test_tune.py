"""`weitiao tune`: the search space from the config, trials as normal runs, best.yaml, resume after a kill.

Tiny BERT on the keyword sentiment (tests/test_tasks.py's data); the metric is the validation ROC AUC.
The test plants the best learning rate: 1e-7 leaves the model where it started (AUC 0.70), 3e-3 learns (0.95).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, tiny_bert, write_config

from weitiao.errors import UserError


@pytest.fixture(scope="module")
def search_config(tmp_path_factory) -> tuple[Path, Path]:
    from test_tasks import classification_data

    tmp = tmp_path_factory.mktemp("tune")
    cfg = {"version": 1, "model": str(tiny_bert(tmp / "tiny")), **classification_data(tmp, random.Random(0)), "strategy": "full",
           "training": {"epochs": 2, "batch_size": 16, "metric": "roc_auc", "warmup_ratio": 0.0, "progress": False, "eval_every": 5},
           "output": {"dir": str(tmp / "searches")},
           "search": {"training.lr": {"choices": [1.0e-7, 3.0e-3]}, "training.weight_decay": {"low": 0.0, "high": 0.1}}}
    return write_config(tmp / "search.yaml", cfg), tmp / "searches"


def test_a_killed_search_resumes_and_finds_the_planted_learning_rate(search_config):
    config, folder = search_config
    cmd = [sys.executable, "-m", "weitiao", "tune", str(config), "--trials", "4"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not (folder / "trial-001" / "metrics.jsonl").is_file() and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)  # mid-search: trial 1 is running
    first.wait()
    assert not (folder / "best.yaml").exists() and (folder / "study.db").is_file()

    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((folder / "search.json").read_text())
    counted = [t for t in summary["trials"] if t["state"] in ("complete", "pruned")]
    assert len(counted) == 4, summary["trials"]
    assert any("killed" in t["state"] for t in summary["trials"]), "the killed trial is recorded as such"
    assert summary["best"]["params"]["training.lr"] == 3.0e-3
    lrs = {t["params"]["training.lr"] for t in counted}
    assert lrs == {1.0e-7, 3.0e-3}, "both learning rates were tried"
    for t in counted:  # every trial is a normal run folder
        assert (folder / t["run"] / "config.yaml").is_file()
    assert (folder / "search.md").is_file() and (folder / "search-history.png").stat().st_size > 1000

    # best.yaml is a normal config that repeats the best trial
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert "search" not in best and best["training"]["lr"] == 3.0e-3
    from weitiao.cli import main

    assert main(["train", str(folder / "best.yaml"), "--name", "again"]) == 0
    again = json.loads((folder / "again" / "metrics.json").read_text())["validation"]["roc_auc"]
    assert again == pytest.approx(summary["best"]["value"], abs=1e-6)


@pytest.mark.parametrize("search, field", [
    ({"training.lrr": {"low": 1e-5, "high": 1e-3}}, "search.training.lrr"),
    ({"training.lr": {"low": 1e-3, "high": 1e-5}}, "search.training.lr"),
    ({"training.lr": {"low": 0, "high": 1e-3, "log": True}}, "search.training.lr"),
    ({"training.batch_size": {"choices": []}}, "search.training.batch_size"),
    ({"training.batch_size": {"choices": [16, 0]}}, "search.training.batch_size"),
    ({"training.lr": {"min": 1e-5}}, "search.training.lr"),
    ({}, "search"),
])
def test_search_mistakes_are_one_line_errors_before_any_trial(search_config, tmp_path, capsys, search, field):
    from weitiao.cli import main

    config, _ = search_config
    cfg = yaml.safe_load(config.read_text())
    cfg["search"], cfg["output"] = search, {"dir": str(tmp_path / "s")}
    assert main(["tune", str(write_config(tmp_path / "c.yaml", cfg)), "--trials", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}:") and "Traceback" not in err, err
    assert not (tmp_path / "s").exists()


def test_a_search_folder_of_another_search_is_refused(search_config, tmp_path):
    from weitiao.tune import tune

    config, _ = search_config
    cfg = yaml.safe_load(config.read_text())
    cfg["output"] = {"dir": str(tmp_path / "s")}
    cfg["training"]["epochs"] = 1
    cfg["search"] = {"training.lr": {"choices": [1.0e-3]}}
    tune(str(write_config(tmp_path / "a.yaml", cfg)), 1)
    cfg["search"] = {"training.lr": {"choices": [2.0e-3]}}
    with pytest.raises(UserError, match="another config or search space"):
        tune(str(write_config(tmp_path / "b.yaml", cfg)), 2)


def test_jobs_run_trials_in_worker_processes(search_config, tmp_path):
    """--jobs 2: two worker processes (not this one), each with its own trial, running at the same time."""
    import optuna

    from weitiao.tune import STUDY_FILE, STUDY_NAME, tune

    config, _ = search_config
    cfg = yaml.safe_load(config.read_text())
    cfg["output"] = {"dir": str(tmp_path / "s")}
    cfg["training"]["epochs"] = 1
    folder = tune(str(write_config(tmp_path / "j.yaml", cfg)), 2, jobs=2)
    trials = json.loads((folder / "search.json").read_text())["trials"]
    assert len(trials) == 2 and all(t["state"] == "complete" for t in trials)
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 2, "two workers drew different values"
    # each trial's run folder names the process that trained into it (its lock file): two processes, neither this one
    pids = [int((folder / t["run"] / ".lock").read_text().split()[1]) for t in trials]
    assert len(set(pids)) == 2 and os.getpid() not in pids, pids
    # and the two trials ran at once: each started before the other finished
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{folder / STUDY_FILE}")
    (s1, e1), (s2, e2) = [(t.datetime_start, t.datetime_complete) for t in study.get_trials(deepcopy=False)]
    assert s1 < e2 and s2 < e1, [(str(s1), str(e1)), (str(s2), str(e2))]


@pytest.mark.parametrize("content", [b"this is not a database", b"SQLite format 3\x00" + b"\x00" * 200])
def test_a_corrupt_study_db_is_one_line(search_config, tmp_path, capsys, content):
    from weitiao.cli import main

    config, _ = search_config
    cfg = yaml.safe_load(config.read_text())
    cfg["output"] = {"dir": str(tmp_path / "s")}
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.db").write_bytes(content)
    assert main(["tune", str(write_config(tmp_path / "c.yaml", cfg)), "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: output.dir:") and "study.db" in err and "Traceback" not in err, err
