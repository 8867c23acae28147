"""Classification metrics from predicted probabilities (scikit-learn does the arithmetic)."""

from __future__ import annotations

import numpy as np


def classification_metrics(probs: np.ndarray, labels: list, names: list[str], multi_label: bool, threshold: float | str = 0.5) -> dict:
    """Metrics for one evaluation.

    Args:
        probs: [n, num_labels] softmax (single-label) or sigmoid (multi-label) outputs.
        labels: n label ids, or n lists of ids for multi-label.
        names: label names in id order.

    Returns:
        A flat dict of headline numbers plus `per_class` and (single-label) `confusion_matrix`.
    """
    if multi_label:
        return _multi_label(probs, labels, names, threshold)
    return _single_label(probs, np.asarray(labels), names)


def _single_label(probs: np.ndarray, y: np.ndarray, names: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    pred = probs.argmax(axis=1)
    ids = list(range(len(names)))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=ids, zero_division=0)
    out = {
        "accuracy": float(accuracy_score(y, pred)),
        "f1_macro": float(f1_score(y, pred, labels=ids, average="macro", zero_division=0)),
        "f1_micro": float(f1_score(y, pred, labels=ids, average="micro", zero_division=0)),
        "roc_auc": _roc_auc(probs, y, ids),
        "n": int(len(y)),
        "per_class": {names[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])} for i in ids},
        "confusion_matrix": confusion_matrix(y, pred, labels=ids).tolist(),
    }
    return out


def _roc_auc(probs: np.ndarray, y: np.ndarray, ids: list[int]) -> float | None:
    """Binary: AUC of the positive class. Multi-class: macro one-vs-rest over the classes present."""
    from sklearn.metrics import roc_auc_score

    present = sorted(set(y.tolist()))
    if len(present) < 2:
        return None
    if len(ids) == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    scores = [roc_auc_score(y == c, probs[:, c]) for c in present]
    return float(np.mean(scores))


def multi_hot(labels: list, num_labels: int) -> np.ndarray:
    """[n, num_labels] 0/1 (int64) from n lists of label ids."""
    y = np.zeros((len(labels), num_labels), dtype=np.int64)
    for row, ids in enumerate(labels):
        y[row, list(ids)] = 1
    return y


def prior_log_odds(counts, n: int):
    """log(p / (1 - p)) of each label's frequency, p = (count + 0.5) / (n + 1): never 0 or 1."""
    p = (np.asarray(counts, dtype=np.float64) + 0.5) / (n + 1)
    return np.log(p / (1 - p))


# The thresholds `threshold: auto` chooses among: 0.05, 0.10, ..., 0.95.
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)


def best_threshold(probs: np.ndarray, y: np.ndarray) -> float:
    """The one decision threshold, for every label, with the highest micro-F1 on these rows (the
    lowest such when several tie)."""
    true = y.astype(bool)
    best, chosen = -1.0, 0.5
    for t in THRESHOLDS:
        pred = probs >= t
        tp = int((pred & true).sum())
        f1 = 2 * tp / (int(pred.sum()) + int(true.sum())) if tp else 0.0
        if f1 > best:
            best, chosen = f1, float(t)
    return chosen


def _multi_label(probs: np.ndarray, labels: list, names: list[str], threshold: float | str) -> dict:
    """`threshold: "auto"` scores at the threshold best for these rows (validation) and reports it."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support, roc_auc_score

    y = multi_hot(labels, probs.shape[1])
    if threshold == "auto":
        threshold = best_threshold(probs, y)
    pred = (probs >= threshold).astype(int)
    p, r, f, s = precision_recall_fscore_support(y, pred, zero_division=0)
    present = [c for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
    auc = float(np.mean([roc_auc_score(y[:, c], probs[:, c]) for c in present])) if present else None
    return {
        "f1_micro": float(f1_score(y, pred, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(y, pred, average="macro", zero_division=0)),
        "subset_accuracy": float(accuracy_score(y, pred)),
        "roc_auc": auc,
        "threshold": float(threshold),
        "n": int(len(y)),
        "per_class": {names[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])} for i in range(len(names))},
    }


# The scalar metrics each kind of classifier produces (what training.metric may name).
SINGLE_LABEL = ("accuracy", "f1_macro", "f1_micro", "roc_auc", "loss")
MULTI_LABEL = ("f1_micro", "f1_macro", "subset_accuracy", "roc_auc", "loss")
