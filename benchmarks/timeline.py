"""Where the whole `weitiao train` process spends its time: a timeline of its phases.

Runs the weitiao command in this process with the phases wrapped in timers and prints when each
started and how long it took (seconds since this script started), then the exit. Not a test.

    .venv/bin/python benchmarks/timeline.py [--teardown] train CONFIG --name X --overwrite [--set ...]

With --teardown the process ends the ordinary way (Python's interpreter teardown) instead of
as the weitiao command does; time both from outside (/usr/bin/time) to see what teardown costs.
"""

from __future__ import annotations

import sys
import time

T0 = time.perf_counter()
marks: list[tuple[float, str]] = []


def mark(label: str) -> None:
    marks.append((time.perf_counter() - T0, label))


def timed(owner, name: str, label: str) -> None:
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        mark(f"{label} starts")
        try:
            return real(*args, **kwargs)
        finally:
            mark(f"{label} ends ({time.perf_counter() - start:.2f} s)")

    setattr(owner, name, wrapper)


def main() -> int:
    import weitiao.train.loop as loop
    import weitiao.train.memory as memory
    import weitiao.train.recipe as recipe

    mark("imports of the timer (torch included)")
    timed(recipe, "prepare", "prepare: data, tokenizer, model, strategy")
    timed(loop, "train_loop", "training loop")
    timed(recipe.TaskSteps, "evaluate", "evaluation")
    timed(recipe, "save_model", "saving the best model")
    timed(loop.PendingCheckpoint, "finish", "checkpoint: waiting for its write, meta, manifest")
    timed(memory, "release_host_memory", "handing freed memory back")
    timed(recipe, "finish", "finish: best model, final scores, metrics.json")
    from weitiao.cli import leave, run

    teardown = sys.argv[1:2] == ["--teardown"]
    code = run(sys.argv[2:] if teardown else sys.argv[1:])
    mark("command done (the weitiao command exits here without interpreter teardown)")
    for t, label in marks:
        print(f"{t:7.2f}  {label}", file=sys.stderr)
    return code if teardown else leave(code)


if __name__ == "__main__":
    raise SystemExit(main())
