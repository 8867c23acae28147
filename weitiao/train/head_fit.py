"""A frozen body's linear head fitted by a convex solver before gradient training.

With the whole body frozen and its output cached (head_only on a model adapter), the head is a
logistic regression on fixed features: L-BFGS finds its optimum, for each L2 strength of a grid,
and the validation metric picks the strength. The loop then starts from that head, evaluates it
first and keeps it unless gradient steps beat it (`strategy.head_fit: gradient` skips the solver).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # scikit-learn's C: the inverse L2 strength


def linear_head(model: nn.Module) -> nn.Linear | None:
    """The head when it is one linear layer (a model adapter's `weitiao_parts["head"]`), else None."""
    heads = (getattr(model, "weitiao_parts", None) or {}).get("head") or []
    if len(heads) != 1:
        return None
    module = model.get_submodule(heads[0].rstrip("."))
    return module if isinstance(module, nn.Linear) else None


def solve(x: np.ndarray, targets: tuple[str, np.ndarray], num_labels: int, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights [num_labels, features] and biases [num_labels] of the L2-regularised logistic regression.

    targets: ("single", label ids [n]) for softmax, or ("multi", 0/1 [n, num_labels]) for one sigmoid per label.
    A class never seen in training gets zero weights and a bias far below the others."""
    from sklearn.linear_model import LogisticRegression

    from weitiao.tasks.common.label_metrics import prior_log_odds

    kind, y = targets
    w, b = np.zeros((num_labels, x.shape[1]), dtype=np.float32), np.zeros(num_labels, dtype=np.float32)
    if kind == "multi":
        for j in range(num_labels):
            column = y[:, j]
            if column.min() == column.max():  # always or never: the prior alone
                b[j] = prior_log_odds(column.sum(), len(column))
                continue
            clf = LogisticRegression(C=c, max_iter=300).fit(x, column)
            w[j], b[j] = clf.coef_[0], clf.intercept_[0]
        return w, b
    clf = LogisticRegression(C=c, max_iter=300).fit(x, y)
    classes = clf.classes_.astype(int)
    b[:] = -30.0  # unseen classes
    if len(classes) == 2:  # one decision function: softmax of (-f/2, f/2) is the same model
        w[classes[0]], w[classes[1]] = -clf.coef_[0] / 2, clf.coef_[0] / 2
        b[classes[0]], b[classes[1]] = -clf.intercept_[0] / 2, clf.intercept_[0] / 2
    else:
        w[classes], b[classes] = clf.coef_, clf.intercept_
    return w, b


def fit_head(head: nn.Linear, features: np.ndarray, targets: tuple[str, np.ndarray], evaluate, metric: str,
             higher: bool) -> dict:
    """Fit `head` for each C of the grid, keep the C whose `evaluate()` (validation metrics) is best.

    Returns the report for metrics.json: the method, the C chosen, each C's validation value, seconds."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    start = time.perf_counter()
    tried, best = {}, None
    for c in C_GRID:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            w, b = solve(features, targets, head.out_features, c)
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(w))
            head.bias.copy_(torch.from_numpy(b))
        value = evaluate().get(metric)
        tried[str(c)] = value
        if value is not None and (best is None or (value > best[0] if higher else value < best[0])):
            best = (value, c, w, b)
    if best is None:
        return {}
    value, c, w, b = best
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w))
        head.bias.copy_(torch.from_numpy(b))
    return {"method": "L-BFGS logistic regression on the cached features", "C": c, f"validation_{metric}": value,
            "tried": tried, "seconds": round(time.perf_counter() - start, 2)}
