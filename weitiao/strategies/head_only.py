"""Head only: the pretrained network is frozen; only the task head learns (linear probing+)."""

from weitiao.strategies import register
from weitiao.strategies.layers import find_parts


@register("head_only")
def select(model, spec) -> None:
    head = tuple(find_parts(model).head)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(head))
