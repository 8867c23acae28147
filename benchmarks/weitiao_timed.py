"""`python -m weitiao ...` with timers, for benchmarks/compare_trainer.py.

weitiao's own `train.seconds` covers its whole loop, including the evaluation at each epoch
end, saving the best model and the epoch-end checkpoints. Trainer's `train_runtime` (with
eval_strategy="no", save_strategy="no") has none of these, so this launcher times them and
subtracts them. It wraps only the callables that the recipe hands to `train_loop`
(evaluate, save_best, make_batch) and the loop's checkpoints (`PendingCheckpoint`); weitiao itself runs
unchanged, from its own command line.

It also counts the real tokens and padded positions of the training batches (from their
attention_mask, like the Trainer side), and, for time-to-accuracy runs, stops at a target dev
accuracy or after a budget of training time (evaluation excluded).

    .venv/bin/python benchmarks/weitiao_timed.py --timings t.json [--target 0.88 --budget-min 20] \
        -- train CONFIG --name X --overwrite --set ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


class StopRun(Exception):
    """Target accuracy reached or budget spent: leave the loop (the run folder stays as it is)."""


def instrument(stats: dict, target: float | None, budget_s: float | None) -> None:
    import weitiao.train.loop as loop

    real_loop = loop.train_loop
    pending = loop.PendingCheckpoint
    clock = {"start": None}

    def training_seconds() -> float:
        return time.perf_counter() - clock["start"] - stats["excluded_s"]

    def excluded(fn, key: str):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - start
                stats["excluded_s"] += dt
                stats[key] = stats.get(key, 0.0) + dt
        return timed

    def timed_loop(model, accelerator, **kw):
        evaluate, make_batch = excluded(kw["evaluate"], "eval_s"), kw["make_batch"]

        def evaluate_and_watch(m):
            train_s = training_seconds()
            metrics = evaluate(m)
            acc = metrics.get("accuracy")
            stats["history"].append({"step": stats["batches"], "train_s": round(train_s, 2), "accuracy": acc})
            if target is not None and acc is not None and acc >= target:
                stats["time_to_target_s"], stats["step_at_target"] = round(train_s, 2), stats["batches"]
                raise StopRun
            return metrics

        def counted_batch(index):
            if budget_s is not None and training_seconds() > budget_s:
                stats["budget_exhausted"] = True
                raise StopRun
            batch = make_batch(index)
            mask = batch["attention_mask"]  # [batch, longest]
            stats["samples"] += mask.shape[0]
            stats["real_tokens"] += int(mask.sum())
            stats["positions"] += mask.numel()
            stats["batches"] += 1
            return batch

        kw.update(evaluate=evaluate_and_watch, save_best=excluded(kw["save_best"], "save_best_s"), make_batch=counted_batch)
        clock["start"] = time.perf_counter()
        try:
            return real_loop(model, accelerator, **kw)
        finally:
            stats["loop_s"] = time.perf_counter() - clock["start"]

    loop.train_loop = timed_loop
    # the main thread's share of a checkpoint: snapshotting the state, and waiting for the write to end
    pending.__init__ = excluded(pending.__init__, "checkpoint_s")
    pending.finish = excluded(pending.finish, "checkpoint_s")


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timings", required=True, help="JSON file for the timings and counts")
    ap.add_argument("--target", type=float, default=None, help="stop when dev accuracy reaches this")
    ap.add_argument("--budget-min", type=float, default=None, help="stop after this many minutes of training (evaluation excluded)")
    args = ap.parse_args(argv[:split])
    stats = {"loop_s": None, "excluded_s": 0.0, "samples": 0, "real_tokens": 0, "positions": 0, "batches": 0, "history": []}
    instrument(stats, args.target, args.budget_min * 60 if args.budget_min else None)

    from weitiao.cli import leave
    from weitiao.cli import main as weitiao_main

    rc = 1
    try:
        rc = weitiao_main(argv[split + 1:])
    except StopRun:
        rc = 0
    finally:
        if stats["loop_s"] is not None:
            stats["train_seconds"] = stats["loop_s"] - stats["excluded_s"]
        stats["padding"] = 1 - stats["real_tokens"] / stats["positions"] if stats["positions"] else None
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            stats["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        Path(args.timings).write_text(json.dumps(stats, indent=2))
    return leave(rc)  # as the weitiao command does


if __name__ == "__main__":
    raise SystemExit(main())
