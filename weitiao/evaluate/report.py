"""`report.html` and `plots/`: a run explained in one self-contained page (plots embedded).

Written at the end of training (unless `output.report: false`) and by `weitiao report RUN`, which
also works on a run that is still training or was stopped: it reads metrics.jsonl as it stands,
and scores the validation data with model/ (the best model so far) where one exists.

Plots: training and validation loss, learning rate per parameter group, each evaluation metric
over steps, throughput; classifiers: the confusion matrix (counts and normalized), per-class
precision/recall/F1, a reliability diagram with its expected calibration error; NER: F1 per
entity type and a confusion of entity types (exact spans); generative runs: perplexity over steps (with the metrics) and sample generations.
Tables: final metrics, the trainable parameters, data cleaning counts, the forgetting probe,
the most confidently wrong validation examples.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

import numpy as np

from weitiao.rundir import CONFIG, GENERATIONS, METRICS, METRICS_LOG, MODEL, PLOTS, REPORT, status  # noqa: F401 (REPORT, PLOTS: also named here)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> tuple[float, list[dict]]:
    """ECE of single-label predictions: the confidence (top probability) in `bins` equal-width bins;
    sum over bins of (share of examples) * |accuracy - mean confidence|.

    Args:
        probs: [n, classes] probabilities; labels: [n] true class ids.

    Returns:
        (ECE, one {lo, hi, count, accuracy, confidence} per bin).
    """
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = (predicted == labels).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows, ece = [], 0.0
    for k in range(bins):
        inside = (confidence > edges[k]) & (confidence <= edges[k + 1]) if k else (confidence >= 0) & (confidence <= edges[1])
        count = int(inside.sum())
        acc = float(correct[inside].mean()) if count else 0.0
        conf = float(confidence[inside].mean()) if count else 0.0
        ece += count / max(len(labels), 1) * abs(acc - conf)
        rows.append({"lo": float(edges[k]), "hi": float(edges[k + 1]), "count": count, "accuracy": acc, "confidence": conf})
    return ece, rows


def enabled(setting) -> bool:
    """`setting` (output.report), unless WEITIAO_REPORT=0 turns reports off (the test suite does, for speed)."""
    return bool(setting) and os.environ.get("WEITIAO_REPORT", "1") != "0"


def read_records(run_dir: Path) -> list[dict]:
    path = run_dir / METRICS_LOG
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written by a run that is still training
            pass
    return out


def _report_section(task) -> str | None:
    """Which scored section the run's task asks for (config.yaml's `task:`, a name or a section); None
    for a task this weitiao does not know (a handed run's)."""
    from weitiao.errors import UserError
    from weitiao.tasks import DEFAULT, get_task

    name = (task.get("type") or DEFAULT) if isinstance(task, dict) else (task or DEFAULT)
    try:
        return get_task(name).report_section
    except (UserError, TypeError):
        return None


def write_report(run_dir: str | Path, score: bool = True) -> Path:
    """Write plots/*.png and report.html for the run in `run_dir`; returns the report's path.

    `score`: also score the validation data with model/ (the classifier's confusion matrix, calibration
    and confidently wrong examples), when model/ exists."""
    from weitiao.files import full_disk, out_of_space

    try:
        return _write_report(Path(run_dir), score)
    except Exception as e:  # a full disk: report.html is written last and whole, so the previous one is as it was
        code = full_disk(e)
        if code is None:
            raise
        raise out_of_space(Path(run_dir) / REPORT, code, "the previous report (if any) is as it was") from None


def _write_report(run_dir: Path, score: bool) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import yaml

    from weitiao.errors import UserError

    if not (run_dir / CONFIG).is_file():
        raise UserError("run_dir", f"'{run_dir}' is not a run folder (no config.yaml)", "give a folder written by `weitiao train`")
    plots = run_dir / PLOTS
    plots.mkdir(exist_ok=True)
    records = read_records(run_dir)
    try:
        cfg = yaml.safe_load((run_dir / CONFIG).read_text(encoding="utf-8"))
        final = json.loads((run_dir / METRICS).read_text()) if (run_dir / METRICS).is_file() else {}
        if not isinstance(cfg, dict) or not isinstance(final, dict):
            raise ValueError("not a mapping")
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise UserError("run_dir", f"the config.yaml or metrics.json of '{run_dir}' cannot be read ({type(e).__name__})",
                        "the run folder is damaged: train it again (or restore those files)") from None
    figures: list[tuple[str, Path]] = []
    figures += curves(records, plots)
    tables: list[tuple[str, str]] = []
    section = _report_section(cfg.get("task"))
    validation = final.get("validation", {})
    if validation.get("per_type"):
        figures.append(("F1 per entity type", per_type_plot(validation["per_type"], plots / "per_type.png")))
    if score and (run_dir / MODEL / "config.json").is_file() and section == "labels":
        figures_, tables_ = classifier_section(run_dir, plots)
        figures += figures_
        tables += tables_
    if score and (run_dir / MODEL / "config.json").is_file() and section == "entities":
        figures.append(("Entity types: gold (rows) against predicted (columns), exact spans", entity_section(run_dir, plots)))
    tables = summary_tables(records, final) + tables
    generations = run_dir / GENERATIONS
    if generations.is_file():
        tables.append(("Sample generations (last evaluation)", generations_table(generations)))
    page = render(run_dir, cfg, status(run_dir), figures, tables)
    from weitiao.files import write_text

    write_text(run_dir / REPORT, page)
    return run_dir / REPORT


def _figure(path: Path, draw, size=(6.4, 3.6)) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, dpi=100)
    draw(fig, ax)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def curves(records: list[dict], plots: Path) -> list[tuple[str, Path]]:
    """Loss, learning rates, evaluation metrics and throughput over optimizer steps."""
    train = [r for r in records if "loss" in r and "step" in r and "eval" not in r]
    evals = [r for r in records if "eval" in r]
    out = []

    def loss(fig, ax):
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="training loss")
        valid = [(r["step"], r["eval"]["loss"]) for r in evals if isinstance(r["eval"].get("loss"), float)]
        if valid:
            ax.plot(*zip(*valid), "o-", label="validation loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()

    out.append(("Loss", _figure(plots / "loss.png", loss)))

    def lr(fig, ax):
        names = sorted({k for r in train for k in r.get("lrs", {})})
        for name in names:
            ax.plot([r["step"] for r in train if name in r.get("lrs", {})], [r["lrs"][name] for r in train if name in r.get("lrs", {})], label=name)
        if not names:
            ax.plot([r["step"] for r in train], [r.get("lr") for r in train], label="lr")
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        ax.legend(fontsize=7)

    out.append(("Learning rate per parameter group", _figure(plots / "lr.png", lr)))

    keys = sorted({k for r in evals for k, v in r["eval"].items() if isinstance(v, float) and k != "loss"})

    def metrics(fig, ax):
        for k in keys:
            points = [(r["step"], r["eval"][k]) for r in evals if isinstance(r["eval"].get(k), float)]
            ax.plot(*zip(*points), "o-", label=k)
        ax.set_xlabel("step")
        ax.set_title("validation metrics")
        if keys:
            ax.legend(fontsize=7)

    out.append(("Validation metrics over steps", _figure(plots / "metrics.png", metrics)))

    def throughput(fig, ax):
        ax.plot([r["step"] for r in train], [r.get("samples_per_s") for r in train], label="samples/s")
        ax.set_xlabel("step")
        ax.set_ylabel("samples per second")

    out.append(("Throughput", _figure(plots / "throughput.png", throughput)))
    return out


def per_type_plot(per_type: dict, path: Path) -> Path:
    def draw(fig, ax):
        names = sorted(per_type)
        ax.barh(names, [per_type[n]["f1"] for n in names])
        ax.set_xlim(0, 1)
        ax.set_xlabel("F1")

    return _figure(path, draw)


def classifier_section(run_dir: Path, plots: Path) -> tuple[list, list]:
    """Confusion matrix, per-class bars, reliability diagram (single-label), most confidently wrong examples."""
    from weitiao.rundir.opening import open_run, scored, validation_data

    run = open_run(str(run_dir))
    enc = validation_data(run, "validation data")
    probs = np.stack(scored(run, enc, None).outputs)
    names = run.names
    if getattr(run.opts, "multi_label", False):
        return [], []
    labels = np.asarray(enc.labels)
    predicted = probs.argmax(axis=1)
    k = len(names)
    counts = np.zeros((k, k), dtype=int)
    np.add.at(counts, (labels, predicted), 1)
    normalized = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figures = []
    for title, matrix, file, fmt in (("Confusion matrix (counts)", counts, "confusion.png", "d"),
                                     ("Confusion matrix (normalized by true label)", normalized, "confusion_normalized.png", ".2f")):
        def draw(fig, ax, matrix=matrix, fmt=fmt):
            ax.imshow(matrix, cmap="Blues")
            ax.set_xticks(range(k), names, rotation=90 if k > 6 else 0, fontsize=7)
            ax.set_yticks(range(k), names, fontsize=7)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            if k <= 12:
                for i in range(k):
                    for j in range(k):
                        ax.text(j, i, format(matrix[i, j], fmt), ha="center", va="center", fontsize=7)

        figures.append((title, _figure(plots / file, draw, (5.5, 5))))
    precision = np.diag(counts) / np.maximum(counts.sum(axis=0), 1)
    recall = np.diag(counts) / np.maximum(counts.sum(axis=1), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)

    def bars(fig, ax):
        x = np.arange(k)
        for offset, values, label in ((-0.27, precision, "precision"), (0, recall, "recall"), (0.27, f1, "F1")):
            ax.bar(x + offset, values, 0.27, label=label)
        ax.set_xticks(x, names, rotation=90 if k > 6 else 0, fontsize=7)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)

    figures.append(("Precision, recall and F1 per class", _figure(plots / "per_class.png", bars)))
    ece, bins = expected_calibration_error(probs, labels)

    def reliability(fig, ax):
        centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
        ax.bar(centers, [b["accuracy"] if b["count"] else 0 for b in bins], width=0.1, edgecolor="black", label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(f"reliability (ECE {ece:.4f})")
        ax.legend(fontsize=7)

    figures.append((f"Reliability diagram: expected calibration error {ece:.4f}", _figure(plots / "reliability.png", reliability, (5, 4))))
    texts = _validation_texts(run)
    wrong = [i for i in np.argsort(-probs.max(axis=1)) if predicted[i] != labels[i]][:10]
    rows = "".join(f"<tr><td>{html.escape(str(texts[i]) if texts else str(i))}</td><td>{html.escape(names[labels[i]])}</td>"
                   f"<td>{html.escape(names[predicted[i]])}</td><td>{probs[i].max():.3f}</td></tr>" for i in wrong)
    table = f"<table><tr><th>input</th><th>true</th><th>predicted</th><th>confidence</th></tr>{rows}</table>" if wrong else "<p>none</p>"
    (plots / "calibration.json").write_text(json.dumps({"ece": ece, "bins": bins}, indent=2))
    return figures, [("Most confidently wrong validation examples", table)]


NONE = "(none)"


def entity_confusion(gold: list[list[str]], pred: list[list[str]]) -> tuple[list[str], np.ndarray]:
    """Entities matched by exact span: [gold type, predicted type] counts; a gold entity with no predicted
    entity on its span counts under the predicted type "(none)", a predicted one with no gold under gold "(none)".

    Args:
        gold, pred: per sentence, the tag of every word (IOB2 or BIOES).

    Returns:
        (the types, then "(none)"; the [types + 1, types + 1] count matrix).
    """
    from weitiao.tasks.token_classification import tags as T

    pairs = []
    for g, p in zip(gold, pred):
        want = {(a, b): kind for a, b, kind in T.entity_spans(g)}
        got = {(a, b): kind for a, b, kind in T.entity_spans(p)}
        pairs += [(kind, got.get(span, NONE)) for span, kind in want.items()]
        pairs += [(NONE, kind) for span, kind in got.items() if span not in want]
    kinds = sorted({k for pair in pairs for k in pair} - {NONE}) + [NONE]
    at = {k: i for i, k in enumerate(kinds)}
    matrix = np.zeros((len(kinds), len(kinds)), dtype=int)
    for g, p in pairs:
        matrix[at[g], at[p]] += 1
    return kinds, matrix


def entity_section(run_dir: Path, plots: Path) -> Path:
    from weitiao.rundir.opening import open_run, scored, validation_data
    from weitiao.tasks.token_classification import predicted_tags, word_probs

    run = open_run(str(run_dir))
    enc = validation_data(run, "validation data")
    outputs = scored(run, enc, None).outputs
    gold = [[run.names[i] for i in s] for s in enc.gold]
    pred = [predicted_tags(p, run.names)[0] for p in word_probs(outputs, enc)]
    kinds, matrix = entity_confusion(gold, pred)

    def draw(fig, ax):
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(kinds)), kinds, rotation=60, fontsize=7)
        ax.set_yticks(range(len(kinds)), kinds, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        for i in range(len(kinds)):
            for j in range(len(kinds)):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7)

    return _figure(plots / "entity_confusion.png", draw, (5.5, 5))


