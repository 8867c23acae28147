"""Find the largest batch that fits in GPU memory, keeping the effective batch with accumulation."""

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
