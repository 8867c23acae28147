"""Reading an export folder back as a model `scoring.score` can run: torch for hf and adapter, an
onnxruntime session or a torch.export program behind the same call (`model(**batch).logits`)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch

from weitiao.errors import UserError


class GraphModel:
    """A traced graph that takes the model's inputs by name and returns its logits, dressed as a
    transformers model for scoring: `model(**batch).logits`, `.config`, `.eval()`, `.to()`."""

    training = False

    def __init__(self, run, config, inputs: list[str]):
        self._run, self.config, self.inputs = run, config, inputs

    def __call__(self, **batch):
        missing = [k for k in self.inputs if k not in batch]
        if missing:  # a manifest edited by hand: its input names are not what the task's batches hold
            raise UserError("weitiao_export.json", f"names the input {missing[0]!r}, which this task's batches do not have ({', '.join(batch)})",
                            "export the run again (weitiao export RUN --format FORMAT)")
        return SimpleNamespace(logits=self._run([batch[k] for k in self.inputs]))

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def to(self, *args, **kwargs):
        return self

    def parameters(self):
        return iter(())


def read_manifest(folder) -> dict:
    """weitiao_export.json of an export folder, checked: a format name and the model's input names.

    Raises:
        UserError: the file is not JSON, or lacks what weitiao wrote there.
    """
    from weitiao.errors import UserError
    from weitiao.formats import MANIFEST

    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(MANIFEST, f"'{path}' cannot be read ({type(e).__name__})", "export the run again (weitiao export RUN --format FORMAT)") from None
    if not (isinstance(manifest, dict) and isinstance(manifest.get("format"), str) and isinstance(manifest.get("inputs"), list)
            and all(isinstance(i, str) for i in manifest["inputs"])):
        raise UserError(MANIFEST, f"'{path}' has no format and input names", "export the run again (weitiao export RUN --format FORMAT)")
    return manifest


def load_exported(folder, task, trust=()):
    """The model of an export folder, by its manifest's format.

    `trust`: the names of code-carrying formats (pt2, torchscript) the user allowed by name; any
    other such folder is refused before a byte of its model file is read.

    Raises:
        UserError: an unknown format, or a code-carrying one not trusted.
    """
    from weitiao.errors import UserError
    from weitiao.formats import get_format

    manifest = read_manifest(folder)
    try:
        form = get_format(manifest["format"])
    except UserError as e:  # the manifest's word, not the command line's
        raise UserError("weitiao_export.json", f"'{folder}': {e.problem}", "export the run again (weitiao export RUN --format FORMAT)") from None
    if form.runs_code and form.name not in trust:
        raise UserError("--trust-format", f"'{folder}' is a {form.name} export, and {form.runs_code}",
                        f"open it only if you made it yourself: pass --trust-format {form.name}; an onnx or hf export carries no code")
    return form.load(Path(folder), task, manifest)


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
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except (state.Fail, state.InvalidArgument, state.InvalidGraph, state.InvalidProtobuf, state.NoSuchFile, state.NotFound) as e:
        # onnxruntime refuses external data outside the model's folder (also through a symlink): a handed
        # graph cannot make it read other files; that refusal, like a damaged graph, is one line
        reason = " ".join(str(e).split())[:300]
        outside = "escapes model directory" in reason
        raise UserError("run_dir", f"'{path}' cannot be loaded ({reason})",
                        "its weights must be files inside the export's own folder: do not use a graph that points outside it"
                        if outside else "the export is damaged: export the run again") from None


def load_onnx(folder: Path, file: str, manifest: dict) -> GraphModel:
    session = onnx_session(folder / file)
    wanted = {i.name for i in session.get_inputs()}  # the exporter drops inputs the graph does not read

    def run(tensors: list[torch.Tensor]) -> torch.Tensor:
        feed = {k: t.cpu().numpy() for k, t in zip(manifest["inputs"], tensors) if k in wanted}
        return torch.from_numpy(session.run(None, feed)[0])

    return GraphModel(run, model_config(folder), manifest["inputs"])
