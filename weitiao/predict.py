"""`weitiao eval` and `weitiao predict`: use a finished run folder.

Both read the run's resolved config.yaml (for columns and the task) and its model/ folder
(a plain Hugging Face model; its config holds the label names).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from weitiao.errors import UserError


def load_run(run_dir: str):
    """The run's config, model and tokenizer. Raises UserError when the folder is not a finished run."""
    from transformers import AutoTokenizer

    from weitiao.config import load_config
    from weitiao.tasks.classification import build_model_from_run
    from weitiao.train.recipe import quiet_hf

    root = Path(run_dir)
    if not (root / "config.yaml").is_file():
        raise UserError("run_dir", f"'{run_dir}' is not a run folder (no config.yaml)", "give a folder written by `weitiao train`, e.g. runs/demo")
    if not (root / "model" / "config.json").is_file():
        raise UserError("run_dir", f"'{run_dir}' has no trained model (model/ is missing)", "let the run finish, or resume it")
    quiet_hf()
    cfg = load_config(root / "config.yaml")
    model = build_model_from_run(root / "model")
    if cfg.training.prune_last_layer:
        from weitiao.train.last_layer import prune_last_layer

        prune_last_layer(model)  # the same predictions, a sixth less work on a 6-layer BERT
    tokenizer = AutoTokenizer.from_pretrained(str(root / "model"))
    from weitiao.tasks.classification import ensure_pad_token

    if model.config.pad_token_id is None or tokenizer.pad_token is None:
        model.config.pad_token_id = ensure_pad_token(tokenizer)  # runs saved before the pad token was settled
    return cfg, model, tokenizer


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def label_names(model) -> list[str]:
    """The label names a saved classifier carries, in id order."""
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


def read_rows(cfg, path: str, field: str, labels, multi_label: bool):
    """A data file read with a run's columns (and labels), cleaned as training cleans evaluation
    data: rows with empty text are dropped, counted and reported; nothing else is touched.

    Raises:
        UserError: a problem with the file, a label the run does not know, or no rows with text.
    """
    from weitiao.data import read_examples
    from weitiao.data.clean import clean_split

    data = cfg.data if labels is not None else cfg.data.model_copy(update={"label_column": None})
    ex, _ = read_examples(path, field, data, labels, multi_label)
    ex, counts = clean_split(ex, drop_duplicates=False)
    if not len(ex):
        raise UserError(field, f"'{path}' has no rows with text", "give a file with the run's text column filled in")
    if counts["empty_dropped"]:
        note(f"{counts['empty_dropped']} of {counts['rows']} rows in '{path}' have an empty text and were skipped (as training skips them)")
    return ex


def read_labelled(cfg, tokenizer, names: list[str], path: str, field: str):
    """A labelled file read with a run's columns and labels, cleaned and tokenized (an `Encoded`)."""
    from weitiao.data.examples import LabelSet
    from weitiao.tasks import classification as task

    ex = read_rows(cfg, path, field, LabelSet(names), cfg.task.multi_label)
    return task.encode(tokenizer, ex, cfg.data.max_length)


def report_truncated(enc, max_length: int) -> None:
    if enc.truncated:
        note(f"{enc.truncated} of {len(enc)} texts were longer than data.max_length ({max_length} tokens) and were cut to it")


def scored(model, tokenizer, enc, names: list[str], multi: bool, batch_size: int | None):
    """Probabilities and mean loss on the best device, with out-of-memory turned into a clear stop.

    `batch_size` None: the default for the device (`eval_batch_size`)."""
    import torch

    from weitiao.errors import TrainingStopped
    from weitiao.tasks import classification as task
    from weitiao.train.recipe import eval_batch_size

    device = _device()
    batch_size = eval_batch_size(batch_size, device.type == "cuda")
    try:
        return task.predict_probs(model.to(device), enc, tokenizer.pad_token_id, len(names), multi, batch_size, device)
    except torch.OutOfMemoryError:
        smaller = max(1, batch_size // 2)
        raise TrainingStopped(f"out of memory scoring batches of {batch_size} on {device}; "
                              + (f"pass --batch-size {smaller}" if batch_size > 1 else "use a shorter data.max_length or a device with more memory")) from None


def evaluate_file(run_dir: str, data_path: str, output: str | None = None, batch_size: int | None = None) -> dict:
    """Metrics of the run's model on a labelled file; prints and returns them."""
    from weitiao.evaluate.metrics import classification_metrics, headline

    check_output(output)
    cfg, model, tokenizer = load_run(run_dir)
    names, multi = label_names(model), cfg.task.multi_label
    enc = read_labelled(cfg, tokenizer, names, data_path, "--data")
    report_truncated(enc, cfg.data.max_length)
    probs, loss = scored(model, tokenizer, enc, names, multi, batch_size or cfg.training.eval_batch_size)
    metrics = classification_metrics(probs, enc.labels, names, multi, cfg.task.threshold)
    metrics["loss"] = loss
    metrics["truncated"] = enc.truncated
    print(json.dumps(headline(metrics) | {"n": metrics["n"], "truncated": enc.truncated}))
    if output:
        Path(output).write_text(json.dumps(metrics, indent=2))
    return metrics


def predict(run_dir: str, texts: list[str] | None, file: str | None, output: str | None, batch_size: int | None = None) -> list[dict]:
    """Label and probabilities for each text; JSON lines on stdout, or a .jsonl/.csv file.

    Texts given with --text must not be empty; rows of a --file with an empty text are skipped
    and counted, as in training and `weitiao eval`.
    """
    from weitiao.data.examples import Examples
    from weitiao.tasks import classification as task

    check_output(output, (".jsonl", ".csv"))
    if texts is not None:
        empty = [i for i, t in enumerate(texts, 1) if not t.strip()]
        if empty:
            raise UserError("--text", f"text {empty[0]} is empty", "give non-empty texts")
    cfg, model, tokenizer = load_run(run_dir)
    names, multi = label_names(model), cfg.task.multi_label
    if file:
        ex = read_rows(cfg, file, "--file", None, multi)
    else:
        ex = Examples([t.strip() for t in texts], None, None, list(range(1, len(texts) + 1)), "--text")
    enc = task.encode(tokenizer, ex, cfg.data.max_length)
    report_truncated(enc, cfg.data.max_length)
    probs, _ = scored(model, tokenizer, enc, names, multi, batch_size or cfg.training.eval_batch_size)
    rows = []
    for text, p in zip(ex.text, probs):
        if multi:
            label = [names[i] for i in range(len(names)) if p[i] >= cfg.task.threshold]
        else:
            label = names[int(p.argmax())]
        rows.append({"text": text, "label": label, "probabilities": {n: round(float(x), 6) for n, x in zip(names, p)}})
    _write_predictions(rows, output)
    return rows


def _write_predictions(rows: list[dict], output: str | None) -> None:
    if output and output.lower().endswith(".csv"):
        names = list(rows[0]["probabilities"]) if rows else []
        with open(output, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"] + [f"p_{n}" for n in names])
            for r in rows:
                label = ",".join(r["label"]) if isinstance(r["label"], list) else r["label"]
                w.writerow([r["text"], label] + [r["probabilities"][n] for n in names])
        return
    out = open(output, "w", encoding="utf-8") if output else sys.stdout
    try:
        for r in rows:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
    finally:
        if output:
            out.close()
