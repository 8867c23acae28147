"""Freeze the embeddings and the lowest N layers; the layers above and the head learn.

Lower layers hold the most general features and change least in fine-tuning (Yosinski et
al. 2014, https://arxiv.org/abs/1411.1792), so freezing them saves compute with little loss.
"""

from weitiao.models.layers import find_parts, layer_index, require_layers
from weitiao.strategies import Selection, register, set_trainable


@register("freeze_bottom", options=("layers",))
def select(model, spec) -> Selection:
    parts = find_parts(model)
    n = require_layers(spec, parts, "freeze_bottom")
    embeddings = tuple(parts.embeddings)

    def learns(name: str) -> bool:
        i = layer_index(name, parts.layers_prefix)
        return not (name.startswith(embeddings) or (i is not None and i < n))

    set_trainable(model, learns)
    return Selection(model)
