"""What the graph formats (ONNX, TorchScript) share: the model as a function of positional inputs
returning its logits, and the exporters' chatter kept off the terminal."""

from __future__ import annotations

import contextlib
import logging
import warnings

import torch
from torch import nn


class Logits(nn.Module):
    """`model(**dict(zip(names, inputs))).logits`: a graph takes tensors in order, not keywords."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.names, inputs)))
        return getattr(out, "logits", out)


def dynamic_shapes(example: dict) -> tuple:
    """Batch (and, for token inputs, sequence) axes left free, one spec per positional input:
    [batch, tokens] ids and masks, [batch, 3, H, W] pixels."""
    from torch.export import Dim

    return tuple({0: Dim.DYNAMIC, 1: Dim.DYNAMIC} if v.dim() == 2 else {0: Dim.DYNAMIC} for v in example.values())


@contextlib.contextmanager
def quiet():
    """Tracer warnings and the exporter's log lines (about torchvision, which is not installed) silenced."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
