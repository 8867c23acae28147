"""Cleaning steps, each reporting how many rows it touched.

Order: strip whitespace, drop empty texts, drop exact duplicates (within a split), then the
leakage check across splits (texts of the training data that also appear in evaluation data).
"""

from __future__ import annotations

from weitiao.data.examples import Examples


def clean_split(ex: Examples, drop_duplicates: bool = True) -> tuple[Examples, dict[str, int]]:
    """Strip, drop empty texts and exact duplicates. Returns the kept rows and the counts."""
    text = [t.strip() if isinstance(t, str) else t for t in ex.text]  # a tuple of words (token tasks) stays as it is
    pair = [p.strip() for p in ex.pair] if ex.pair is not None else None
    stripped = sum(a != b for a, b in zip(text, ex.text))
    keep, seen, empty, dupes = [], set(), 0, 0
    for i, t in enumerate(text):
        if not t or (pair is not None and not pair[i]):
            empty += 1
            continue
        key = (t, pair[i] if pair is not None else None, _label_key(ex.labels, i))
        if drop_duplicates and key in seen:
            dupes += 1
            continue
        seen.add(key)
        keep.append(i)
    kept = Examples(text, pair, ex.labels, ex.lines, ex.source, meta=ex.meta).subset(keep)
    return kept, {"rows": len(ex), "stripped": stripped, "empty_dropped": empty, "duplicates_dropped": dupes, "kept": len(kept)}


def _label_key(labels, i):
    if labels is None:
        return None
    return tuple(labels[i]) if isinstance(labels[i], list) else labels[i]


def find_leakage(train: Examples, others: list[Examples]) -> list[int]:
    """Indices of training rows whose text (and pair) also appears in any evaluation split."""
    held_out = {(t, p) for ex in others for t, p in zip(ex.text, ex.pair or [None] * len(ex))}
    pairs = train.pair or [None] * len(train)
    return [i for i, key in enumerate(zip(train.text, pairs)) if key in held_out]
