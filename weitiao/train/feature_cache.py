"""The frozen-feature cache: run the frozen bottom of the network once, then train only the top.

When the embeddings and the lowest k layers are frozen (head_only: k = L, freeze_bottom: N,
train_top: K), their output for a given text never changes. Computing it every epoch is the
main cost of such runs; this module computes the output of layer k-1 once per example, in
eval mode, and replays it. Nothing architecture-specific is needed: while the model runs on
cached data, layers 0..k-2 are swapped for `Skip` (returns its input) and layer k-1 for
`Replay` (returns the cached output), so the model's own forward still builds the masks,
rotary embeddings, pooling and head. The frozen part always runs in eval mode (weitiao treats
a frozen bottom as a feature extractor, cached or not), which is what makes the cache exact.

Storage: one flat float32 [total_tokens, hidden] array plus offsets; in memory when it fits
`max_bytes`, else a memory-mapped file in the run folder. When every layer is frozen (head_only),
the task reads one position (a sequence classifier, not a token classifier) and the model's head
reads the first token (BERT-style pooling, listed in FIRST_TOKEN_HEADS), only that token's
vector is kept: one row per example instead of one per token.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from weitiao.models.layers import FIRST_TOKEN_HEADS, find_layer_stack, find_parts, unwrap

# Model types whose sequence-level head reads only position 0 of the last layer's output
# (pooler or classifier on hidden[:, 0]); read off their transformers modeling files.


def frozen_bottom(model: nn.Module) -> int:
    """How many layers from the bottom are frozen, with the embeddings: 0 means nothing to cache.

    Every parameter of the embeddings and of layers 0..k-1 must be frozen; peft-wrapped models
    (adapters inside every layer) give 0.
    """
    if hasattr(model, "get_base_model"):
        return 0
    parts = find_parts(model)
    embeddings = tuple(parts.embeddings)
    if not embeddings or any(p.requires_grad for n, p in model.named_parameters() if n.startswith(embeddings)):
        return 0
    _, stack = find_layer_stack(model)
    k = 0
    while k < len(stack) and not any(p.requires_grad for p in stack[k].parameters()):
        k += 1
    return k


def frozen_modules(model: nn.Module, k: int) -> list[nn.Module]:
    """The embeddings and layers 0..k-1: what the cache stands in for."""
    base = unwrap(model)
    embeddings = tuple(p.rstrip(".") for p in find_parts(model).embeddings)
    _, stack = find_layer_stack(base)
    return [m for n, m in base.named_modules() if n.startswith(embeddings)] + list(stack[:k])


class Skip(nn.Module):
    """Stands in for a frozen layer whose output is replayed later: passes hidden states through."""

    def __init__(self, as_tuple: bool):
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states,) if self.as_tuple else hidden_states


class Replay(nn.Module):
    """Stands in for the last frozen layer: returns the cached output for the current batch."""

    def __init__(self, as_tuple: bool):
        super().__init__()
        self.as_tuple = as_tuple
        self.current: torch.Tensor | None = None

    def forward(self, hidden_states, *args, **kwargs):
        out = self.current.to(hidden_states.device, non_blocking=True).to(hidden_states.dtype)
        return (out,) if self.as_tuple else out


class _Stop(Exception):
    pass


class FeatureCache:
    """Outputs of layer k-1 for the examples of one or more splits.

    Args:
        model: the (plain, not peft) model whose layers 0..k-1 and embeddings are frozen.
        k: number of frozen layers (from `frozen_bottom`).
        one_position: the task's head reads one position (`Task.reads_one_position`); a token
            classifier reads them all, and every token's features are kept.
    """

    def __init__(self, model: nn.Module, k: int, one_position: bool = True):
        self.model = model
        self.k = k
        self.stack_name, self.stack = find_layer_stack(unwrap(model))
        self.splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (features, offsets)
        self.as_tuple = False
        self.bytes = 0
        self.report: dict = {}
        model_type = getattr(unwrap(model).config, "model_type", None)
        self.first_token_only = one_position and k == len(self.stack) and model_type in FIRST_TOKEN_HEADS

    @torch.no_grad()
    def build(self, name: str, batches, make_inputs, lengths: list[int], device, folder: Path | None, max_bytes: int) -> None:
        """Run the frozen part over one split and store layer k-1's output per example.

        Args:
            batches: index lists covering the split (any order).
            make_inputs: indices -> dict of model inputs (CPU tensors), padded.
            lengths: real token count of each example.
            folder: where to put a memory-mapped file when the features exceed `max_bytes`.
        """
        hidden = self.stack[self.k - 1]
        if self.first_token_only:
            lengths = [1] * len(lengths)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lengths)
        store, captured = None, {}

        def allocate(width: int) -> np.ndarray:
            """The store, once the first batch shows the features' width (not always config.hidden_size)."""
            shape = (int(offsets[-1]), width)
            if shape[0] * width * 4 > max_bytes and folder is not None:
                return np.lib.format.open_memmap(folder / f"feature_cache_{name}.npy", mode="w+", dtype=np.float32, shape=shape)
            return np.empty(shape, dtype=np.float32)

        def grab(module, args, output):
            self.as_tuple = isinstance(output, tuple)
            captured["h"] = output[0] if isinstance(output, tuple) else output
            raise _Stop  # nothing above layer k-1 is needed

        was_training = self.model.training
        self.model.eval()
        handle = hidden.register_forward_hook(grab)
        try:
            for index in batches:
                inputs = {k: v.to(device) for k, v in make_inputs(index).items() if k != "labels"}
                try:
                    self.model(**inputs)
                except _Stop:
                    pass
                h = captured.pop("h").float().cpu().numpy()
                store = allocate(h.shape[-1]) if store is None else store
                for row, i in enumerate(index):
                    store[offsets[i] : offsets[i + 1]] = h[row, : lengths[i]]
        finally:
            handle.remove()
            self.model.train(was_training)
        self.splits[name] = (store, offsets)
        self.bytes += store.nbytes

    def batch(self, name: str, index: list[int], longest: int) -> torch.Tensor:
        """Cached features of these examples, zero-padded: [len(index), longest, hidden] ([len(index), 1, hidden]
        when only the first token is kept)."""
        store, offsets = self.splits[name]
        if self.first_token_only:  # one row per example: a single gather
            out = torch.from_numpy(np.asarray(store[offsets[index]]))[:, None]
            return out.pin_memory() if torch.cuda.is_available() else out
        out = torch.zeros((len(index), longest, store.shape[1]), pin_memory=torch.cuda.is_available())  # pinned: async copy to the GPU
        for row, i in enumerate(index):
            n = offsets[i + 1] - offsets[i]
            out[row, :n] = torch.from_numpy(np.asarray(store[offsets[i] : offsets[i + 1]]))
        return out

    @contextlib.contextmanager
    def replaying(self, features: torch.Tensor):
        """Within this block the model takes `features` as the output of layer k-1."""
        originals = list(self.stack[: self.k])
        replay = Replay(self.as_tuple)
        replay.current = features
        for i in range(self.k - 1):
            self.stack[i] = Skip(self.as_tuple)
        self.stack[self.k - 1] = replay
        try:
            yield
        finally:
            for i, m in enumerate(originals):
                self.stack[i] = m


