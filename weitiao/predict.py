"""`weitiao eval` and `weitiao predict`: use a finished run folder.

Both read the run's resolved config.yaml (for columns and the task) and its model/ folder
(a plain Hugging Face model; its config holds the label names). What a prediction is (a label,
entities) is the task's: this module reads, scores and writes.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from weitiao.errors import UserError
from weitiao.rundir import owner
from weitiao.rundir.opening import LoadedRun, open_run, read_labelled, read_rows, report_truncated, scored, validation_data
from weitiao.runtime import note


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
    run = owner(path)
    if run is not None:
        raise UserError("--output", f"'{output}' is one of the files of the run '{run}'", "write the output beside it under another name, or elsewhere")


def evaluate_file(run_dir: str, data_path: str | None = None, output: str | None = None, batch_size: int | None = None, trust=()) -> dict:
    """Metrics of the run's model on a labelled file (None: the run's own validation data); prints and returns them."""
    from weitiao.runtime import inference_device
    from weitiao.tasks.common.scoring import task_metrics

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
    if texts is not None and ((field == "--image") != run.task.takes_images or (field == "--prompt" and not run.task.generates)):
        wanted = "--image with image files" if run.task.takes_images else "--prompt" if run.task.generates else "--text"
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
    if run.task.generates:
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
    from weitiao.tasks.common.generation import Sampling

    g = opts.generate
    own = {"max_new_tokens": g.max_new_tokens, "temperature": g.temperature, "top_p": g.top_p, "num_beams": getattr(g, "num_beams", 1)}
    return Sampling(**(own | (given or {})))


def chat(run_dir: str, stdin=None, stdout=None, sampling=None, trust=()) -> None:
    """`weitiao chat RUN`: a conversation with a causal LM run, kept turn after turn (/reset forgets it,
    /exit or end of input leaves)."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    run = open_run(run_dir, trust=trust)
    if not run.task.generates:
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
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8, read as lone surrogates: no tokenizer takes them
            note("that line is not UTF-8 text: it was skipped; type it again")
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
