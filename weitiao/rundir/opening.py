"""Opening a finished run (or an export) to use it: its task, model, tokenizer and label names,
its validation data, scoring it. Nothing in the folder runs (docs/security.md).

Below every command that opens a folder (eval, predict, chat, serve, the dashboard, report,
export, distill, the forgetting probe)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from weitiao.errors import UserError
from weitiao.rundir import CONFIG, MODEL
from weitiao.runtime import note


@dataclass
class LoadedRun:
    """A finished run, ready to score: its task and options, model, tokenizer and label names."""

    task: object
    opts: object  # the task section of its config
    data: object  # the data section (columns, max_length)
    eval_batch_size: int | None
    model: object
    tokenizer: object
    names: list[str]
    seed: int  # training.seed: the seeded split that gave its validation rows
    settings: dict  # its resolved config as plain data (config.yaml): what describes the run (model card, /v1/model)
    root: Path | None = None  # the folder it was read from
    backend: str = "torch"  # what runs the model: torch, or an export's format (onnx, onnx-int8, pt2)


def open_run(run_dir: str, prune: bool = True, trust=()) -> LoadedRun:
    """The run's task, model and tokenizer: a run folder, or a folder `weitiao export` wrote (any format).

    Nothing in the folder runs: weights are read from safetensors (or with torch's weights_only),
    the model's own code (auto_map) is never imported, and an export in a format that carries code
    (pt2, torchscript) is refused unless `trust` names its format (`--trust-format`).

    `prune`: BERT-style classifiers compute only the token their head reads in the last layer (exact).

    Raises:
        UserError: the folder is neither a finished run nor an export, or a code-carrying export not trusted.
    """
    from weitiao.config import load_config
    from weitiao.formats import is_export
    from weitiao.runtime import quiet_hf
    from weitiao.tasks import get_task

    root = Path(run_dir)
    if not (root / CONFIG).is_file():
        raise UserError("run_dir", f"'{run_dir}' is not a run folder (no config.yaml)", "give a folder written by `weitiao train` or `weitiao export`, e.g. runs/demo")
    exported = is_export(root)
    model_dir = root if exported else root / MODEL
    if not exported and not (model_dir / "config.json").is_file():
        raise UserError("run_dir", f"'{run_dir}' has no trained model (model/ is missing)", "let the run finish, or resume it")
    quiet_hf()
    cfg = load_config(root / CONFIG)
    task = get_task(cfg.task.type)
    if not task.takes_images and not (model_dir / "tokenizer_config.json").is_file():  # transformers would rebuild another tokenizer silently
        raise UserError("run_dir", f"'{model_dir}' has no tokenizer_config.json: its tokenizer cannot be rebuilt as it was trained",
                        f"the folder is damaged or incomplete: export or train '{run_dir}' again")
    with _damaged(run_dir, model_dir):
        if exported:
            from weitiao.formats.loading import load_exported, read_manifest

            model = load_exported(root, task, trust)
            backend = read_manifest(root)["format"]
        else:
            model, backend = task.load(model_dir), "torch"
    if prune and cfg.training.prune_last_layer and task.reads_one_position and hasattr(model, "named_modules"):
        from weitiao.models.last_layer import prune_last_layer

        prune_last_layer(model)  # the same predictions, a sixth less work on a 6-layer BERT
    with _damaged(run_dir, model_dir):
        tokenizer = task.processor(str(model_dir))
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = pad  # runs saved before the pad token was settled
    names = [] if task.generates else label_names(model)  # a generative task has no label set
    backend = "torch" if backend in ("hf", "adapter") else backend
    opts = task.calibrated(cfg.task, model_config(model))  # what training settled and saved with the model
    return LoadedRun(task, opts, cfg.data, cfg.training.eval_batch_size, model, tokenizer, names, cfg.training.seed,
                     cfg.model_dump(mode="json"), root, backend)


@contextlib.contextmanager
def _damaged(run_dir: str, model_dir: Path):
    """A model folder whose files do not load (not JSON, truncated weights, none at all) as one line."""
    import pickle

    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, pickle.UnpicklingError) as e:  # RuntimeError: shapes that do not match the config
        if type(e).__name__ == "OutOfMemoryError":  # torch's, a RuntimeError: not a damaged folder
            raise
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError("run_dir", f"the model in '{model_dir}' cannot be loaded ({reason})",
                        f"the folder is damaged or incomplete: export or train '{run_dir}' again, or resume it from its last checkpoint") from None


def model_config(model) -> dict:
    """A loaded model's config as plain data (exports keep the trained model's config.json)."""
    config = getattr(model, "config", None)
    return config.to_dict() if hasattr(config, "to_dict") else dict(vars(config)) if config is not None else {}


def label_names(model) -> list[str]:
    """The label names a saved model carries, in id order."""
    return [model.config.id2label[i] for i in range(model.config.num_labels)]


def read_rows(run: LoadedRun, path: str, field: str, labels):
    """A data file read with a run's columns (and labels), cleaned as training cleans evaluation
    data: rows with empty text are dropped, counted and reported; nothing else is touched.

    Raises:
        UserError: a problem with the file, a label the run does not know, or no rows with text.
    """
    from weitiao.data.clean import clean_split

    reader = run.task.reader(run.data, run.opts)
    ex = reader.read(path, field, labels)[0] if labels is not None else reader.read_inputs(path, field)
    ex, counts = clean_split(ex, drop_duplicates=False)
    if not len(ex):
        raise UserError(field, f"'{path}' has no rows with text", "give a file with the run's text column filled in")
    if counts["empty_dropped"]:
        note(f"{counts['empty_dropped']} of {counts['rows']} rows in '{path}' have an empty text and were skipped (as training skips them)")
    return ex


def read_labelled(run: LoadedRun, path: str, field: str):
    """A labelled file read with a run's columns and labels, cleaned and encoded."""
    from weitiao.data.examples import LabelSet

    ex = read_rows(run, path, field, LabelSet(run.names))
    return run.task.encode(run.tokenizer, ex, run.data.max_length, run.opts, run.names)


