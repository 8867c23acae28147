"""Checkpoints written atomically: a temporary folder, fsync, then one rename.

A crash at any moment leaves either the previous checkpoint or the new one complete, never a
half-written folder under a final name. Each checkpoint has a manifest with checksums.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

import torch

from weitiao.errors import TrainingStopped
from weitiao.files import full_disk

PREFIX = "step-"
# Tests set WEITIAO_CRASH_AT=checkpoint:N to SIGKILL the process halfway through writing
# checkpoint N (after state.pt, before the rename), to prove that resume copes with it.
CRASH_AT = os.environ.get("WEITIAO_CRASH_AT", "")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(root: Path, step: int, state: dict, meta: dict, keep: int) -> Path:
    """Write `state` (tensors and plain values) and `meta` (JSON) as root/step-N.

    Returns the final folder. Older checkpoints beyond the last `keep` are removed.
    """
    return PendingCheckpoint(root, step, state).finish(meta, keep)


class PendingCheckpoint:
    """A checkpoint whose state.pt is written on a thread while the caller goes on with work
    that changes no tensor (the epoch-end evaluation); `finish(meta)` waits for it, adds
    meta.json (where the loop state goes, as JSON, once that work has updated it), the
    manifest, and renames the folder into place. Until then the folder has a temporary name,
    so a crash leaves the previous checkpoint as the newest complete one.
    """

    def __init__(self, root: Path, step: int, state: dict):
        import threading

        root.mkdir(parents=True, exist_ok=True)
        self.root, self.step = root, step
        self.tmp = root / f".tmp-{PREFIX}{step:08d}-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._write_state, args=(state,), name="checkpoint", daemon=True)
        self.thread.start()

    def _write_state(self, state: dict) -> None:
        try:
            torch.save(state, self.tmp / "state.pt")
        except BaseException as e:  # handed to finish(), on the caller's thread
            self.error = e

    def finish(self, meta: dict, keep: int) -> Path:
        self.thread.join()
        try:
            if self.error is not None:
                raise self.error
            if CRASH_AT == f"checkpoint:{self.step}":
                os.kill(os.getpid(), signal.SIGKILL)
            _write_files(self.tmp, self.step, meta)
        except OSError as e:  # a full disk: the previous checkpoint stays as it was
            self.abandon()
            previous = list_checkpoints(self.root)
            kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
            what = "the disk is full" if full_disk(e) else f"{type(e).__name__}: {e}"
            raise TrainingStopped(f"could not write checkpoint step {self.step} ({what}); {kept}; free space and rerun with --resume") from None
        except BaseException:  # Ctrl-C: leave no half-written folder behind
            self.abandon()
            raise
        final = self.root / f"{PREFIX}{self.step:08d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(self.tmp, final)
        _fsync(self.root)
        for old in list_checkpoints(self.root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def abandon(self) -> None:
        """Drop the temporary folder (after the write thread is done with it)."""
        self.thread.join()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _write_files(tmp: Path, step: int, meta: dict) -> None:
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    files = {p.name: sha256(p) for p in sorted(tmp.iterdir())}
    (tmp / "manifest.json").write_text(json.dumps({"step": step, "files": files}, indent=2))
    for p in tmp.iterdir():
        _fsync(p)
    _fsync(tmp)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders are never listed)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def verify(folder: Path) -> bool:
    """True when the manifest exists and every file matches its checksum."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        return all(sha256(folder / name) == digest for name, digest in manifest["files"].items())
    except (OSError, ValueError, KeyError):
        return False


def load_checkpoint(folder: Path) -> tuple[dict, dict]:
    """The state and meta of a checkpoint.

    state.pt is read with weights_only=True: tensors and plain values only, so a run folder
    someone hands you cannot run code when you resume it (its checksums prove nothing: whoever
    wrote the file wrote them too).

    Raises:
        UserError: state.pt holds anything else (not written by weitiao, or tampered with).
    """
    import pickle

    from weitiao.errors import UserError

    try:
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0][:200]
        raise UserError("--resume", f"'{folder / 'state.pt'}' holds more than tensors and plain values, so it was not loaded ({first})",
                        "resume only checkpoints written by this weitiao; otherwise start the run again") from None
    return state, json.loads((folder / "meta.json").read_text())


def latest_valid(root: Path) -> tuple[Path | None, list[Path]]:
    """The newest checkpoint whose checksums verify, and the newer ones that did not."""
    skipped = []
    for folder in reversed(list_checkpoints(root)):
        if verify(folder):
            return folder, skipped
        skipped.append(folder)
    return None, skipped
