"""`make install` and `make test` as on a newcomer's machine, timed: the times README.md gives.

    .venv/bin/python benchmarks/cold_suite.py            # make install, make test, then the slow tests alone
    .venv/bin/python benchmarks/cold_suite.py --no-slow  # make install and make test only

The commit at HEAD is cloned into a temporary folder (beside a link to ../shared, where the data
is), with an empty pip cache and cache home (pip's wheels, weitiao's converted models, Hugging
Face, torch and matplotlib caches): what `.ci/run` does. Nothing from this checkout's .venv or
caches is used. Then the tests `make test` leaves out (marked slow) run alone in the same .venv,
as `make test-all` runs them: `make test-all` takes about `make test` plus that. The result file
(benchmarks/results/cold_suite.json and .md) records the wall times, pytest's summary lines and
the commit; uncommitted changes are refused, so the times belong to that commit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import provenance
from provenance import git

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def timed(command: list[str], cwd: Path, env: dict) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    return round(time.perf_counter() - start, 1), proc.returncode, proc.stdout + proc.stderr


def summary(out: str) -> str:
    return next((line.strip("= ") for line in reversed(out.splitlines()) if re.search(r"\d+ (passed|failed)", line)), "")


def minutes(s: float) -> str:
    s = round(s)
    return f"{s // 60} min {s % 60} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-slow", action="store_true", help="leave out the slow tests' run")
    args = parser.parse_args()
    commit = provenance.commit("cold_suite", paths=())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "shared").symlink_to(ROOT.parent / "shared")
        git("clone", "--quiet", str(ROOT), str(tmp / "main"))
        cold = {"PIP_CACHE_DIR": tmp / "pip", "XDG_CACHE_HOME": tmp / "cache", "HF_HOME": tmp / "hf", "TORCH_HOME": tmp / "torch",
                "MPLCONFIGDIR": tmp / "matplotlib"}
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {k: str(v) for k, v in cold.items()}
        install_s, code, out = timed(["make", "install"], tmp / "main", env)
        if code:
            sys.exit(f"cold_suite: make install failed (exit {code}):\n{out[-3000:]}")
        test_s, code, out = timed(["make", "test"], tmp / "main", env)
        result = {"commit": commit, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "command": " ".join(["python", *sys.argv]),
                  "make_install_s": install_s, "make_test_s": test_s, "total_s": round(install_s + test_s, 1), "exit_code": code,
                  "pytest": summary(out)}
        rows = [("make install (cold)", install_s, ""), ("make test", test_s, f"{result['pytest']} (exit {code})"),
                ("both", install_s + test_s, "")]
        if not args.no_slow and not code:
            slow_s, slow_code, slow_out = timed(["make", "test-slow"], tmp / "main", env)
            result |= {"slow_tests_s": slow_s, "slow_exit_code": slow_code, "slow_pytest": summary(slow_out)}
            rows.append(("the slow tests alone (make test-all adds them)", slow_s, f"{result['slow_pytest']} (exit {slow_code})"))
            code = code or slow_code
            out += slow_out
    (RESULTS / "cold_suite.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "cold_suite.md").write_text(
        f"# A cold `make install`, `make test` and the slow tests (commit {commit}, {result['machine']})\n\n"
        f"Command: `{result['command']}`\n\n| step | wall | pytest |\n|---|---|---|\n"
        + "".join(f"| {name} | {minutes(s)} | {note} |\n" for name, s, note in rows))
    print(json.dumps(result))
    if code:
        print(out[-5000:])
        sys.exit(code)


if __name__ == "__main__":
    main()
