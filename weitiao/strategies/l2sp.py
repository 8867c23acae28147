"""L2-SP: weight decay toward the pretrained weights instead of toward zero.

Li, Grandvalet & Davoine 2018, "Explicit Inductive Bias for Transfer Learning with
Convolutional Networks", https://arxiv.org/abs/1802.01483:

    Ω(w) = α/2 · ‖w_S − w⁰_S‖²  +  β/2 · ‖w_new‖²

where w_S are the weights that came from the pretrained model (w⁰_S their starting values)
and w_new the newly initialised ones (the task head).
"""

from __future__ import annotations

import torch


class L2SP:
    """Holds the starting point; `penalty()` is added to the loss every step.

    Args:
        pretrained: (parameter, ...) pairs to pull toward their value now.
        new: parameters to pull toward zero.
    """

    def __init__(self, pretrained: list[torch.nn.Parameter], new: list[torch.nn.Parameter], alpha: float, beta: float):
        self.pairs = [(p, p.detach().clone()) for p in pretrained]
        self.new = list(new)
        self.alpha, self.beta = alpha, beta

    def penalty(self) -> torch.Tensor:
        total = torch.zeros(())
        if self.alpha:
            # The starting values follow their parameters to the GPU once, not on every step.
            self.pairs = [(p, p0 if p0.device == p.device else p0.to(p.device)) for p, p0 in self.pairs]
            moved = [((p - p0) ** 2).sum() for p, p0 in self.pairs if p.requires_grad]
            if moved:
                total = total.to(moved[0].device) + self.alpha / 2 * torch.stack(moved).sum()
        if self.beta:
            sizes = [(p**2).sum() for p in self.new if p.requires_grad]
            if sizes:
                total = total.to(sizes[0].device) + self.beta / 2 * torch.stack(sizes).sum()
        return total


def l2sp_for(model, new_names: set[str], alpha: float, beta: float, only: set[int] | None = None) -> L2SP | None:
    """The regularizer over `model`'s parameters (names as the unwrapped model spells them):
    those in `new_names` are new, the rest pretrained. `only`: ids of the parameters to
    include (those the optimizer holds); default all."""
    from weitiao.models.layers import plain_named_parameters

    if not alpha and not beta:
        return None
    named = [(n, p) for n, p in plain_named_parameters(model) if only is None or id(p) in only]
    return L2SP([p for n, p in named if n not in new_names], [p for n, p in named if n in new_names], alpha, beta)
