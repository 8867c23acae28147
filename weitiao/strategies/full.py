"""Full fine-tuning: every parameter learns."""

from weitiao.strategies import register


@register("full")
def select(model, spec) -> None:
    for p in model.parameters():
        p.requires_grad_(True)
