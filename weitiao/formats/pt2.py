"""`--format pt2`: the forward pass captured by torch.export into model.pt2, which
`torch.export.load(path).module()` runs without weitiao or transformers:
`model(input_ids, attention_mask) -> logits`, batch and sequence axes dynamic.

Loading a .pt2 (like a TorchScript archive, the format this one replaces: TorchScript is
deprecated upstream) can run code the file carries: its tensors fall back to a full pickle when a
safe load fails, and its symbolic shapes are parsed with sympy's eval. So weitiao never opens one
it did not just write unless the user names the format (`--trust-format pt2`); the parity check
reads the file back from the folder being written.
"""

from __future__ import annotations

from pathlib import Path

import torch

from weitiao.formats import Format, register_format
from weitiao.formats.graph import Logits, dynamic_shapes, quiet
from weitiao.formats.loading import GraphModel, model_config

FILE = "model.pt2"
RISK = "loading a .pt2 file can run code it carries (pickle, sympy eval)"


def write(source, folder: Path) -> None:
    example = source.example
    with quiet(), torch.no_grad():
        program = torch.export.export(Logits(source.run.model.eval(), source.inputs), tuple(example.values()),
                                      dynamic_shapes=(dynamic_shapes(example),), strict=False)
        torch.export.save(program, str(folder / FILE))


def _graph_model(module, folder: Path, manifest: dict) -> GraphModel:
    """A module taking the inputs in order, dressed for scoring."""

    @torch.no_grad()
    def run(tensors: list[torch.Tensor]) -> torch.Tensor:
        return module(*tensors)

    return GraphModel(run, model_config(folder), manifest["inputs"])


def load(folder: Path, task, manifest: dict):
    with quiet():
        return _graph_model(torch.export.load(str(folder / FILE)).module(), folder, manifest)


def load_torchscript(folder: Path, task, manifest: dict):
    """An export folder an earlier weitiao wrote with `--format torchscript`, opened only when trusted by name."""
    return _graph_model(torch.jit.load(str(folder / "model.pt"), map_location="cpu").eval(), folder, manifest)


FORMAT = register_format(Format("pt2", "torch.export program (torch.export.load)", write, load, tolerance=1e-4, graph=True, runs_code=RISK))
LEGACY = register_format(Format("torchscript", "TorchScript: read only, from older exports (torch.jit.load)", None, load_torchscript,
                                tolerance=1e-4, graph=True, runs_code="a TorchScript archive carries code that runs when it is loaded"))
