"""Every shipped example, run as a user runs it: the quality table in README.md.

    .venv/bin/python benchmarks/examples.py                 # all of examples/*.yaml, one after another
    .venv/bin/python benchmarks/examples.py --only sst2,digits

Each example runs as `weitiao train examples/NAME.yaml` in a fresh process from the project root
(the config exactly as shipped; only the output folder is set), on whatever this machine is. The
result file (benchmarks/results/examples.json and .md) records each run's validation and test
metrics as metrics.json has them, the process's wall time and the training time weitiao reports,
and the commit it ran on; a working tree with changes to weitiao/ or examples/ is refused, so
every number in the file belongs to a commit.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import commit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# The headline metrics of each task, as metrics.json names them.
HEADLINES = ("accuracy", "macro_f1", "f1_micro", "f1_macro", "roc_auc", "f1", "precision", "recall", "perplexity", "rouge_l", "loss", "n")


def run_example(path: Path, out: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "weitiao", "train", str(path.relative_to(ROOT)), "--name", path.stem,
                           "--set", f"output.dir={out}", "--set", "training.progress=false"],
                          cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"example": path.name, "exit_code": proc.returncode, "stderr": proc.stderr[-2000:], "wall_s": round(wall, 1)}
    metrics = json.loads((out / path.stem / "metrics.json").read_text())
    keep = {split: {k: v for k, v in metrics[split].items() if k in HEADLINES or "/" in k and k.split("/")[-1] in HEADLINES}
            for split in ("validation", "test") if isinstance(metrics.get(split), dict)}
    return {"example": path.name, "exit_code": 0, "wall_s": round(wall, 1), "train_s": (metrics.get("train") or {}).get("seconds"), **keep}


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Every example, as shipped (commit {meta['commit']}, {meta['machine']})", "",
             f"Command: `{meta['command']}`", "", "| example | validation | test | wall |", "|---|---|---|---|"]
    fmt = lambda d: ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in (d or {}).items()) or "-"
    for r in rows:
        if r["exit_code"]:
            lines.append(f"| {r['example']} | failed (exit {r['exit_code']}) | | {r['wall_s']} s |")
        else:
            lines.append(f"| {r['example']} | {fmt(r.get('validation'))} | {fmt(r.get('test'))} | {r['wall_s']} s |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated example names (file stems), default all")
    args = parser.parse_args()
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    if args.only:
        examples = [p for p in examples if p.stem in args.only.split(",")]
    meta = {"commit": commit("examples"), "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs",
            "command": "python benchmarks/examples.py" + (f" --only {args.only}" if args.only else "")}
    file = RESULTS / "examples.json"
    previous = json.loads(file.read_text())["runs"] if file.is_file() and args.only else {}
    rows = dict(previous)
    with tempfile.TemporaryDirectory() as tmp:
        for path in examples:
            print(f"examples: {path.name} ...", flush=True)
            rows[path.stem] = {**run_example(path, Path(tmp)), "commit": meta["commit"]}
            print(json.dumps(rows[path.stem]), flush=True)
    file.write_text(json.dumps({"meta": meta, "runs": rows}, indent=1) + "\n")
    (RESULTS / "examples.md").write_text(markdown([rows[k] for k in sorted(rows)], meta))
    print(f"wrote {file}")


if __name__ == "__main__":
    main()
