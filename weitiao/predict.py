"""`weitiao eval` and `weitiao predict`: use a finished run folder.

Both read the run's resolved config.yaml (for columns and the task) and its model/ folder
(a plain Hugging Face model; its config holds the label names). What a prediction is (a label,
entities) is the task's: this module reads, scores and writes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from weitiao.errors import UserError


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
    config: object  # the whole RunConfig, for what the probe re-reads (its data and seed)
    root: Path | None = None  # the folder it was read from
    backend: str = "torch"  # what runs the model: torch, or an export's format (onnx, onnx-int8, pt2)


def load_run(run_dir: str, trust=()) -> tuple:
    """(config, model, tokenizer) of a finished run (see `open_run`)."""
    run = open_run(run_dir, trust=trust)
    return run.config, run.model, run.tokenizer


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
    from weitiao.export import is_export
    from weitiao.runtime import quiet_hf
    from weitiao.tasks import get_task

    root = Path(run_dir)
    if not (root / "config.yaml").is_file():
        raise UserError("run_dir", f"'{run_dir}' is not a run folder (no config.yaml)", "give a folder written by `weitiao train` or `weitiao export`, e.g. runs/demo")
    exported = is_export(root)
    model_dir = root if exported else root / "model"
    if not exported and not (model_dir / "config.json").is_file():
        raise UserError("run_dir", f"'{run_dir}' has no trained model (model/ is missing)", "let the run finish, or resume it")
    quiet_hf()
    cfg = load_config(root / "config.yaml")
    task = get_task(cfg.task.type)
    with _damaged(run_dir, model_dir):
        if exported:
            from weitiao.export.loading import load_exported, read_manifest

            model = load_exported(root, task, trust)
            backend = read_manifest(root)["format"]
        else:
            model, backend = task.load(model_dir), "torch"
    if prune and cfg.training.prune_last_layer and task.reads_one_position and hasattr(model, "named_modules"):
        from weitiao.train.last_layer import prune_last_layer

        prune_last_layer(model)  # the same predictions, a sixth less work on a 6-layer BERT
    with _damaged(run_dir, model_dir):
        tokenizer = task.processor(str(model_dir))
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = pad  # runs saved before the pad token was settled
    names = [] if hasattr(task, "generations") else label_names(model)  # a generative task has no label set
    backend = "torch" if backend in ("hf", "adapter") else backend
    return LoadedRun(task, cfg.task, cfg.data, cfg.training.eval_batch_size, model, tokenizer, names, cfg, root, backend)


@contextlib.contextmanager
def _damaged(run_dir: str, model_dir: Path):
    """A model folder whose files do not load (not JSON, truncated weights, none at all) as one line."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError("run_dir", f"the model in '{model_dir}' cannot be loaded ({reason})",
                        f"the folder is damaged or incomplete: export or train '{run_dir}' again, or resume it from its last checkpoint") from None


def label_names(model) -> list[str]:
    """The label names a saved model carries, in id order."""
    return [model.config.id2label[i] for i in range(model.config.num_labels)]


def check_output(output: str | None, suffixes: tuple[str, ...] | None = None) -> None:
    """Refuse an --output path that cannot be written, before any work is done."""
    if not output:
        return
    path = Path(output)
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError("--output", f"'{output}' must end in {' or '.join(suffixes)}", f"name the output file e.g. predictions{suffixes[0]}")
    if not path.parent.is_dir():
        raise UserError("--output", f"folder '{path.parent}' does not exist", f"create it first (mkdir -p {path.parent}) or write elsewhere")
    if path.is_dir():
        raise UserError("--output", f"'{output}' is a folder", "give a file name")


def note(msg: str) -> None:
    print(f"note: {msg}", file=sys.stderr)


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

    cfg = run.config
    if cfg.data.validation:
        return read_labelled(run, cfg.data.validation, field)
    bundle = load_task_data(run.task, cfg.data, cfg.task, cfg.training.seed)
    if bundle.labels.names != run.names:
        raise UserError(field, f"the labels of the run's training data ({cfg.data.train or 'its tasks'}) no longer match its model",
                        "give the data to score explicitly, or keep the run's data unchanged")
    return run.task.encode(run.tokenizer, bundle.validation, cfg.data.max_length, cfg.task, run.names)


def report_truncated(run: LoadedRun, enc) -> None:
    """A note (stderr) on the inputs longer than data.max_length, in the task's words."""
    if enc.truncated:
        note(run.task.too_long_note.format(k=enc.truncated, n=enc.examples, m=run.data.max_length))


