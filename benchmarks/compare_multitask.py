"""Multi-task against single-task runs at the same budget: SST-2 (sentiment), GoEmotions (multi-label
emotions) and WNUT-17 (entities) on MiniLM.

Each task trains alone on its first --rows training rows (a seeded subset, `data.train_limit`) for
--epochs, then all three together in one multi-task run (proportional sampling: every row once per
epoch, so each task sees exactly what it saw alone), same learning rate, batch size and max_length.
Scores are each task's default metric on its full validation set. One run per side, one after
another on the same machine.

    .venv/bin/python benchmarks/compare_multitask.py                    # ~6 min on 2 cores
    .venv/bin/python benchmarks/compare_multitask.py --rows 500 --out /tmp/mt   # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

TASKS = {
    "sentiment": {"type": "classification", "metric": "f1_macro",
                  "data": {"train": str(DATA / "sst2/train.tsv"), "validation": str(DATA / "sst2/dev.tsv"),
                           "text_column": "sentence", "label_column": "label"}},
    "emotion": {"type": "classification", "multi_label": True, "threshold": 0.3, "metric": "f1_micro",
                "data": {"train": str(DATA / "goemotions/train.tsv"), "validation": str(DATA / "goemotions/dev.tsv"),
                         "columns": ["text", "labels", "comment_id"], "text_column": "text", "label_column": "labels",
                         "labels_file": str(DATA / "goemotions/emotions.txt"), "label_separator": ","}},
    "entities": {"type": "token_classification", "metric": "f1",
                 "data": {"train": str(DATA / "wnut17/wnut17train.conll"), "validation": str(DATA / "wnut17/emerging.dev.conll"),
                          "format": "conll"}},
}


def member(name: str, rows: int, max_length: int) -> dict:
    spec = {k: v for k, v in TASKS[name].items() if k != "metric"}
    return {**spec, "data": {**spec["data"], "train_limit": rows, "max_length": max_length}}


def train(cfg: dict, work: Path, name: str) -> tuple[dict, float]:
    """The run's validation metrics and its wall time (the shared harness's runner, 2 threads)."""
    from harness import train_run

    metrics, timing = train_run(cfg, name, work, 2)
    return metrics["validation"], timing["wall_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2000, help="training rows per task")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/multitask"))
    args = ap.parse_args()
    from provenance import commit

    stamp = commit("compare_multitask")
    out = Path(args.out)
    work = ROOT / "benchmarks/results/work/multitask"
    work.mkdir(parents=True, exist_ok=True)
    training = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "progress": False, "seed": 42}
    base = {"version": 1, "model": "minilm", "strategy": "full", "output": {"dir": str(work / "runs")}}

    single, seconds = {}, {}
    for name in TASKS:
        spec = member(name, args.rows, args.max_length)
        cfg = {**base, "task": {k: v for k, v in spec.items() if k not in ("data",)}, "data": spec["data"],
               "training": {**training, "metric": TASKS[name]["metric"]}}
        single[name], seconds[name] = train(cfg, work, f"single-{name}")
        print(f"{name} alone: {TASKS[name]['metric']}={single[name][TASKS[name]['metric']]:.4f} ({seconds[name]:.0f} s)", flush=True)
    cfg = {**base, "task": {"type": "multitask", "sampling": "proportional",
                            "tasks": {n: member(n, args.rows, args.max_length) for n in TASKS}},
           "training": {**training, "metric": "mean"}}
    multi, multi_seconds = train(cfg, work, "multitask")

    rows = []
    for name, spec in TASKS.items():
        m = spec["metric"]
        alone, together = single[name][m], multi[name][m]
        rows.append({"task": name, "metric": m, "single": alone, "multitask": together, "difference": together - alone})
    result = {"command": " ".join(["benchmarks/compare_multitask.py"] + sys.argv[1:]), "rows_per_task": args.rows, "epochs": args.epochs,
              "lr": args.lr, "batch_size": args.batch_size, "max_length": args.max_length, "model": "minilm", "strategy": "full",
              "commit": stamp, "tasks": rows, "seconds": {"single_total": round(sum(seconds.values()), 1), "multitask": round(multi_seconds, 1)},
              "mean": {"single": sum(r["single"] for r in rows) / len(rows), "multitask": multi["mean"]}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [f"# Multi-task vs single-task, MiniLM, full fine-tuning ({args.rows} training rows per task, {args.epochs} epochs)", "",
             f"`.venv/bin/python {result['command']}` (one run per side, 2-core CPU; weitiao {stamp})", "",
             "| task | metric (validation) | single-task | multi-task | difference |", "|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['metric']} | {r['single']:.4f} | {r['multitask']:.4f} | {r['difference']:+.4f} |" for r in rows]
    lines += [f"| mean | | {result['mean']['single']:.4f} | {result['mean']['multitask']:.4f} | {result['mean']['multitask'] - result['mean']['single']:+.4f} |",
              "", f"Wall time: three single-task runs {result['seconds']['single_total']} s together, the multi-task run {result['seconds']['multitask']} s "
              "(one model instead of three)."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
