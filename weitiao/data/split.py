"""Stratified, seeded train/validation/test splits for data that comes as one file."""

from __future__ import annotations

from collections import Counter

from weitiao.data.examples import Examples
from weitiao.errors import UserError


def stratify_key(labels: list | None) -> list | None:
    """Single-label: the label. Multi-label: the first label (a common, cheap approximation).

    Classes with fewer than 2 rows cannot be stratified; they fall back to one shared key.
    """
    if labels is None:
        return None
    keys = [(tuple(x[:1]) if isinstance(x, list) else x) for x in labels]
    counts = Counter(keys)
    return [k if counts[k] >= 2 else "rare" for k in keys]


def split_examples(ex: Examples, train: float, validation: float, test: float, seed: int) -> tuple[Examples, Examples, Examples | None]:
    """Split into train/validation/test with the given ratios (summing to 1), stratified by label.

    Raises:
        UserError: too few rows to give every part at least one.
    """
    index = list(range(len(ex)))
    key = stratify_key(ex.labels)
    held = validation + test
    tr, rest = _split(index, held, seed, key, len(ex))
    if test <= 0:
        return ex.subset(tr), ex.subset(rest), None
    rest_key = [key[i] for i in rest] if key else None
    va, te = _split(rest, test / held, seed, rest_key, len(ex))
    return ex.subset(tr), ex.subset(va), ex.subset(te)


def _split(index: list[int], size: float, seed: int, key: list | None, rows: int) -> tuple[list[int], list[int]]:
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(index, test_size=size, random_state=seed, stratify=key)
    except ValueError:  # too few rows per class for the requested sizes
        pass
    try:
        return train_test_split(index, test_size=size, random_state=seed)
    except ValueError:  # too few rows for any split
        raise UserError("data.split", f"{rows} training rows are too few to split into train, validation and test",
                        "give a validation file in data.validation, or more rows") from None