def validation_data(run: LoadedRun, field: str):
    """The run's own validation rows, encoded: its data.validation file, else the rows it split off its
    training data (the same seeded split again: rows that run never trained on; multi-task: each task's)."""
    from weitiao.data import load_task_data

    if run.data.validation:
        return read_labelled(run, run.data.validation, field)
    bundle = load_task_data(run.task, run.data, run.opts, run.seed)
    if bundle.labels.names != run.names:
        raise UserError(field, f"the labels of the run's training data ({run.data.train or 'its tasks'}) no longer match its model",
                        "give the data to score explicitly, or keep the run's data unchanged")
    return run.task.encode(run.tokenizer, bundle.validation, run.data.max_length, run.opts, run.names)


def report_truncated(run: LoadedRun, enc) -> None:
    """A note (stderr) on the inputs longer than data.max_length, in the task's words."""
    if enc.truncated:
        note(run.task.too_long_note.format(k=enc.truncated, n=enc.examples, m=run.data.max_length))


def scored(run: LoadedRun, enc, batch_size: int | None):
    """The task's outputs and mean loss on the best device, with out-of-memory turned into a clear stop.

    `batch_size` None: the run's training.eval_batch_size, else the default for the device."""
    import torch

    from weitiao.errors import TrainingStopped
    from weitiao.runtime import eval_batch_size, inference_device
    from weitiao.tasks.common.scoring import pad_id, score

    device = inference_device()
    batch_size = eval_batch_size(batch_size or run.eval_batch_size, device.type == "cuda")
    try:
        return score(run.model.to(device), run.task, enc, pad_id(run.tokenizer), len(run.names), run.opts, batch_size, device)
    except torch.OutOfMemoryError:
        smaller = max(1, batch_size // 2)
        raise TrainingStopped(f"out of memory scoring batches of {batch_size} on {device}; "
                              + (f"pass --batch-size {smaller}" if batch_size > 1 else "use a shorter data.max_length or a device with more memory")) from None