def scored(run: LoadedRun, enc, batch_size: int | None):
    """The task's outputs and mean loss on the best device, with out-of-memory turned into a clear stop.

    `batch_size` None: the run's training.eval_batch_size, else the default for the device."""
    import torch

    from weitiao.errors import TrainingStopped
    from weitiao.evaluate.scoring import pad_id, score
    from weitiao.runtime import eval_batch_size, inference_device

    device = inference_device()
    batch_size = eval_batch_size(batch_size or run.eval_batch_size, device.type == "cuda")
    try:
        return score(run.model.to(device), run.task, enc, pad_id(run.tokenizer), len(run.names), run.opts, batch_size, device)
    except torch.OutOfMemoryError:
        smaller = max(1, batch_size // 2)
        raise TrainingStopped(f"out of memory scoring batches of {batch_size} on {device}; "
                              + (f"pass --batch-size {smaller}" if batch_size > 1 else "use a shorter data.max_length or a device with more memory")) from None


def evaluate_file(run_dir: str, data_path: str | None = None, output: str | None = None, batch_size: int | None = None, trust=()) -> dict:
    """Metrics of the run's model on a labelled file (None: the run's own validation data); prints and returns them."""
    from weitiao.evaluate.scoring import task_metrics
    from weitiao.runtime import inference_device

    check_output(output)
    run = open_run(run_dir, trust=trust)
    enc = read_labelled(run, data_path, "--data") if data_path else validation_data(run, "--data")
    report_truncated(run, enc)
    result = scored(run, enc, batch_size)
    metrics = task_metrics(run.task, run.model, enc, result.outputs, run.names, run.opts, run.tokenizer, inference_device())[0]
    metrics["loss"] = result.loss
    metrics["truncated"] = enc.truncated
    print(json.dumps(run.task.headline(metrics) | {"n": metrics["n"], "truncated": enc.truncated}))
    if output:
        Path(output).write_text(json.dumps(metrics, indent=2))
    return metrics


def predict(run_dir: str | LoadedRun, texts: list[str] | None, file: str | None, output: str | None, batch_size: int | None = None,
            sampling=None, field: str = "--text", trust=()) -> list[dict]:
    """The task's prediction for each input (a classifier: label and probabilities; a token
    classifier: entities, words and tags); JSON lines on stdout, or a .jsonl/.csv file.

    Texts given with --text must not be empty; rows of a --file with an empty text are skipped
    and counted, as in training and `weitiao eval`.
    """
    check_output(output, (".jsonl", ".csv"))
    check_texts(texts, field)
    run = run_dir if isinstance(run_dir, LoadedRun) else open_run(run_dir, trust=trust)
    if texts is not None and (field == "--image") != run.task.takes_images:
        wanted = "--image with image files" if run.task.takes_images else "--prompt" if hasattr(run.task, "answer") else "--text"
        raise UserError(field, f"a {run.opts.type} run does not take {field} inputs", f"give {wanted}")
    rows = predict_rows(run, texts, file, batch_size, sampling)
    _write_predictions(rows, output, run.task)
    return rows


def check_texts(texts: list[str] | None, field: str = "--text") -> None:
    """Refuse an input that is not a string, or is empty (before the model loads); `field`: the option that gave them."""
    for i, t in enumerate(texts or [], 1):
        if not isinstance(t, str):
            raise UserError(field, f"text {i} is a {type(t).__name__}, not a string", "give texts as strings")
        if not t.strip():
            raise UserError(field, f"text {i} is empty", "give non-empty texts")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate: bytes that were not UTF-8 in argv, or a JSON escape
            raise UserError(field, f"text {i} holds {t[e.start]!r}, which is not valid Unicode", "pass the text as UTF-8") from None


def predict_rows(run: LoadedRun, texts: list[str] | None, file: str | None = None, batch_size: int | None = None,
                 sampling=None) -> list[dict]:
    """What `predict` prints, as a list (the Python API's `Run.predict`); `texts` already checked (`check_texts`).

    A generative task answers (`sampling`: a generation.Sampling; default: its task.generate settings)."""
    ex = read_rows(run, file, "--file", None) if file else run.task.examples_from_texts(list(texts), run.tokenizer, run.opts)
    if hasattr(run.task, "answer"):
        return run.task.answer(run, ex, default_sampling(run.opts, sampling), batch_size)
    if sampling:
        raise UserError("--" + next(iter(sampling)).replace("_", "-"), f"a {run.opts.type} run does not generate text",
                        "leave out the generation options")
    enc = run.task.encode(run.tokenizer, ex, run.data.max_length, run.opts, run.names)
    report_truncated(run, enc)
    result = scored(run, enc, batch_size)
    return run.task.decode(result.outputs, enc, ex, run.names, run.opts)


def default_sampling(opts, given: dict | None = None):
    """The generation settings of a run's task.generate section, with those `given` (command-line options) over them."""
    from weitiao.tasks.generation import Sampling

    g = opts.generate
    own = {"max_new_tokens": g.max_new_tokens, "temperature": g.temperature, "top_p": g.top_p, "num_beams": getattr(g, "num_beams", 1)}
    return Sampling(**(own | (given or {})))


def chat(run_dir: str, stdin=None, stdout=None, sampling=None, trust=()) -> None:
    """`weitiao chat RUN`: a conversation with a causal LM run, kept turn after turn (/reset forgets it,
    /exit or end of input leaves)."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    run = open_run(run_dir, trust=trust)
    if not hasattr(run.task, "answer"):
        raise UserError("run_dir", f"'{run_dir}' is a {run.opts.type} run, which does not generate text", "chat with a causal_lm run")
    if not getattr(run.tokenizer, "chat_template", None) or getattr(run.model.config, "weitiao_prompts", "chat") != "chat":
        raise UserError("run_dir", f"'{run_dir}' learned to continue plain text, not conversations", "use `weitiao predict --prompt` to continue a text")
    from weitiao.data.examples import Examples

    sampling = default_sampling(run.opts, sampling)
    history: tuple = (("system", run.opts.system),) if run.opts.system else ()
    start = history
    interactive = stdin.isatty()
    while True:
        if interactive:
            stdout.write("> ")
            stdout.flush()
        line = stdin.readline()
        if not line or line.strip() == "/exit":
            return
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            history = start
            continue
        conv = history + (("user", text),)
        answer = run.task.answer(run, Examples([conv], None, None, [1], "chat"), sampling)[0]["generation"]
        history = conv + (("assistant", answer),)
        stdout.write(answer + "\n")
        stdout.flush()


def _write_predictions(rows: list[dict], output: str | None, task) -> None:
    if output and output.lower().endswith(".csv"):
        header, cells = task.csv_columns(rows)
        with open(output, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            for r in rows:
                w.writerow(cells(r))
        return
    out = open(output, "w", encoding="utf-8") if output else sys.stdout
    try:
        for r in rows:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
    finally:
        if output:
            out.close()
