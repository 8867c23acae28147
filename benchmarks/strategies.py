"""Every strategy on the same real data: MiniLM on an SST-2 subset, scored on the full dev set.

Writes the table that docs/strategies.md shows, to benchmarks/results/strategies.md (and the
metrics of every row to strategies.json). Not a test: about 10 minutes on 2 cores with
--train 1000.

    .venv/bin/python benchmarks/strategies.py --train 1000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# method -> (extra --set overrides, learning rate): parameter-efficient methods want larger LRs.
STRATEGIES = {
    "full": ([], 1e-4),
    "full + layer_lr_decay 0.8": (["strategy.layer_lr_decay=0.8"], 1e-4),
    "full + l2sp 0.1": (["strategy.l2sp=0.1", "training.weight_decay=0"], 1e-4),
    "head_only": (["strategy.method=head_only"], 2e-3),
    "freeze_bottom 3": (["strategy.method=freeze_bottom", "strategy.layers=3"], 1e-4),
    "train_top 2": (["strategy.method=train_top", "strategy.layers=2"], 2e-4),
    # 1,000 sentences are 32 steps: one more layer group every 4 steps unfreezes all 7 (6 layers, embeddings) by step 28
    "gradual_unfreeze (every 4 steps)": (["strategy.method=gradual_unfreeze", "strategy.unfreeze_unit=steps", "strategy.unfreeze_every=4"], 1e-4),
    "lora r=8": (["strategy.method=lora", "strategy.r=8"], 5e-4),
    "lora r=8 all-linear": (["strategy.method=lora", "strategy.r=8", "strategy.target_modules=all-linear"], 5e-4),
    "dora r=8": (["strategy.method=dora", "strategy.r=8"], 5e-4),
    "ia3": (["strategy.method=ia3"], 3e-3),
    "ln_tuning": (["strategy.method=ln_tuning"], 2e-3),
    "adapter houlsby 64": (["strategy.method=adapter"], 5e-4),
    "adapter pfeiffer 64": (["strategy.method=adapter", "strategy.adapter_type=pfeiffer"], 5e-4),
    "prompt (20 tokens)": (["strategy.method=prompt"], 3e-3),
    "ptuning (20 tokens)": (["strategy.method=ptuning"], 3e-3),
    "prefix (20 tokens)": (["strategy.method=prefix"], 3e-3),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--only", nargs="*", help="run only these rows")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-strategies"), help="run folders")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "strategies"), help="writes RESULTS.md and RESULTS.json")
    args = ap.parse_args()
    from provenance import commit
    stamp = commit("strategies")
    rows = []
    for label, (sets, lr) in STRATEGIES.items():
        if args.only and label not in args.only:
            continue
        name = label.split(" (")[0].replace(" ", "_").replace("=", "").replace("+", "").replace("__", "_")
        cmd = [sys.executable, "-m", "weitiao", "train", "examples/sst2.yaml", "--name", name, "--overwrite",
               "--set", f"output.dir={args.out}", "--set", "training.progress=false", "--set", f"data.train_limit={args.train}",
               "--set", f"training.epochs={args.epochs}", "--set", f"training.lr={lr}"]
        for s in sets:
            cmd += ["--set", s]
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode:
            rows.append((label, lr, None, wall, proc.stderr.strip().splitlines()[-1]))
            continue
        m = json.loads((Path(args.out) / name / "metrics.json").read_text())
        rows.append((label, lr, m, wall, ""))
        print(f"done {label}: {m['validation']['accuracy']:.4f}", file=sys.stderr, flush=True)
    lines = [f"MiniLM, {args.train} SST-2 training sentences, {args.epochs:g} epoch(s), batch 32, dev set (872); 2 CPU threads", "",
             "| strategy | lr | trainable params | dev accuracy | macro-F1 | train s | wall s | samples/s |",
             "|---|---|---|---|---|---|---|---|"]
    for label, lr, m, wall, err in rows:
        if m is None:
            lines.append(f"| {label} | {lr:g} | failed: {err} | | | | {wall:.0f} | |")
            continue
        v, tr = m["validation"], m["train"]
        lines.append(f"| {label} | {lr:g} | {tr['trainable_params']:,} | {v['accuracy']:.4f} | {v['f1_macro']:.4f} | {tr['seconds']:.0f} | {wall:.0f} | {tr['samples_per_s']:.0f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    command = "python benchmarks/strategies.py " + " ".join(sys.argv[1:])
    Path(args.results + ".md").write_text(f"<!-- {command} (weitiao {stamp}) -->\n{table}", encoding="utf-8")
    Path(args.results + ".json").write_text(json.dumps({"commit": stamp, "command": command, "rows": [
        {"strategy": label, "lr": lr, "wall_s": round(wall, 1), "error": err or None,
         "validation": m and {k: m["validation"][k] for k in ("accuracy", "f1_macro", "roc_auc", "loss", "n")},
         "train": m and m["train"]} for label, lr, m, wall, err in rows]}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
