"""The trainable-parameter table printed at the start of every run."""

from __future__ import annotations

from collections import OrderedDict

from weitiao.models.layers import find_parts, group_name, plain_named_parameters, unwrap


def parameter_rows(model) -> list[tuple[str, int, int]]:
    """(module, trainable, total) per top-level module, layers of the stack one row each."""
    parts = find_parts(model)
    base = getattr(unwrap(model), "base_model_prefix", "")
    rows: OrderedDict[str, list[int]] = OrderedDict()
    for name, p in plain_named_parameters(model):
        row = rows.setdefault(group_name(name, parts, base), [0, 0])
        row[0] += p.numel() if p.requires_grad else 0
        row[1] += p.numel()
    return [(k, v[0], v[1]) for k, v in rows.items()]


def parameter_table(model) -> str:
    rows = parameter_rows(model)
    trainable, total = sum(r[1] for r in rows), sum(r[2] for r in rows)
    width = max(len(r[0]) for r in rows + [("module", 0, 0)])
    lines = [f"{'module':<{width}}  {'trainable':>12}  {'total':>12}  {'%':>6}"]
    for name, t, n in rows + [("all", trainable, total)]:
        lines.append(f"{name:<{width}}  {t:>12,}  {n:>12,}  {100 * t / max(n, 1):>5.1f}%")
    return "\n".join(lines)