def _validation_texts(run) -> list:
    """The validation inputs in the order `validation_data` encodes them (for the wrong-examples table)."""
    from weitiao.data import load_task_data
    from weitiao.data.clean import clean_split
    from weitiao.data.examples import LabelSet

    try:
        if run.data.validation:
            reader = run.task.reader(run.data, run.opts)
            ex, _ = clean_split(reader.read(run.data.validation, "data.validation", LabelSet(run.names))[0], drop_duplicates=False)
        else:
            ex = load_task_data(run.task, run.data, run.opts, run.seed).validation
        return list(ex.text)
    except Exception:  # noqa: BLE001  (the table falls back to row numbers)
        return []


def summary_tables(records: list[dict], final: dict) -> list[tuple[str, str]]:
    tables = []
    for split in ("validation", "test"):
        scores = {k: v for k, v in final.get(split, {}).items() if isinstance(v, (int, float))}
        if scores:
            tables.append((f"Final {split} metrics", _kv(scores)))
    if final.get("train"):
        tables.append(("Training", _kv({k: v for k, v in final["train"].items() if not isinstance(v, dict)})))
    params = next((r["parameters"] for r in reversed(records) if "parameters" in r), None)
    if params:
        rows = "".join(f"<tr><td>{html.escape(p['module'])}</td><td>{p['trainable']:,}</td><td>{p['total']:,}</td>"
                       f"<td>{100 * p['trainable'] / max(p['total'], 1):.1f}%</td></tr>" for p in params)
        tables.append(("Trainable parameters", f"<table><tr><th>module</th><th>trainable</th><th>total</th><th>%</th></tr>{rows}</table>"))
    data = next((r["data"] for r in records if "data" in r), None)
    if data:
        tables.append(("Data: reading and cleaning", f"<pre>{html.escape(json.dumps(data, indent=2))}</pre>"))
    probe = final.get("probe")
    if probe:
        keys = [k for k in probe["after"] if probe["after"][k] is not None]
        rows = "".join(f"<tr><td>{k}</td><td>{probe['before'].get(k, float('nan')):.4f}</td><td>{probe['after'][k]:.4f}</td></tr>" for k in keys)
        tables.append((f"Forgetting probe ({html.escape(str(probe.get('run')))})", f"<table><tr><th>metric</th><th>before</th><th>after</th></tr>{rows}</table>"))
    return tables


