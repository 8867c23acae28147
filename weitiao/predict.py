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
    return cfg, model, tokenizer


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def label_names(model) -> list[str]:
    """The label names a saved classifier carries, in id order."""
    return [model.config.id2label[i] for i in range(model.config.num_labels)]


def read_labelled(cfg, tokenizer, names: list[str], path: str, field: str):
    """A labelled file read with a run's columns and labels, cleaned and tokenized (an `Encoded`).

    Raises:
        UserError: a problem with the file, a label the run does not know, or no rows with text.
    """
    from weitiao.data import read_examples
    from weitiao.data.clean import clean_split
    from weitiao.data.examples import LabelSet
    from weitiao.tasks import classification as task

    ex, _ = read_examples(path, field, cfg.data, LabelSet(names), cfg.task.multi_label)
    ex, _ = clean_split(ex, drop_duplicates=False)
    if not len(ex):
        raise UserError(field, f"'{path}' has no rows with text", "give a labelled file with the run's columns")
    return task.encode(tokenizer, ex, cfg.data.max_length)


def evaluate_file(run_dir: str, data_path: str, output: str | None = None) -> dict:
    """Metrics of the run's model on a labelled file; prints and returns them."""
    from weitiao.evaluate.metrics import classification_metrics, headline
    from weitiao.tasks import classification as task

    cfg, model, tokenizer = load_run(run_dir)
    names, multi = label_names(model), cfg.task.multi_label
    enc = read_labelled(cfg, tokenizer, names, data_path, "--data")
    device = _device()
    probs, loss = task.predict_probs(model.to(device), enc, tokenizer.pad_token_id or 0, len(names), multi, cfg.training.eval_batch_size, device)
    metrics = classification_metrics(probs, enc.labels, names, multi, cfg.task.threshold)
    metrics["loss"] = loss
    print(json.dumps(headline(metrics) | {"n": metrics["n"]}))
    if output:
        Path(output).write_text(json.dumps(metrics, indent=2))
    return metrics


def predict(run_dir: str, texts: list[str] | None, file: str | None, output: str | None) -> list[dict]:
    """Label and probabilities for each text; JSON lines on stdout, or a .jsonl/.csv file."""
    from weitiao.data import read_examples
    from weitiao.data.examples import Examples
    from weitiao.tasks import classification as task

    cfg, model, tokenizer = load_run(run_dir)
    if output and Path(output).suffix.lower() not in (".jsonl", ".csv"):
        raise UserError("--output", f"'{output}' must end in .jsonl or .csv", "name the output file e.g. predictions.jsonl")
    if file:
        data = cfg.data.model_copy(update={"label_column": None})
        ex, _ = read_examples(file, "--file", data, None, cfg.task.multi_label)
    else:
        ex = Examples(list(texts), None, None, list(range(1, len(texts) + 1)), "--text")
    empty = [line for t, line in zip(ex.text, ex.lines) if not t.strip()]
    if empty:
        raise UserError("--text" if texts else "--file", f"text {empty[0]} is empty", "give non-empty texts")
    names, multi = label_names(model), cfg.task.multi_label
    device = _device()
    probs, _ = task.predict_probs(model.to(device), task.encode(tokenizer, ex, cfg.data.max_length), tokenizer.pad_token_id or 0,
                                  len(names), multi, cfg.training.eval_batch_size, device)
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
