"""The optimizer and the learning-rate schedule (parameter groups: strategies/lr_groups.py)."""

from __future__ import annotations

import math

import torch


def build_optimizer(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """AdamW; the fused kernel (one pass over all parameters, CPU and CUDA) when every
    parameter is a float tensor on one device, which is the common case."""
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.is_floating_point() for p in params) and len({p.device for p in params}) == 1
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=fused)


def warmup_steps(total_steps: int, ratio: float, steps: int | None) -> int:
    return steps if steps is not None else math.ceil(total_steps * ratio)


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str, warmup: int, total_steps: int, num_cycles: int = 1):
    """Linear warmup to each group's own LR, then linear, cosine, cosine with hard restarts
    (`num_cycles` cycles) decay to 0, or constant.

    One LambdaLR multiplies every group's initial LR by the same factor, so groups with
    different LRs keep their ratio through the whole schedule.
    """

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if kind == "cosine_restarts":
            return 0.0 if progress >= 1.0 else 0.5 * (1.0 + math.cos(math.pi * ((progress * num_cycles) % 1.0)))
        return 1.0 - progress

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
