"""Dynamic micro-batching. Requests put their inputs on a queue; one worker thread takes the first
waiting request, gathers those that arrive within `max_wait` (up to `max_batch` inputs, all with
the same settings), scores them as one batch (length-bucketed by the scorer: rows sorted by
length, so short inputs are not padded to long ones), and hands each caller its own results in
order. The model runs on that thread, off the event loop: /health answers while it works.

A batch that fails is scored again request by request, so one bad request fails alone.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable


@dataclass
class Job:
    items: list
    key: Hashable  # jobs are batched together only with jobs of the same key (e.g. generation settings)
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """`work(items, key) -> results` (one per item, in order) called on batches of queued jobs.

    Args:
        max_batch: inputs scored at once at most (a single larger request is scored whole).
        max_wait_s: how long the first request of a batch waits for company.
        enabled: False: every request is scored alone, as it comes (the benchmark's baseline).
    """

    def __init__(self, work: Callable[[list, Hashable], list], max_batch: int = 32, max_wait_s: float = 0.005, enabled: bool = True):
        self.work, self.max_batch, self.max_wait_s, self.enabled = work, max_batch, max_wait_s, enabled
        self.lock = threading.Lock()  # held while the model runs: other users of the model (streaming) take it too
        self._queue: queue.Queue = queue.Queue()
        self._held: collections.deque = collections.deque()  # jobs taken off the queue that did not fit their batch
        self.batches = 0  # batches scored (for /v1/model and tests)
        self._thread = threading.Thread(target=self._loop, name="weitiao-batcher", daemon=True)
        self._thread.start()

    def submit(self, items: list, key: Hashable = None) -> Future:
        job = Job(list(items), key)
        self._queue.put(job)
        return job.future

    @property
    def alive(self) -> bool:
        """Whether the thread that scores batches still runs (/health reports it)."""
        return self._thread.is_alive()

    def close(self) -> None:
        """Finish the queued jobs, then stop the worker."""
        self._queue.put(None)
        self._thread.join()

    def _next(self, timeout: float | None):
        if self._held:
            return self._held.popleft()
        return self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()

    def _loop(self) -> None:
        while True:
            first = self._next(None)
            if first is None:
                return
            jobs, count, stop = [first], len(first.items), False
            deadline = time.monotonic() + self.max_wait_s
            skipped = []
            while self.enabled and count < self.max_batch:
                try:
                    job = self._next(deadline - time.monotonic())
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                if job.key != first.key or count + len(job.items) > self.max_batch:
                    skipped.append(job)
                    if count + len(job.items) > self.max_batch:
                        break
                    continue
                jobs.append(job)
                count += len(job.items)
            self._held.extendleft(reversed(skipped))
            self._run(jobs)
            if stop:
                while self._held:
                    self._run([self._held.popleft()])
                return

    def _run(self, jobs: list[Job]) -> None:
        jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        try:
            results = self._score([x for j in jobs for x in j.items], jobs[0].key)
        except Exception as e:  # noqa: BLE001  (handed to the caller; the worker goes on)
            if len(jobs) == 1:
                jobs[0].future.set_exception(e)
                return
            for job in jobs:  # find the request that failed: each scored alone
                try:
                    job.future.set_result(self._score(job.items, job.key))
                except Exception as err:  # noqa: BLE001
                    job.future.set_exception(err)
            return
        at = 0
        for job in jobs:
            job.future.set_result(results[at:at + len(job.items)])
            at += len(job.items)

    def _score(self, items: list, key: Hashable) -> list[Any]:
        with self.lock:
            self.batches += 1
            out = self.work(items, key)
        if len(out) != len(items):
            raise RuntimeError(f"{len(out)} results for {len(items)} inputs")
        return out
