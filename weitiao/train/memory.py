"""Memory: the largest batch that fits in GPU memory; handing freed host memory back between phases."""

from __future__ import annotations

from typing import Callable

import torch


def fit_batch_size(try_batch: Callable[[int], None], batch_size: int, grad_accum: int) -> tuple[int, int]:
    """Halve the batch (doubling accumulation) until `try_batch(size)` runs without running out of memory.

    Args:
        try_batch: runs a forward and backward pass on the longest batch of this size;
            raises torch.OutOfMemoryError when it does not fit.

    Returns:
        (batch_size, grad_accum) with batch_size · grad_accum unchanged.

    Raises:
        torch.OutOfMemoryError: not even a batch of 1 fits.
    """
    while True:
        try:
            try_batch(batch_size)
            return batch_size, grad_accum
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
            batch_size, grad_accum = max(1, batch_size // 2), grad_accum * 2


def release_host_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the OS (glibc `malloc_trim`).

    Between phases (feature cache built, evaluation done, training over) the large activation
    buffers a phase freed stay in the allocator's free lists, counted in the process's memory;
    the next phase then grows on top of them. Trimming makes the peak the largest phase rather
    than a sum of phases. Does nothing where glibc is absent.

    Only the young garbage generations are collected (what the phase just dropped): a full
    collection walks every object that transformers and torch keep alive, 0.2 s each time.
    """
    import ctypes
    import gc

    gc.collect(1)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
