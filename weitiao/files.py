"""Writing so that nothing is half written: whole files and whole folders, swapped in by one rename.

A full disk (or a file-size limit) while writing becomes TrainingStopped (exit 3) naming what
was kept; the temporary copy is removed, so no partial file or folder is left. What a killed
writer left behind (`.NAME.KIND-PID`, its process gone) is found by `left_by_dead`.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from weitiao.errors import TrainingStopped

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # EFBIG: a file-size limit (ulimit -f), full in the same way


def full_disk(e: BaseException | None) -> int | None:
    """The errno if `e` (or what caused it) is a full disk, else None.

    Libraries wrap the OSError: shutil.copytree gathers them into one shutil.Error, torch.save and
    safetensors raise their own types naming it; their message still carries the system's words."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            return e.errno
        text = str(e)
        for code in DISK_FULL:
            if os.strerror(code) in text or f"[Errno {code}]" in text:
                return code
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def out_of_space(target, code: int, kept: str) -> TrainingStopped:
    limit = code == errno.EFBIG
    what = "the file-size limit (ulimit -f) was reached" if limit else "the disk is full"
    return TrainingStopped(f"could not write '{target}' ({what}); {kept}; free space{' or raise the limit' if limit else ''} and run the command again")


def write_text(path: Path, text: str) -> None:
    """`path.write_text(text)` (UTF-8), whole or not at all: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        code = full_disk(e)
        if code:
            raise out_of_space(path, code, "the previous file is as it was" if path.exists() else "nothing was written there") from None
        raise


def atomic_folder(target: Path, write) -> None:
    """Call `write(tmp)` to fill a temporary folder, then swap it in for `target`.

    What a killed writer left is settled first: its half-written `.tmp-PID` is removed; its
    `.old-PID` (the previous version, moved aside just before the swap) is put back if `target` is missing."""
    for stale in left_by_dead(target, "old"):
        if not target.exists():
            os.replace(stale, target)
        else:
            shutil.rmtree(stale, ignore_errors=True)
    for stale in left_by_dead(target, "tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        code = full_disk(e)
        if code:
            raise out_of_space(target, code, f"the previous '{target.name}' is as it was" if target.exists() else "no partial folder is left") from None
        raise
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def left_by_dead(target: Path, kind: str) -> list[Path]:
    """`.NAME.KIND-PID` files or folders beside `target` whose process no longer runs (killed mid-write)."""
    found = []
    for path in target.parent.glob(f".{target.name}.{kind}-*"):
        pid = path.name.rsplit("-", 1)[1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            found.append(path)
        except PermissionError:  # alive, another user's
            pass
    return found
