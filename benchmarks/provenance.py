"""The commit a benchmark measures: one helper every script in benchmarks/ uses.

A result file names the commit it ran on, so every number in README.md and docs/ can be traced
to code anyone can check out. A working tree with uncommitted changes to the code the numbers
depend on (weitiao/, benchmarks/, examples/, the lock, the Makefile) is refused: commit first.
`BENCH_ALLOW_DIRTY=1` runs anyway for a trial and stamps the commit `+dirty`, which the docs do
not cite.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ("weitiao", "benchmarks", "examples", "requirements.lock", "pyproject.toml", "Makefile",
        ":(exclude)benchmarks/results")  # what the numbers depend on; the result files themselves do not count


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd, check=True).stdout.strip()


@functools.cache
def commit(script: str, paths: tuple[str, ...] = CODE) -> str:
    """HEAD's short hash; exits with one line if the measured code has uncommitted changes.

    Scripts call it first in main(), so a dirty tree is refused before anything runs. `paths=()`
    counts every tracked file (the test suite's times depend on tests/ too)."""
    head = git("rev-parse", "--short", "HEAD")
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *paths],
                           capture_output=True, text=True, cwd=ROOT, check=True).stdout.rstrip()
    if not dirty:
        return head
    if os.environ.get("BENCH_ALLOW_DIRTY") == "1":
        return head + "+dirty"
    files = ", ".join(line[3:] for line in dirty.splitlines()[:5])
    sys.exit(f"{script}: uncommitted changes to {files}; commit first so the numbers have a commit "
             "(or BENCH_ALLOW_DIRTY=1 for a trial stamped +dirty)")
