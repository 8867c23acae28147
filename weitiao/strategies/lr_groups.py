"""The gradient controller: optimizer parameter groups with their own learning rates.

- Layer-wise LR decay (Howard & Ruder 2018; Clark et al. 2020, ELECTRA): layer l of L gets
  lr · decay^(L − l) with layers numbered 1..L from the bottom and the embeddings as layer
  0, the lowest rate: the "pyramid". The head and anything above the stack get lr.
- `head_lr` sets the head's LR outright; `lr_overrides` maps regexes to LRs (first match wins).
- Biases and normalization weights get no weight decay.
"""

from __future__ import annotations

import re
from collections import OrderedDict

from weitiao.models.layers import find_parts, layer_index, plain_named_parameters

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight", "norm.weight", "ln_")


def parameter_lr(name: str, parts, lr: float, layer_lr_decay: float | None, head_lr: float | None,
                 overrides: list[tuple[re.Pattern, float]]) -> tuple[str, float]:
    """(group label, learning rate) of one parameter."""
    for rx, value in overrides:
        if rx.search(name):
            return f"override {rx.pattern}", value
    if name.startswith(tuple(parts.head)):
        label = next((g for p, g in (parts.head_groups or {}).items() if name.startswith(p)), "head")
        return label, head_lr if head_lr is not None else lr
    if layer_lr_decay is None:
        return "body", lr
    i = layer_index(name, parts.layers_prefix)
    if i is not None:
        return f"layer {i}", lr * layer_lr_decay ** (parts.num_layers - (i + 1))
    if name.startswith(tuple(parts.embeddings)):
        return "embeddings", lr * layer_lr_decay ** parts.num_layers
    return "top", lr


def build_param_groups(model, params: list | None, lr: float, weight_decay: float, layer_lr_decay: float | None = None,
                       head_lr: float | None = None, lr_overrides: dict[str, float] | None = None) -> list[dict]:
    """AdamW groups, one per (LR, decay) pair, named for the table printed at start.

    Args:
        params: the parameters to optimize (default: those with requires_grad). Gradual
            unfreezing passes every parameter, frozen ones included.
    """
    wanted = {id(p) for p in params} if params is not None else None
    parts = _parts_or_none(model)
    overrides = [(re.compile(k), v) for k, v in (lr_overrides or {}).items()]
    groups: OrderedDict[tuple, dict] = OrderedDict()
    for name, p in plain_named_parameters(model):
        if (wanted is None and not p.requires_grad) or (wanted is not None and id(p) not in wanted):
            continue
        label, group_lr = parameter_lr(name, parts, lr, layer_lr_decay, head_lr, overrides) if parts else ("body", lr)
        decay = 0.0 if any(k in name for k in NO_DECAY) else weight_decay
        group = groups.setdefault((label, decay), {"params": [], "lr": group_lr, "weight_decay": decay, "name": label, "numel": 0})
        group["params"].append(p)
        group["numel"] += p.numel()
    return list(groups.values())


def _parts_or_none(model):
    try:
        return find_parts(model)
    except Exception:  # a model without a recognizable stack: one LR for all
        return None


def lr_table(groups: list[dict]) -> str:
    """One line per group label: its LR and parameter count (decay and no-decay merged)."""
    rows: OrderedDict[str, list] = OrderedDict()
    for g in groups:
        row = rows.setdefault(g["name"], [g["lr"], 0])
        row[1] += g["numel"]
    return "\n".join(f"  {name:<24} lr={lr:.3g}  params={n:,}" for name, (lr, n) in rows.items())