def frozen_body(model: nn.Module) -> str | None:
    """The name of a model's body when every parameter outside its head is frozen, for models that
    declare their body (weitiao's model adapters: `weitiao_parts["body"]`), else None."""
    parts = getattr(model, "weitiao_parts", None)
    if not parts or "body" not in parts or hasattr(model, "get_base_model"):
        return None
    head = tuple(parts["head"])
    if any(p.requires_grad for n, p in model.named_parameters() if not n.startswith(head)):
        return None
    return parts["body"]


class BodyCache:
    """The frozen body's output (the head's input: one vector per example, e.g. EfficientNet's
    pooled 1280 features), computed once in eval mode and replayed while the head trains.

    The same interface as `FeatureCache` (`build`, `batch`, `replaying`, `splits`, `bytes`, `report`).
    """

    first_token_only = True  # one row per example

    def __init__(self, model: nn.Module, body: str):
        self.model, self.body_name = model, body
        parent, _, child = body.rpartition(".")
        self.parent, self.child = (model.get_submodule(parent) if parent else model), child
        self.splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.bytes, self.report = 0, {}

    @torch.no_grad()
    def build(self, name: str, batches, make_inputs, lengths: list[int], device, folder: Path | None, max_bytes: int) -> None:
        body = getattr(self.parent, self.child)
        was_training = self.model.training
        self.model.eval()
        store = None
        try:
            for index in batches:
                inputs = {k: v.to(device) for k, v in make_inputs(index).items() if k != "labels"}
                out = body(*inputs.values()).float().cpu().numpy()
                store = np.empty((len(lengths), out.shape[-1]), dtype=np.float32) if store is None else store
                store[index] = out
        finally:
            self.model.train(was_training)
        self.splits[name] = (store, np.arange(len(lengths) + 1))
        self.bytes += store.nbytes

    def batch(self, name: str, index: list[int], longest: int = 1) -> torch.Tensor:
        """[len(index), features] of these examples."""
        return torch.from_numpy(self.splits[name][0][index])

    @contextlib.contextmanager
    def replaying(self, features: torch.Tensor):
        """Within this block the body returns `features` whatever its input."""
        body = getattr(self.parent, self.child)
        replay = Replay(as_tuple=False)
        replay.current = features
        setattr(self.parent, self.child, replay)
        try:
            yield
        finally:
            setattr(self.parent, self.child, body)
