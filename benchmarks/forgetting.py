"""Forgetting experiment: MiniLM fine-tuned on SST-2, then on GoEmotions, with and without L2-SP.

Reports SST-2 dev accuracy (the forgetting probe) before and after the GoEmotions run, and
the GoEmotions scores, as a markdown table. Not a test: it takes several minutes on 2 cores.

    .venv/bin/python benchmarks/forgetting.py [--train 8000] [--l2sp 0.1 1.0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(config: str, name: str, out: Path, sets: list[str]) -> dict:
    args = [sys.executable, "-m", "weitiao", "train", config, "--name", name, "--overwrite",
            "--set", f"output.dir={out}", "--set", "training.progress=false"]
    for s in sets:
        args += ["--set", s]
    t = time.perf_counter()
    subprocess.run(args, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    metrics = json.loads((out / name / "metrics.json").read_text())
    metrics["wall_s"] = time.perf_counter() - t
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=8000, help="training rows for each task")
    ap.add_argument("--l2sp", type=float, nargs="+", default=[0.1, 1.0])
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-forgetting"), help="run folders")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "forgetting"), help="writes RESULTS.md and RESULTS.json")
    args = ap.parse_args()
    from provenance import commit
    stamp = commit("forgetting")
    out = Path(args.out)

    sst2 = train("examples/sst2.yaml", "sst2", out, [f"data.train_limit={args.train}"])
    rows = []
    for alpha in [0.0] + args.l2sp:
        m = train("examples/goemotions.yaml", f"goemo-l2sp{alpha:g}", out,
                  [f"model={out / 'sst2' / 'model'}", f"strategy.probe={out / 'sst2'}", f"strategy.l2sp={alpha}",
                   "training.weight_decay=0.0", f"data.train_limit={args.train}", "data.test=null"])
        rows.append((alpha, m))

    lines = [f"SST-2 run A: dev accuracy {sst2['validation']['accuracy']:.4f} ({sst2['train']['seconds']:.0f} s)", "",
             "| L2-SP α | SST-2 acc before | SST-2 acc after | drop | GoEmotions micro-F1 | macro-F1 | ROC-AUC | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for alpha, m in rows:
        before, after = m["probe"]["before"]["accuracy"], m["probe"]["after"]["accuracy"]
        v = m["validation"]
        auc = f"{v['roc_auc']:.4f}" if v.get("roc_auc") is not None else "n/a"
        lines.append(f"| {alpha:g} | {before:.4f} | {after:.4f} | {before - after:+.4f} | {v['f1_micro']:.4f} | {v['f1_macro']:.4f} | {auc} | {m['train']['seconds']:.0f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    command = "python benchmarks/forgetting.py " + " ".join(sys.argv[1:])
    Path(args.results + ".md").write_text(f"<!-- {command} (weitiao {stamp}) -->\n{table}", encoding="utf-8")
    Path(args.results + ".json").write_text(json.dumps({"commit": stamp, "command": command, "sst2": {"validation": sst2["validation"]["accuracy"]},
                                                        "rows": [{"l2sp": a, "probe": m["probe"], "validation": {k: m["validation"].get(k) for k in ("f1_micro", "f1_macro", "roc_auc", "n")},
                                                                  "train_s": m["train"]["seconds"]} for a, m in rows]}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
