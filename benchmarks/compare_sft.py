"""Instruction tuning: weitiao against TRL's SFTTrainer, LoRA on the bundled SmolLM2-135M-Instruct.

alpaca_2k split once (records 0-1799 train, 1800-1999 held out), rendered with the model's own
chat template, loss on the responses only on every side (TRL: its prompt-completion format,
whose default is completion-only loss). The same LoRA (r 16, alpha 32, dropout 0.05, all linear
layers), max_length, batch size (8), optimizer steps, learning rate (2e-4, linear decay after 6%
warmup), weight decay (0.01), gradient clipping (1.0), seed and torch threads. Sides, each in its
own process, in one run, the order reversed every other repeat:

  weitiao      `weitiao train` (its defaults: length-grouped batches, the output layer on target
               positions only, eager attention on CPU)
  trl          SFTTrainer with its defaults (padding to the longest in a random batch; SDPA)
  trl_packing  SFTTrainer with `packing=True` (its best-fit-decreasing packing, padding-free rows)

Measured per side: target tokens/s (response tokens trained on per second of training step: the
median over steps, the first step left out; TRL's steps timed by a callback from step begin to step
end, target tokens counted from each batch's labels), the whole process's wall time and peak RSS
(the main process, os.wait4), the padding fraction of its training batches, the mean training loss
of the first and last quarter of steps, and the held-out loss (perplexity) after training on the 200
held-out records (each side's own evaluation, not timed in tokens/s). MFU: 6 x trainable-path FLOPs
are not a fair count for LoRA, so MFU is given as (2 x parameters x tokens in the batch, forward) +
(4 x ... backward through the frozen weights) = 6 N T per step over the measured fp32 peak, with T all
tokens of the batch (padding included): the work the hardware does.

    .venv/bin/python benchmarks/compare_sft.py                   # 3 sides, 24 steps each (~12 min on 2 cores)
    .venv/bin/python benchmarks/compare_sft.py --steps 40 --repeats 2
    .venv/bin/python benchmarks/compare_sft.py --quick           # 3 steps, tests the script end to end

Writes OUT.md and OUT.json (default benchmarks/results/compare_sft.{md,json}; --quick adds -quick).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
DATA = ROOT.parent / "shared" / "data" / "alpaca_2k" / "alpaca_2k.json"
SIDES = ("weitiao", "trl", "trl_packing")  # also: weitiao_gc (weitiao with gradient checkpointing, as TRL has by default)
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}
WARMUP_RATIO, WEIGHT_DECAY, MAX_GRAD_NORM = 0.06, 0.01, 1.0


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sides", default=",".join(SIDES))
    ap.add_argument("--held-out", type=int, default=200, help="records held out for the final loss")
    ap.add_argument("--out", default=str(HERE / "results" / "compare_sft"))
    ap.add_argument("--quick", action="store_true", help="3 steps, 16 held-out records: tests the script")
    ap.add_argument("--child", choices=["trl", "trl_packing"], help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick and not args.child:
        args.steps, args.held_out, args.out = 3, 16, args.out + "-quick"
    return args


def split_data(work: Path, held_out: int) -> tuple[Path, Path]:
    records = json.loads(DATA.read_text())
    train, val = records[:len(records) - held_out], records[len(records) - held_out:]
    (work / "train.json").write_text(json.dumps(train))
    (work / "val.json").write_text(json.dumps(val))
    return work / "train.json", work / "val.json"


def prompt_completion(records: list[dict]) -> list[dict]:
    """alpaca records as TRL's conversational prompt-completion rows (the same turns weitiao renders)."""
    from weitiao.tasks.causal_lm.lm_text import alpaca_conversation

    rows = []
    for r in records:
        (_, user), (_, answer) = alpaca_conversation(r["instruction"], r.get("input") or "", r["output"])
        if user and answer:
            rows.append({"prompt": [{"role": "user", "content": user}], "completion": [{"role": "assistant", "content": answer}]})
    return rows


# --- TRL (child process) -------------------------------------------------------------------

