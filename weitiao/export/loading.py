"""Reading an export folder back as a model `scoring.score` can run: torch for hf and adapter, an
onnxruntime session or a TorchScript module behind the same call (`model(**batch).logits`)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch


class GraphModel:
    """A traced graph that takes the model's inputs by name and returns its logits, dressed as a
    transformers model for scoring: `model(**batch).logits`, `.config`, `.eval()`, `.to()`."""

    training = False

    def __init__(self, run, config, inputs: list[str]):
        self._run, self.config, self.inputs = run, config, inputs

    def __call__(self, **batch):
        return SimpleNamespace(logits=self._run([batch[k] for k in self.inputs]))

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def to(self, *args, **kwargs):
        return self

    def parameters(self):
        return iter(())


def load_exported(folder, task):
    """The model of an export folder, by its manifest's format."""
    from weitiao.export import MANIFEST, get_format

    manifest = json.loads((Path(folder) / MANIFEST).read_text())
    return get_format(manifest["format"]).load(Path(folder), task, manifest)


def model_config(folder: Path):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(folder))
    except (ValueError, KeyError):  # an image model of weitiao's own (EfficientNet): its config.json read plainly
        from transformers import PretrainedConfig

        return PretrainedConfig.from_pretrained(str(folder))


def onnx_session(path: Path):
    """An onnxruntime CPU session using as many threads as torch does."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_onnx(folder: Path, file: str, manifest: dict) -> GraphModel:
    session = onnx_session(folder / file)
    wanted = {i.name for i in session.get_inputs()}  # the exporter drops inputs the graph does not read

    def run(tensors: list[torch.Tensor]) -> torch.Tensor:
        feed = {k: t.cpu().numpy() for k, t in zip(manifest["inputs"], tensors) if k in wanted}
        return torch.from_numpy(session.run(None, feed)[0])

    return GraphModel(run, model_config(folder), manifest["inputs"])
