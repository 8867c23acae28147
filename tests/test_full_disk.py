"""A full disk while writing a model, an export or a report: exit 3 with one line, no partial folder.

The disk is made "full" by a file-size limit on the process (RLIMIT_FSIZE, as `ulimit -f`): the
kernel refuses the write that crosses it (EFBIG), as it refuses a write to a full disk (ENOSPC).
"""

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest

from weitiao.errors import TrainingStopped
from weitiao.evaluate.report import write_report
from weitiao.files import atomic_folder, write_text


def limited_to(size: int):
    def start():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return start


def weitiao(*args: str, limit: int, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "weitiao", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, preexec_fn=limited_to(limit))


def assert_stopped(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 3 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("stopped: ") and "free space" in lines[0]
    return lines[0]


def test_an_export_on_a_full_disk_leaves_no_folder(tiny_runs, tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    line = assert_stopped(weitiao("export", str(tiny_runs["classification"]), "--format", "hf", "--out", str(exports / "hf"),
                                  limit=256 * 1024, cwd=tmp_path))
    assert "file-size limit" in line or "disk is full" in line
    assert list(exports.iterdir()) == []  # no partial export, no scratch folder
    assert [p.name for p in tiny_runs["classification"].iterdir() if p.name.startswith(".")] in ([], [".lock"])


def test_a_report_on_a_full_disk_keeps_the_previous_one(tiny_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["classification"], run)
    write_report(run)
    before = (run / "report.html").read_bytes()
    assert len(before) > 16 * 1024
    assert_stopped(weitiao("report", str(run), limit=16 * 1024, cwd=tmp_path))
    assert (run / "report.html").read_bytes() == before
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_while_a_folder_is_written_keeps_the_previous_version(tmp_path, code):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("previous")

    def write(tmp):
        tmp.mkdir()
        (tmp / "weights").write_text("half")
        raise OSError(code, os.strerror(code))

    with pytest.raises(TrainingStopped, match="the disk is full.*the previous 'model' is as it was"):
        atomic_folder(target, write)
    assert (target / "weights").read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with pytest.raises(TrainingStopped, match="nothing was written there"):
        def full(*_, **__):
            raise OSError(code, os.strerror(code))
        real, type(tmp_path).write_text = type(tmp_path).write_text, full
        try:
            write_text(tmp_path / "metrics.json", "{}")
        finally:
            type(tmp_path).write_text = real
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