def trl_side(args) -> None:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from weitiao.models.lm import bundled_smollm2

    launched = time.perf_counter()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    folder = bundled_smollm2()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    train = Dataset.from_list(prompt_completion(json.loads((work / "train.json").read_text())))
    val = Dataset.from_list(prompt_completion(json.loads((work / "val.json").read_text())))
    packing = args.child == "trl_packing"
    config = SFTConfig(output_dir=str(work / f"trl-{args.child}"), max_length=args.max_length, packing=packing,
                       per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
                       max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=WARMUP_RATIO,  # below 1: a ratio
                       weight_decay=WEIGHT_DECAY, max_grad_norm=MAX_GRAD_NORM, logging_steps=1, save_strategy="no",
                       eval_strategy="no", report_to="none", use_cpu=True, seed=args.seed, dataloader_num_workers=0, bf16=False)
    steps: list[dict] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            steps[-1]["s"] = time.perf_counter() - self.t if steps else None

    class Counting(SFTTrainer):
        """SFTTrainer, counting each batch's target tokens and padding (nothing else changed)."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            labels = inputs["labels"]
            real = inputs["attention_mask"].sum().item() if "attention_mask" in inputs else labels.numel()
            steps.append({"targets": int((labels[:, 1:] != -100).sum()), "tokens": labels.numel(), "real": real})
            return super().training_step(model, inputs, num_items_in_batch)

    peft = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = Counting(model=model, args=config, train_dataset=train, eval_dataset=val, processing_class=tok, peft_config=peft,
                       callbacks=[Timer()])
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    start = time.perf_counter()
    held_out = trainer.evaluate()["eval_loss"]
    Path(args.result).write_text(json.dumps({
        "steps": steps, "losses": losses, "train_s": train_s, "eval_s": time.perf_counter() - start, "held_out_loss": held_out,
        "setup_s": start - launched - train_s, "attention": model.config._attn_implementation}, indent=1))


# --- the parent -----------------------------------------------------------------------------

def weitiao_config(path: Path, args, train: Path, val: Path, runs: Path, checkpointing: bool = False) -> None:
    import yaml

    cfg = {"version": 1, "model": "smollm2-135m-instruct",
           "task": {"type": "causal_lm", "generate": {"samples": 0}},
           "data": {"train": str(train), "validation": str(val), "format": "alpaca", "max_length": args.max_length},
           "strategy": {"method": "lora", "r": LORA["r"], "alpha": LORA["alpha"], "lora_dropout": LORA["dropout"], "target_modules": "all-linear"},
           "training": {"max_steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "warmup_ratio": WARMUP_RATIO,
                        "weight_decay": WEIGHT_DECAY, "max_grad_norm": MAX_GRAD_NORM, "seed": args.seed, "num_threads": args.threads,
                        "log_every": 1, "progress": False, "gradient_checkpointing": checkpointing},
           "output": {"dir": str(runs)}}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def run_weitiao(args, r: int, config: Path, runs: Path, logs: Path, side: str = "weitiao") -> dict:
    from compare_images import run_child

    name = f"{side}-r{r}"
    rec = run_child([sys.executable, "-m", "weitiao", "train", str(config), "--name", name, "--overwrite"], logs / f"{name}.log", args.threads)
    run = runs / name
    if rec.get("rc") or not (run / "metrics.json").is_file():
        rec["error"] = f"weitiao failed; see {logs / f'{name}.log'}"
        return rec
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in records if "targets_per_s" in x]
    metrics = json.loads((run / "metrics.json").read_text())
    log = (logs / f"{name}.log").read_text()
    padding = next((float(line.split(":")[1].strip().rstrip("%")) / 100 for line in log.splitlines() if line.startswith("padding in training batches")), None)
    losses = [x["loss"] for x in steps]
    rec.update(targets_per_s=statistics.median(x["targets_per_s"] for x in steps[1:]) if len(steps) > 1 else None,
               losses=losses, held_out_loss=metrics["validation"]["loss"], padding=padding, train_s=metrics["train"]["seconds"])
    return rec


def run_trl(args, side: str, r: int, work: Path, logs: Path) -> dict:
    from compare_images import run_child

    result = work / f"{side}-r{r}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--work", str(work), "--result", str(result),
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--lr", str(args.lr),
           "--threads", str(args.threads), "--seed", str(args.seed)]
    rec = run_child(cmd, logs / f"{side}-r{r}.log", args.threads)
    if rec.get("rc") or not result.is_file():
        rec["error"] = f"{side} failed; see {logs / f'{side}-r{r}.log'}"
        return rec
    res = json.loads(result.read_text())
    timed = [s for s in res["steps"][1:] if s.get("s")]
    rec.update(targets_per_s=statistics.median(s["targets"] / s["s"] for s in timed) if timed else None,
               losses=res["losses"], held_out_loss=res["held_out_loss"], train_s=res["train_s"], attention=res["attention"],
               padding=1 - sum(s["real"] for s in res["steps"]) / max(1, sum(s["tokens"] for s in res["steps"])))
    return rec


def quarter_means(losses: list[float]) -> tuple[float | None, float | None]:
    if not losses:
        return None, None
    q = max(1, len(losses) // 4)
    return sum(losses[:q]) / q, sum(losses[-q:]) / q


def markdown(report: dict) -> str:
    a = report["args"]
    lines = ["# Instruction tuning: weitiao vs TRL SFTTrainer, LoRA on SmolLM2-135M-Instruct, alpaca_2k", "",
             f"`{report['command']}`", "",
             f"{report['machine']['cpu']}, {a['threads']} torch threads, load average {report['machine']['loadavg_start'][0]:.2f} at the start; "
             f"torch {report['machine']['torch']}, weitiao {report['machine']['weitiao_commit']}; {a['steps']} optimizer steps of {a['batch_size']} examples, max_length {a['max_length']}, lr {a['lr']}, "
             f"LoRA r {LORA['r']} (all linear layers); {report['n_train']} training / {report['n_held_out']} held-out records; "
             f"trl {report['versions'].get('trl')}, transformers {report['versions'].get('transformers')}, peft {report['versions'].get('peft')}.", "",
             "| repeat | side | target tokens/s | vs weitiao | padding | loss first / last quarter | held-out loss (ppl) | wall s | train s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r, rep in enumerate(report["repeats"]):
        base = rep.get("weitiao", {}).get("targets_per_s") or rep.get("weitiao_gc", {}).get("targets_per_s")
        for side in rep["order"]:
            x = rep[side]
            if x.get("error"):
                lines.append(f"| {r} | {side} | failed: {x['error']} | | | | | | | |")
                continue
            first, last = quarter_means(x.get("losses", []))
            ratio = f"{base / x['targets_per_s']:.2f}x slower" if not side.startswith("weitiao") and base and x.get("targets_per_s") else ""
            lines.append(f"| {r} | {side} | {x['targets_per_s']:.1f} | {ratio} | {100 * x['padding']:.1f}% | {first:.3f} / {last:.3f} | "
                         f"{x['held_out_loss']:.4f} ({math.exp(x['held_out_loss']):.2f}) | {x['wall_s']:.1f} | {x['train_s']:.1f} | "
                         f"{x['peak_rss_mb']:.0f} |")
    s = report["summary"]
    lines += ["", f"weitiao target tokens/s over the better TRL side (median over repeats): **{s['speedup_vs_best_trl']:.2f}x** "
              f"(target >= 1.3x: {'met' if s['speedup_vs_best_trl'] >= 1.3 else 'not met'}); peak RSS weitiao / lowest TRL: "
              f"{s['rss_ratio_vs_lowest_trl']:.2f} (target <= 1.0: {'met' if s['rss_ratio_vs_lowest_trl'] <= 1.0 else 'not met'}).", "",
              "Target tokens: response tokens (and each response's end-of-turn token) the loss is computed on. Padding: padded positions / "
              "all positions of the training batches (TRL packing: padding-free rows). Loss quarters: each side's training loss per step, "
              "averaged over the first and the last quarter of its steps (different batch orders, so compared in aggregate). Held-out: "
              "each side's own evaluation of the mean loss per response token on the held-out records after training."]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    if args.child:
        return trl_side(args)
    import importlib.metadata as md

    from harness import machine_info

    work = ROOT / "benchmarks" / "results" / "work" / ("compare_sft-quick" if args.quick else "compare_sft")
    logs, runs = work / "logs", work / "runs"
    logs.mkdir(parents=True, exist_ok=True)
    train, val = split_data(work, args.held_out)
    config, config_gc = work / "weitiao.yaml", work / "weitiao-gc.yaml"
    weitiao_config(config, args, train, val, runs)
    weitiao_config(config_gc, args, train, val, runs, checkpointing=True)
    sides = [s for s in args.sides.split(",") if s]
    report = {"command": "python " + " ".join(sys.argv), "args": vars(args), "machine": machine_info("compare_sft", None, ("torch",)),
              "n_train": len(json.loads(train.read_text())), "n_held_out": args.held_out,
              "versions": {p: md.version(p) for p in ("trl", "transformers", "peft", "torch")}, "repeats": []}
    for r in range(args.repeats):
        order = sides if r % 2 == 0 else list(reversed(sides))
        rep = {"order": order}
        for side in order:
            print(f"[repeat {r}] {side} ...", flush=True)
            rep[side] = (run_weitiao(args, r, config_gc if side == "weitiao_gc" else config, runs, logs, side) if side.startswith("weitiao")
                         else run_trl(args, side, r, work, logs))
            x = rep[side]
            done = x.get("error") or f"target tokens/s {x['targets_per_s']:.1f}, wall {x['wall_s']:.1f} s, held-out loss {x['held_out_loss']:.4f}"
            print(f"    {done}", flush=True)
        report["repeats"].append(rep)
    ratios, rss = [], []
    for rep in report["repeats"]:
        trl = [rep[s] for s in ("trl", "trl_packing") if s in rep and not rep[s].get("error")]
        if "weitiao" in rep and trl:
            ratios.append(rep["weitiao"]["targets_per_s"] / max(x["targets_per_s"] for x in trl))
            rss.append(rep["weitiao"]["peak_rss_mb"] / min(x["peak_rss_mb"] for x in trl))
    report["summary"] = {"speedup_vs_best_trl": statistics.median(ratios) if ratios else float("nan"),
                         "rss_ratio_vs_lowest_trl": statistics.median(rss) if rss else float("nan")}
    Path(args.out + ".json").write_text(json.dumps(report, indent=1))
    Path(args.out + ".md").write_text(markdown(report))
    print(markdown(report))
    print(f"written: {args.out}.md, {args.out}.json")


if __name__ == "__main__":
    main()
