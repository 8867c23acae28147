"""Length-grouped batches with dynamic padding.

Padding every batch to a fixed length wastes most of the compute on short texts; padding to
the longest text of a random batch still wastes a lot. Grouping texts of similar length into
a batch (after a seeded shuffle, within large buckets, so batches still differ every epoch)
keeps padding small while keeping the order random enough for SGD.
"""

from __future__ import annotations

import random


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, epoch: int,
                           bucket_batches: int = 50, group: bool = True) -> list[list[int]]:
    """Split indices 0..len(lengths)-1 into batches for one epoch.

    Args:
        lengths: token count of each example.
        batch_size: examples per batch (the last batch may be smaller).
        seed, epoch: the shuffle depends only on both, so a run is repeatable and a
            resumed run can rebuild the same epoch.
        bucket_batches: a bucket holds this many batches' worth of examples; examples are
            sorted by length inside a bucket only.
        group: False gives plain shuffled batches.

    Returns:
        A list of batches, each a list of indices, in a shuffled order.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group:
        size = batch_size * bucket_batches
        buckets = [sorted(order[i : i + size], key=lambda j: lengths[j], reverse=True) for i in range(0, len(order), size)]
        order = [j for b in buckets for j in b]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def sorted_batches(lengths: list[int], batch_size: int, groups: list[int] | None = None) -> list[list[int]]:
    """Evaluation batches: longest first, no shuffle (order of results is restored by index).

    `groups` (one id per row, e.g. each row's task): a batch never mixes groups."""
    if groups is not None:
        members: dict[int, list[int]] = {}
        for j, g in enumerate(groups):
            members.setdefault(g, []).append(j)
        return [[rows[j] for j in b] for rows in members.values() for b in sorted_batches([lengths[j] for j in rows], batch_size)]
    order = sorted(range(len(lengths)), key=lambda j: lengths[j], reverse=True)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of padded positions in these batches (0 = no padding)."""
    total = sum(max(lengths[j] for j in b) * len(b) for b in batches)
    return 1.0 - sum(lengths) / total if total else 0.0
