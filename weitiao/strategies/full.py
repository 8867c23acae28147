"""Full fine-tuning: every parameter learns."""

from weitiao.strategies import Selection, register, set_trainable


@register("full")
def select(model, spec) -> Selection:
    set_trainable(model, lambda name: True)
    return Selection(model)
