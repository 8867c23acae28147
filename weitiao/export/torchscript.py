"""`--format torchscript`: the forward pass traced (torch.jit.trace) into model.pt, which
`torch.jit.load` runs without weitiao or transformers: `model(input_ids, attention_mask) -> logits`.
It is traced on a batch with padding, so the mask's code path is the one recorded."""

from __future__ import annotations

from pathlib import Path

import torch

from weitiao.export import Format, register_format
from weitiao.export.graph import Logits, quiet
from weitiao.export.loading import GraphModel, model_config

FILE = "model.pt"


def write(source, folder: Path) -> None:
    with quiet(), torch.no_grad():
        traced = torch.jit.trace(Logits(source.run.model.eval(), source.inputs), tuple(source.example.values()), strict=False, check_trace=False)
    torch.jit.save(traced, str(folder / FILE))


def load(folder: Path, task, manifest: dict):
    module = torch.jit.load(str(folder / FILE), map_location="cpu").eval()

    @torch.no_grad()
    def run(tensors: list[torch.Tensor]) -> torch.Tensor:
        return module(*tensors)

    return GraphModel(run, model_config(folder), manifest["inputs"])


FORMAT = register_format(Format("torchscript", "TorchScript (torch.jit.load)", write, load, tolerance=1e-4, graph=True))
