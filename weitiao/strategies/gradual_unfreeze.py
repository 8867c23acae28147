"""Gradual unfreezing (ULMFiT, Howard & Ruder 2018, https://arxiv.org/abs/1801.06146).

Training starts with the head alone; every `unfreeze_every` epochs (or steps) the next layer
from the top joins, and the embeddings last. Every parameter is in the optimizer from the
start (with no gradient, AdamW leaves a frozen one untouched), so a newly unfrozen layer is
trained at once with the scheduled LR of its group. Adding groups to a running optimizer
instead is where other tools go wrong (transformers issue #20029).
"""

from weitiao.models.layers import find_parts, layer_index
from weitiao.strategies import Selection, apply_patterns, register, set_trainable


@register("gradual_unfreeze", options=("unfreeze_every", "unfreeze_unit"))
def select(model, spec) -> Selection:
    parts = find_parts(model)
    head, embeddings = tuple(parts.head), tuple(parts.embeddings)

    def stage_of(name: str) -> int:
        """0: head (and anything after the stack); 1..L: layers from the top; L+1: embeddings."""
        i = layer_index(name, parts.layers_prefix)
        if i is not None:
            return parts.num_layers - i
        return parts.num_layers + 1 if name.startswith(embeddings) and not name.startswith(head) else 0

    stages = {name: stage_of(name) for name, _ in model.named_parameters()}
    current = {"stage": -1}

    def on_progress(epoch: int, step: int) -> bool:
        clock = epoch if spec.unfreeze_unit == "epochs" else step
        stage = clock // spec.unfreeze_every
        if stage == current["stage"]:
            return False
        current["stage"] = stage
        set_trainable(model, lambda name: stages[name] <= stage)
        # include / exclude / freeze_embeddings hold at every stage, not only until the first change.
        apply_patterns(model, spec.include, spec.exclude, spec.freeze_embeddings)
        return True

    on_progress(0, 0)
    return Selection(model, on_progress=on_progress, all_trainable_later=[p for _, p in model.named_parameters()])
