"""Freeze the embeddings and the lowest N layers; the layers above and the head learn.

Lower layers hold the most general features and change least in fine-tuning (Yosinski et
al. 2014, https://arxiv.org/abs/1411.1792), so freezing them saves compute with little loss.
"""

from weitiao.errors import UserError
from weitiao.strategies import register
from weitiao.strategies.layers import find_parts, layer_index


@register("freeze_bottom")
def select(model, spec) -> None:
    parts = find_parts(model)
    n = spec.layers
    if n is None or n > parts.num_layers:
        raise UserError("strategy.layers", f"freeze_bottom needs 0..{parts.num_layers} layers, got {n}",
                        f"set strategy: {{method: freeze_bottom, layers: N}} with N <= {parts.num_layers}")
    embeddings = tuple(parts.embeddings)
    for name, p in model.named_parameters():
        i = layer_index(name, parts.layers_prefix)
        frozen = name.startswith(embeddings) or (i is not None and i < n)
        p.requires_grad_(not frozen)
