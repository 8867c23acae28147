"""Optimizer parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

# Biases and normalization weights get no weight decay (as in BERT and most recipes since).
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight", "norm.weight", "ln_")


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups over the trainable parameters: with decay, and without (bias, norms)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if any(k in name for k in NO_DECAY) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "lr": lr, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "lr": lr, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


def build_optimizer(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)


def warmup_steps(total_steps: int, ratio: float, steps: int | None) -> int:
    return steps if steps is not None else math.ceil(total_steps * ratio)


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str, warmup: int, total_steps: int):
    """Linear warmup to each group's own LR, then linear or cosine decay to 0 (or constant).

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
        return 1.0 - progress

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
