"""The run folder: where a run writes, and the guard against overwriting one."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from weitiao.errors import UserError
from weitiao.rundir import ENV, LOCK


def check_run_dir(parent: str, name: str, overwrite: bool) -> Path:
    """The run folder path; refuses an existing one unless `overwrite`. Creates nothing."""
    if not name or "/" in name or name in (".", "..") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UserError("--name", f"'{name}' is not a folder name", "use letters, digits, '-' or '_'")
    if len(name.encode()) > 200:  # the file system allows 255 bytes; the folder set aside on --overwrite adds a prefix and a suffix
        raise UserError("--name", f"'{name[:40]}...' is {len(name.encode())} bytes long", "use a name of at most 200 bytes")
    if not str(parent).strip():
        raise UserError("output.dir", "is empty", "give the folder runs are written to (default: runs)")
    if Path(parent).exists() and not Path(parent).is_dir():
        raise UserError("output.dir", f"'{parent}' is a file, not a folder", "set output.dir to a folder (it is created if missing)")
    existing = next(p for p in (Path(parent).absolute(), *Path(parent).absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError("output.dir", f"'{parent}' cannot be created: '{existing}' is {'a file' if not existing.is_dir() else 'not writable'}",
                        "set output.dir to a folder you can write (it is created if missing)")
    path = Path(parent) / name
    from weitiao.files import left_by_dead

    for aside in left_by_dead(path, "replaced"):  # an --overwrite killed before its training began
        print(f"note: a run of this name that an --overwrite set aside is kept in '{aside}' (its process was killed); "
              f"get it back with: mv '{aside}' '{path}'", file=sys.stderr)
    if path.exists() and not overwrite:
        raise UserError("--name", f"run folder '{path}' already exists", "choose another --name, --resume it, or pass --overwrite to replace it")
    refuse_if_locked(path)
    return path




class RunLock:
    """An exclusive lock on a run folder while a process trains into it.

    flock is released by the kernel when the process dies, so a killed run never leaves a
    stale lock behind.
    """

    def __init__(self, run_dir: Path):
        import fcntl

        self.path = run_dir / LOCK
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise UserError("run folder", f"'{run_dir}' is being trained into by another process ({_holder(self.path)})",
                            "wait for it to finish, or choose another --name") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()}\n")
        self.file.flush()

    def release(self) -> None:
        import fcntl

        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "pid unknown"
    except OSError:
        return "pid unknown"


def refuse_if_locked(run_dir: Path) -> None:
    """Refuse (even with --overwrite) a run folder another process is training into."""
    if (run_dir / LOCK).exists():
        RunLock(run_dir).release()


class NewRunFolder:
    """A run folder being created, locked from its first moment.

    The folder is made under a hidden name with its lock taken, then renamed into place, so no
    other process ever sees it unlocked: a second run of the same name is refused in one line
    (it loses the rename), and an --overwrite moves the old run aside only while holding that
    run's lock (a run still training is never moved). The old run is set aside, not deleted: it
    is deleted once the new run has started training (`started`), and put back if the new run
    fails before that (`abandon`), so a mistake found late never costs the old run."""

    def __init__(self, path: Path, overwrite: bool):
        from weitiao.files import left_by_dead

        self.path, self.aside, self.begun = path, None, False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError("output.dir", f"'{path.parent}' cannot be created ({e.strerror})", "set output.dir to a folder you can write") from None
        for stale in left_by_dead(path, "new"):  # a run killed between these lines
            shutil.rmtree(stale, ignore_errors=True)
        fresh = path.with_name(f".{path.name}.new-{os.getpid()}")
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir()
        self.lock = RunLock(fresh)  # flock belongs to the open file: it stays through the rename
        try:
            if path.exists() and overwrite:
                old = RunLock(path)  # refuses a folder another process trains into
                self.aside = path.with_name(f".{path.name}.replaced-{os.getpid()}")
                try:
                    os.replace(path, self.aside)
                finally:
                    old.release()
            try:
                os.rename(fresh, path)
            except OSError:  # it exists again: another process created it since the check
                raise UserError("--name", f"run folder '{path}' was just created by another process",
                                "choose another --name, or pass --overwrite once that run has finished") from None
        except BaseException:
            self.lock.release()
            shutil.rmtree(fresh, ignore_errors=True)
            if self.aside is not None:
                os.replace(self.aside, path)
                self.aside = None
            raise
        self.lock.path = path / LOCK

    def started(self) -> None:
        self.begun = True
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None

    def abandon(self) -> None:
        """Before training started: remove what the new run wrote; the old run (if any) is back under its name."""
        if self.begun:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        if self.aside is not None:
            os.replace(self.aside, self.path)
            self.aside = None


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_env(path: Path, seed: int, device: str, processes: int = 1, mixed_precision: str = "no") -> None:
    import accelerate
    import torch
    import transformers

    from weitiao.version import __version__

    env = {
        "weitiao": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__,
        "device": device, "processes": processes, "mixed_precision": mixed_precision, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "git_commit": git_commit(), "seed": seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv,
    }
    (path / ENV).write_text(json.dumps(env, indent=2))


class MetricsLog:
    """Append-only metrics.jsonl: one JSON object per log or evaluation step (the source of truth).

    `tracker`: an Accelerator with trackers (TensorBoard by default): each step's scalars go to them
    too, as train/loss, train/lr/GROUP, eval/METRIC."""

    def __init__(self, path: Path, tracker=None):
        self.path, self.tracker = path, tracker
        self.lines = len(path.read_text(encoding="utf-8").splitlines()) if path.is_file() else 0

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.lines += 1
        if self.tracker is not None and isinstance(record.get("step"), int):
            scalars = tracked_scalars(record)
            if scalars:
                self.tracker.log(scalars, step=record["step"])


def tracked_scalars(record: dict) -> dict[str, float]:
    """The numbers of a metrics.jsonl record under tracker names: train/*, train/lr/GROUP, eval/*."""
    out = {}
    for key in ("loss", "lr", "samples_per_s", "targets_per_s"):
        if isinstance(record.get(key), (int, float)):
            out[f"train/{key}"] = float(record[key])
    for group, lr in (record.get("lrs") or {}).items():
        out[f"train/lr/{group}"] = float(lr)
    for key, value in (record.get("eval") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"eval/{key}"] = float(value)
    return out


class NullLog:
    """The log of a process that is not the main one: it writes nothing."""

    lines = 0

    def write(self, record: dict) -> None:
        pass
