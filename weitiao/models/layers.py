"""Find the parts of a transformer generically: embeddings, the stack of layers, the head.

No architecture is hard-coded: the layer stack is the longest `nn.ModuleList` of identical
blocks (BERT `encoder.layer`, RoBERTa, DeBERTa, Llama `model.layers`, ViT `encoder.layer`),
the head is whatever lies outside the pretrained base model (plus BERT's pooler, which feeds
only the head), and the embeddings are everything of the base model before the stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from weitiao.errors import UserError

# Architectures whose classification head reads only the first token (BERT-style pooling).
FIRST_TOKEN_HEADS = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "albert", "mpnet"}


@dataclass
class Parts:
    layers_prefix: str | tuple[str, ...]  # e.g. "bert.encoder.layer"; an encoder-decoder: both stacks
    num_layers: int  # layers of the (deepest) stack
    head: list[str]  # parameter-name prefixes of the task head
    embeddings: list[str]  # parameter-name prefixes of the embeddings
    head_groups: dict[str, str] | None = None  # head prefix -> its LR group (a model with a head per task)


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def plain_named_parameters(model: nn.Module):
    """(name as the unwrapped transformers model spells it, parameter), for plain and peft models.

    peft puts the model under a prefix that depends on the method (`base_model.model.` for
    LoRA, `base_model.` for prompt learning) and wraps saved heads in `modules_to_save`;
    parameters of its own (a prompt encoder) keep their names.
    """
    prefix = ""
    if hasattr(model, "get_base_model"):
        base = model.get_base_model()
        prefix = next(n for n, m in model.named_modules() if m is base) + "."
    for name, p in model.named_parameters():
        if prefix and name.startswith(prefix):
            name = name[len(prefix):]
        yield name.replace(".modules_to_save.default", "").replace(".original_module", ""), p


def find_layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and len({type(m) for m in module}) == 1:
            if best is None or len(module) > len(best[1]):
                best = (name, module)
    if best is None:
        raise UserError("strategy", f"cannot find the layer stack of {type(model).__name__}",
                        "name the parameters to train with strategy.include (a regex), e.g. 'encoder\\.layer\\.(4|5)\\.'")
    return best


def find_parts(model: nn.Module) -> Parts:
    """The parts of a model; one that is not a transformers model declares its embeddings and head
    in `weitiao_parts` (weitiao's model adapters do: models/image.py)."""
    model = unwrap(model)
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return encoder_decoder_parts(model)
    prefix, stack = find_layer_stack(model)
    declared = getattr(model, "weitiao_parts", None)
    if declared:
        return Parts(prefix, len(stack), list(declared["head"]), list(declared["embeddings"]), declared.get("head_groups"))
    base = getattr(model, "base_model_prefix", "")
    names = [n for n, _ in model.named_parameters()]
    head = sorted({_top(n, base) for n in names if not n.startswith(base + ".") or ".pooler." in n})
    embeddings = sorted({_top(n, base) for n in names if n.startswith(base + ".") and not n.startswith(prefix + ".")
                         and ".pooler." not in n and _is_embedding(n)})
    return Parts(prefix, len(stack), head, embeddings)


def encoder_decoder_parts(model: nn.Module) -> Parts:
    """An encoder-decoder (T5, BART, ...) has two layer stacks. Layer-aware strategies see both: layer i
    is the i-th block of each stack (freeze_bottom 2 freezes the bottom two of the encoder and of the
    decoder; layer-wise decay gives both the same rate). The embeddings are the token (and position)
    embeddings; the head is the output layer (the shared embedding matrix when tied) and the final norms."""
    stacks = {}
    for side in ("encoder", "decoder"):
        lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0
                 and len({type(x) for x in m}) == 1 and side in n.split(".")]
        if not lists:
            raise UserError("strategy", f"cannot find the {side} layers of {type(model).__name__}",
                            "name the parameters to train with strategy.include (a regex)")
        stacks[side] = max(lists, key=lambda item: len(item[1]))
    prefixes = tuple(stacks[s][0] for s in ("encoder", "decoder"))
    names = [n for n, _ in model.named_parameters()]
    outside = [n for n in names if not n.startswith(tuple(p + "." for p in prefixes))]
    module_of = {id(m): n + "." for n, m in model.named_modules()}
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    tied = out is not None and inp is not None and out.weight is inp.weight
    output = module_of.get(id(inp if tied else out))
    head = sorted(({output} | {n.rsplit(".", 1)[0] + "." for n in outside if "final" in n or n.startswith("final_logits")}) - {None})
    embeddings = sorted({n.rsplit(".", 1)[0] + "." for n in outside if ("embed" in n or "shared" in n) and not n.startswith(tuple(head))})
    return Parts(prefixes, max(len(stacks[s][1]) for s in stacks), head, embeddings)


def _top(name: str, base: str) -> str:
    """The module a parameter belongs to, one level below the base model (bert.embeddings)."""
    parts = name.split(".")
    depth = 2 if base and parts[0] == base else 1
    return ".".join(parts[:depth]) + "."


def _is_embedding(name: str) -> bool:
    # Outside the stack there are embeddings and, in decoders, a final norm (model.norm),
    # which comes after the stack and is not an embedding.
    return "embed" in name or ".wte." in name or ".wpe." in name


def layer_index(name: str, stack_prefix: str | tuple[str, ...]) -> int | None:
    """The layer number of a parameter inside its stack (an encoder-decoder: inside either), or None."""
    for prefix in stack_prefix if isinstance(stack_prefix, tuple) else (stack_prefix,):
        if name.startswith(prefix + "."):
            return int(name[len(prefix) + 1 :].split(".", 1)[0])
    return None


def group_name(name: str, parts: Parts, base: str) -> str:
    """Row of the parameter table: 'bert.encoder.layer.3', or the module name ('bert.embeddings')."""
    i = layer_index(name, parts.layers_prefix)
    if i is None:
        return _top(name, base).rstrip(".")
    prefixes = parts.layers_prefix if isinstance(parts.layers_prefix, tuple) else (parts.layers_prefix,)
    return f"{next(p for p in prefixes if name.startswith(p + '.'))}.{i}"


def require_layers(spec, parts: Parts, method: str) -> int:
    n = spec.layers
    if n is None or n > parts.num_layers:
        raise UserError("strategy.layers", f"{method} needs a layer count 0..{parts.num_layers}, got {n}",
                        f"set strategy: {{method: {method}, layers: N}} with N <= {parts.num_layers}")
    return n
