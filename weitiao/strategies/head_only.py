"""Head only: the pretrained network is frozen; only the task head learns (a linear probe, or
BERT's pooler + classifier)."""

from weitiao.models.layers import find_parts
from weitiao.strategies import Selection, register, set_trainable


@register("head_only")
def select(model, spec) -> Selection:
    head = tuple(find_parts(model).head)
    set_trainable(model, lambda name: name.startswith(head))
    return Selection(model)
