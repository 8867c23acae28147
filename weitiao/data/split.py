"""Stratified, seeded train/validation/test splits for data that comes as one file."""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from weitiao.data.examples import Examples
from weitiao.errors import UserError


class Split(NamedTuple):
    train: Examples
    validation: Examples
    test: Examples | None
    stratified_by: str  # "label", "label set" (multi-label), or "none (...)": what the summary reports


def stratify_key(labels: list | None) -> list | None:
    """Single-label: the label. Multi-label: the whole label set, so that every combination of
    labels keeps its share in each part (the first label alone would let the others drift).

    Keys with fewer than 2 rows cannot be stratified; they share one key.
    """
    if labels is None:
        return None
    keys = [(tuple(x) if isinstance(x, list) else (x,)) for x in labels]
    counts = Counter(keys)
    number: dict = {}  # each key as an int: scikit-learn would read tuples as rows of a 2-D array
    key = [number.setdefault(k, len(number)) if counts[k] >= 2 else -1 for k in keys]
    return key if len(set(key) - {-1}) > 0 else None  # all rare: nothing to stratify by


def split_examples(ex: Examples, train: float, validation: float, test: float, seed: int,
                   key: list | None = None, key_name: str | None = None) -> Split:
    """Split into train/validation/test with the given ratios (summing to 1), stratified by label
    (multi-label: by label set; or by the given `key`, one per example, named `key_name`) where
    every part can hold every key, else at random.

    Raises:
        UserError: too few rows to give every part at least one.
    """
    index = list(range(len(ex)))
    if key_name is None:
        key, key_name = stratify_key(ex.labels), "label set" if ex.labels and isinstance(ex.labels[0], list) else "label"
    held = validation + test
    tr, rest, stratified = _split(index, held, seed, key, len(ex))
    if test > 0:
        rest_key = [key[i] for i in rest] if key else None
        va, te, stratified_rest = _split(rest, test / held, seed, rest_key, len(ex))
        stratified = stratified and stratified_rest
    how = key_name if stratified else f"none (too few rows per {key_name})"
    if test <= 0:
        return Split(ex.subset(tr), ex.subset(rest), None, how)
    return Split(ex.subset(tr), ex.subset(va), ex.subset(te), how)


def _split(index: list[int], size: float, seed: int, key: list | None, rows: int) -> tuple[list[int], list[int], bool]:
    from sklearn.model_selection import train_test_split

    if key is not None:
        try:
            return *train_test_split(index, test_size=size, random_state=seed, stratify=key), True
        except ValueError:  # too few rows per key for the requested sizes
            pass
    try:
        return *train_test_split(index, test_size=size, random_state=seed), False
    except ValueError:  # too few rows for any split
        raise UserError("data.split", f"{rows} training rows are too few to split into train, validation and test",
                        "give a validation file in data.validation, or more rows") from None