def generations_table(path: Path, n: int = 5) -> str:
    """The last evaluation's generations (generations.jsonl: one line per prompt, each with its step)."""
    rows_ = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    last = max((r.get("step", 0) for r in rows_), default=0)
    samples = [r for r in rows_ if r.get("step", 0) == last][:n]
    rows = "".join(f"<tr><td>{html.escape(str(s.get('prompt', s.get('source', ''))))}</td><td>{html.escape(str(s.get('generation', '')))}</td>"
                   f"<td>{html.escape(str(s.get('reference', '')))}</td></tr>" for s in samples)
    return f"<table><tr><th>prompt</th><th>generation</th><th>reference</th></tr>{rows}</table>"


def _kv(values: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{v:.4f}</td></tr>" if isinstance(v, float) else
                   f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in values.items())
    return f"<table>{rows}</table>"


def render(run_dir: Path, cfg: dict, state: str, figures: list, tables: list) -> str:
    """One HTML page; the PNGs embedded as data URLs (the file stands alone)."""
    import yaml

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>weitiao: {html.escape(run_dir.name)}</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}img{max-width:100%}h2{margin-top:1.5em}"
             "pre{background:#f6f6f6;padding:.5em;font-size:12px;overflow:auto}</style></head><body>",
             f"<h1>{html.escape(run_dir.name)}</h1><p id='status'>status: <b>{state}</b></p>"]
    for title, body in tables:
        parts.append(f"<h2>{html.escape(title)}</h2>{body}")
    for title, path in figures:
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(path.name)}' src='data:image/png;base64,{data}'>")
    parts.append(f"<h2>Config</h2><pre>{html.escape(yaml.safe_dump(cfg, sort_keys=False))}</pre></body></html>")
    return "\n".join(parts)
