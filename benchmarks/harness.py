"""What the comparison scripts in benchmarks/ share: where things are, the commit a number measures,
the machine it ran on and its fp32 ceiling, a side run in its own process (wall time and that
process's own peak memory), a weitiao run trained from a config and its metrics.json read back.

A script runs as `.venv/bin/python benchmarks/NAME.py`; this folder is then first on sys.path and
weitiao is installed in the venv (`pip install -e .`), so no script edits sys.path.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from provenance import ROOT, commit  # noqa: F401 (part of the harness)

HERE = ROOT / "benchmarks"
DATA_DIR = ROOT.parent / "shared" / "data"  # ../shared/data (its README lists what is there)
RESULTS = HERE / "results"
WORK = RESULTS / "work"  # git-ignored: data, logs and runs of every script
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def machine_info(script: str, threads: int | None = None, packages: tuple[str, ...] = ("torch", "transformers", "peft", "accelerate")) -> dict:
    """The machine and library versions a result file records, with the commit it measured."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown") if Path("/proc/cpuinfo").exists() else "unknown"
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "loadavg_start": os.getloadavg(),
            "python": sys.version.split()[0], **{p: version(p) for p in packages}, "weitiao_commit": commit(script)}
    if threads is not None:
        info["torch_threads"] = threads
    if "torch" in packages:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def peak_gflops(threads: int, size: int = 2048, repeats: int = 7, device: str = "cpu") -> float:
    """Best GFLOP/s of a size x size matmul: fp32 on `threads` CPU threads, or bf16 on the GPU. The MFU denominator."""
    import torch

    if device == "cuda":
        a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        for _ in range(3):
            a @ b
        best = 0.0
        for _ in range(repeats):
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(10):
                a @ b
            torch.cuda.synchronize()
            best = max(best, 10 * 2 * 8192**3 / (time.perf_counter() - start) / 1e9)
        return best
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def run_child(cmd: list[str], log_path: Path, threads: int) -> dict:
    """One side in its own process, offline, on `threads` threads; its wall time and peak RSS
    (os.wait4: this child's own rusage, not the parent's)."""
    env = dict(os.environ, **OFFLINE, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(cmd) + "\n\n")
        log.flush()
        start = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
    return {"rc": os.waitstatus_to_exitcode(status), "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "log": str(log_path)}


def checked(result: dict, what: str) -> dict:
    """`run_child`'s result, or exit with one line naming the side that failed and its log."""
    if result["rc"] != 0:
        sys.exit(f"{what} failed (exit {result['rc']}); see {result['log']}")
    return result


def write_config(path: Path, config: dict) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def train_run(config: dict | Path, name: str, work: Path, threads: int, *extra: str) -> tuple[dict, dict]:
    """`weitiao train` of a config (a dict is written to work/NAME.yaml) in its own process; returns
    (the run's metrics.json, run_child's timing). The config's output.dir must be work/runs."""
    path = config if isinstance(config, Path) else write_config(work / f"{name}.yaml", config)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "weitiao", "train", str(path), "--name", name, "--overwrite", *extra]
    timing = checked(run_child(cmd, work / "logs" / f"{name}.log", threads), f"weitiao run {name}")
    return json.loads((work / "runs" / name / "metrics.json").read_text()), timing


def write_result(stem: str, report: dict, markdown: str) -> tuple[Path, Path]:
    """benchmarks/results/STEM.json and STEM.md, both written whole."""
    from weitiao.files import write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS / f"{stem}.json", RESULTS / f"{stem}.md"
    write_text(json_path, json.dumps(report, indent=2) + "\n")
    write_text(md_path, markdown)
    return json_path, md_path
