"""Does writing the epoch-end checkpoint while the evaluation runs save time? One weitiao run
as it is ("overlap"), or with the checkpoint's write finished before the evaluation starts
("seq"); prints the loop's and the evaluations' seconds. Not a test; alternate the two:

    for m in overlap seq overlap seq; do .venv/bin/python benchmarks/checkpoint_overlap.py $m train CONFIG --name x --overwrite; done
"""

from __future__ import annotations

import sys
import time

import weitiao.train.checkpoint as checkpoint
import weitiao.train.loop as loop
import weitiao.train.recipe as recipe


def main() -> None:
    mode, argv = sys.argv[1], sys.argv[2:]
    if mode == "seq":
        start_write = checkpoint.PendingCheckpoint.__init__

        def write_first(self, *args, **kwargs):
            start_write(self, *args, **kwargs)
            self.thread.join()

        checkpoint.PendingCheckpoint.__init__ = write_first
    seconds = {"eval": 0.0}
    evaluate, train_loop = recipe.TaskSteps.evaluate, loop.train_loop

    def timed_eval(*args, **kwargs):
        start = time.perf_counter()
        try:
            return evaluate(*args, **kwargs)
        finally:
            seconds["eval"] += time.perf_counter() - start

    def timed_loop(*args, **kwargs):
        start = time.perf_counter()
        try:
            return train_loop(*args, **kwargs)
        finally:
            seconds["loop"] = time.perf_counter() - start

    recipe.TaskSteps.evaluate, loop.train_loop = timed_eval, timed_loop
    from weitiao.cli import run

    run(argv)
    print(mode, {k: round(v, 2) for k, v in seconds.items()}, file=sys.stderr)


if __name__ == "__main__":
    main()
