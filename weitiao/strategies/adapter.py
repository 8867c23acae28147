"""The `adapter` strategy: bottleneck adapters (weitiao/models/adapters.py, written small since
peft has none) learn; everything else except the head (and norms, as in Houlsby) is frozen."""

from __future__ import annotations

from weitiao.models.adapters import insert_adapters
from weitiao.models.layers import find_parts
from weitiao.strategies import Selection, register, set_trainable


@register("adapter", options=("adapter_size", "adapter_type"))
def select(model, spec) -> Selection:
    head = tuple(find_parts(model).head)
    # Norms by module type: BERT's `LayerNorm`, Llama's `input_layernorm` / `norm` (RMSNorm).
    norms = tuple(f"{n}." for n, m in model.named_modules() if n and "Norm" in type(m).__name__)
    insert_adapters(model, spec.adapter_size, spec.adapter_type)
    set_trainable(model, lambda name: ".adapter." in name or name.startswith(head + norms))
    model.config.weitiao_adapter = {"size": spec.adapter_size, "type": spec.adapter_type}
    return Selection(model)
