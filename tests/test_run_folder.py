"""The run folder: --overwrite replaces an old run only once the new one has started training."""

import pytest

from weitiao.errors import UserError
from weitiao.rundir.folder import NewRunFolder
from weitiao.train.recipe import pick_device


def old_run(tmp_path):
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text("old")
    return run


def test_a_failure_before_training_puts_the_old_run_back(tmp_path):
    run = old_run(tmp_path)
    folder = NewRunFolder(run, overwrite=True)
    assert run.is_dir() and not (run / "metrics.json").exists()  # a fresh folder under the name
    (run / "config.yaml").write_text("new")
    folder.lock.release()
    folder.abandon()
    assert (run / "metrics.json").read_text() == "old" and not (run / "config.yaml").exists()
    assert [p.name for p in run.parent.iterdir()] == ["a"]


def test_once_training_started_the_old_run_is_gone_and_stays_gone(tmp_path):
    run = old_run(tmp_path)
    folder = NewRunFolder(run, overwrite=True)
    (run / "config.yaml").write_text("new")
    folder.started()
    folder.lock.release()
    folder.abandon()  # a crash after the start keeps the new run's checkpoints
    assert (run / "config.yaml").read_text() == "new" and not (run / "metrics.json").exists()
    assert sorted(p.name for p in run.iterdir()) == [".lock", "config.yaml"]
    assert [p.name for p in run.parent.iterdir()] == ["a"]


def test_a_second_run_of_the_same_name_is_refused_at_the_move(tmp_path):
    """The lock is taken with the folder, not checked seconds before: a run that passed the early check
    (check_run_dir) while another started gets one line, and never moves the other's folder aside."""
    run = tmp_path / "runs" / "a"
    first = NewRunFolder(run, overwrite=False)
    (run / "config.yaml").write_text("first")
    try:
        with pytest.raises(UserError, match="was just created by another process"):
            NewRunFolder(run, overwrite=False)
        with pytest.raises(UserError, match="being trained into by another process"):
            NewRunFolder(run, overwrite=True)
        assert (run / "config.yaml").read_text() == "first"
        assert [p.name for p in run.parent.iterdir()] == ["a"]  # no hidden folder left by either refusal
    finally:
        first.lock.release()
    second = NewRunFolder(run, overwrite=True)  # the first has finished: now it may be replaced
    second.started()
    second.lock.release()
    assert not (run / "config.yaml").exists() and [p.name for p in run.parent.iterdir()] == ["a"]


def test_launch_mixed_precision_is_used_unless_the_yaml_says(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # what a GPU machine says
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert pick_device("auto", None) == (True, "bf16")  # the launch config's
    assert pick_device("auto", "no") == (True, "no")  # the YAML wins
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    assert pick_device("auto", None) == (True, "no")


def test_launch_mixed_precision_on_cpu_is_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(UserError) as info:
        pick_device("cpu", None)
    assert info.value.field == "accelerate launch mixed_precision"
    assert pick_device("cpu", "no") == (False, "no")


def test_what_a_killed_writer_left_is_settled(tmp_path, capsys):
    """A model/ or export swap killed mid-way leaves `.NAME.tmp-PID` (half written) or `.NAME.old-PID` (the previous
    version, moved aside); an --overwrite killed before training leaves `.NAME.replaced-PID`. None stays hidden."""
    import subprocess

    from weitiao.files import atomic_folder
    from weitiao.rundir.folder import check_run_dir

    dead = subprocess.Popen(["true"])  # a process id that no longer runs
    dead.wait()
    target = tmp_path / "model"
    (tmp_path / f".model.old-{dead.pid}").mkdir()
    (tmp_path / f".model.old-{dead.pid}" / "weights").write_text("previous")
    (tmp_path / f".model.tmp-{dead.pid}").mkdir()
    seen = {}

    def write(tmp):
        seen["before"] = target.is_dir() and (target / "weights").read_text()
        tmp.mkdir()
        (tmp / "weights").write_text("new")

    atomic_folder(target, write)
    assert seen["before"] == "previous" and (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    (tmp_path / f".demo.replaced-{dead.pid}").mkdir()
    check_run_dir(str(tmp_path), "demo", False)
    err = capsys.readouterr().err
    assert f".demo.replaced-{dead.pid}" in err and "mv " in err
