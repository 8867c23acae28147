"""Bottleneck adapter modules and where they go in a layer (the `adapter` strategy trains them).

Houlsby et al. 2019 (https://arxiv.org/abs/1902.00751) put an adapter after the attention
output projection and after the feed-forward output projection of every layer; Pfeiffer et
al. 2020 (https://arxiv.org/abs/2005.00247) keep only the feed-forward one. An adapter is
`x + up(act(down(x)))` with `up` initialised to zero, so training starts exactly at the
pretrained function. Loading a run trained with them rebuilds them here.
"""

from __future__ import annotations

import torch
from torch import nn

from weitiao.errors import UserError
from weitiao.models.layers import find_layer_stack, find_parts

# Output projections, by the names the common architectures give them.
ATTENTION_OUT = ("attention.output.dense", "self_attn.o_proj", "attn.c_proj", "attention.out_proj", "self_attn.out_proj", "SelfAttention.o")
FFN_OUT = ("output.dense", "mlp.down_proj", "mlp.c_proj", "mlp.fc2", "fc2", "intermediate.dense_out", "DenseReluDense.wo")


class Bottleneck(nn.Module):
    """x + up(gelu(down(x))); x: [..., hidden]."""

    def __init__(self, hidden: int, size: int):
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.up = nn.Linear(size, hidden)
        nn.init.normal_(self.down.weight, std=1e-3)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(nn.functional.gelu(self.down(x)))


class WithAdapter(nn.Module):
    """A projection followed by its adapter; `proj` keeps its name so pretrained weights still match."""

    def __init__(self, proj: nn.Linear, size: int):
        super().__init__()
        self.proj = proj
        self.adapter = Bottleneck(proj.out_features, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.proj(x))


def adapter_sites(layer: nn.Module, kind: str) -> list[str]:
    """Names (inside one layer) of the projections that get an adapter."""
    names = [n for n, m in layer.named_modules() if isinstance(m, nn.Linear)]
    attention = [n for n in names if n.endswith(ATTENTION_OUT)]
    ffn = [n for n in names if n.endswith(FFN_OUT) and n not in attention]
    return ffn + (attention if kind == "houlsby" else [])


def insert_adapters(model: nn.Module, size: int, kind: str) -> int:
    """Wrap the output projections of every layer; returns how many adapters were added."""
    prefixes = find_parts(model).layers_prefix
    stacks = [model.get_submodule(p) for p in prefixes] if isinstance(prefixes, tuple) else [find_layer_stack(model)[1]]
    count = 0
    for layer in (layer for stack in stacks for layer in stack):  # an encoder-decoder: both stacks
        sites = adapter_sites(layer, kind)
        if not sites:
            raise UserError("strategy.method", f"adapter: no output projection found in {type(layer).__name__}",
                            "use lora, or name the modules with strategy.include")
        for site in sites:
            parent_name, _, child = site.rpartition(".")
            parent = layer.get_submodule(parent_name) if parent_name else layer
            setattr(parent, child, WithAdapter(getattr(parent, child), size))
            count += 1
    return count
