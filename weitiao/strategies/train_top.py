"""Train only the top K layers and the head; everything below is frozen."""

from weitiao.models.layers import find_parts, layer_index, require_layers
from weitiao.strategies import Selection, register, set_trainable


@register("train_top", options=("layers",))
def select(model, spec) -> Selection:
    parts = find_parts(model)
    k = require_layers(spec, parts, "train_top")
    head = tuple(parts.head)
    top = parts.num_layers - k

    def learns(name: str) -> bool:
        i = layer_index(name, parts.layers_prefix)
        return name.startswith(head) or (i is not None and i >= top) or _after_stack(name, parts)

    set_trainable(model, learns)
    return Selection(model)


def _after_stack(name: str, parts) -> bool:
    """A final norm after the stack (Llama's model.norm) belongs with the top layers."""
    return layer_index(name, parts.layers_prefix) is None and not name.startswith(tuple(parts.embeddings)) and not name.startswith(tuple(parts.head))
