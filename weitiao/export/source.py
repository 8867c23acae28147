"""What an export starts from: the run's model and task, its evaluation rows for the parity check,
and an example batch to trace; and the files every export folder shares (config, tokenizer, card)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from weitiao.errors import UserError
from weitiao.rundir import CONFIG, METRICS, MODEL

TRACE_ROWS = 4  # the example batch a graph is traced with: rows of different lengths, so it holds padding


@dataclass
class Source:
    run_dir: Path  # the run folder exported (a multi-task run: the single-task view of one task)
    name: str  # the run's name, for the model card
    run: object  # rundir.opening.LoadedRun: task, options, model, tokenizer, label names
    enc: object  # the task's encoded evaluation rows (at most `rows` of them)
    example: dict  # a collated batch of evaluation rows, without labels: what graphs are traced with
    inputs: list[str]  # the model's input names, in the order graphs take them

    @property
    def model_dir(self) -> Path:
        """The run's model/ folder (what `--format hf` copies)."""
        return self.run_dir / MODEL


def open_source(run_dir: str, task: str | None, form, scratch: Path, rows: int) -> Source:
    """The run (or one task of a multi-task run, as a single-task run in `scratch`), checked against `form`."""
    from weitiao.rundir.opening import open_run, validation_data

    root = Path(run_dir)
    view = _single_task(root, task, scratch)
    run = open_run(str(view), prune=form.graph)  # a graph of the pruned last layer does a sixth less work, exactly
    if form.graph and run.task.generates:
        raise UserError("--format", f"{form.name} is not available for a {run.opts.type} run: generation runs a loop over past key values, "
                        "which this exporter does not turn into one graph", "export with --format hf or adapter (transformers, peft, vLLM and optimum load those)")
    enc = validation_data(run, "parity data")
    if len(enc) > rows:
        enc = enc.subset(list(range(rows)))
    if not len(enc):
        raise UserError("parity data", "the run's validation data has no rows", "give the run validation data (data.validation)")
    example = _example_batch(run, enc)
    return Source(view, root.name, run, enc, example, list(example))


def _example_batch(run, enc) -> dict:
    from weitiao.tasks.common.scoring import pad_id

    lengths = enc.lengths[:64]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    index = sorted({order[0], order[-1], *order[len(order) // 2:len(order) // 2 + TRACE_ROWS - 2]})
    batch = run.task.collate(enc, index, pad_id(run.tokenizer), len(run.names), run.opts)
    batch.pop("labels", None)
    return batch


def _single_task(root: Path, task: str | None, scratch: Path) -> Path:
    """`root` itself, or for a multi-task run a single-task run folder of `task` (its config and model) in `scratch`."""
    from weitiao.rundir.opening import open_run

    if not (root / CONFIG).is_file():
        raise UserError("run_dir", f"'{root}' is not a run folder (no config.yaml)", "give a folder written by `weitiao train`, e.g. runs/demo")
    raw = yaml.safe_load((root / CONFIG).read_text(encoding="utf-8"))
    members = raw.get("task", {}).get("tasks") if isinstance(raw.get("task"), dict) else None
    if members is None:
        if task:
            raise UserError("--task", f"'{root}' is a single-task run", "leave out --task")
        return root
    if task not in members:
        raise UserError("--task", f"{task!r} is not a task of this run" if task else "is required for a multi-task run", f"give one of {', '.join(members)}")
    run = open_run(str(root))
    view = scratch / root.name
    (view / MODEL).mkdir(parents=True)
    run.model.export_task(task, view / MODEL, run.tokenizer)
    member = dict(members[task])
    raw["data"] = member.pop("data")
    member.pop("weight", None)
    raw["task"] = member
    raw.get("training", {}).pop("metric", None)  # the multi-task run's ("mean") is not this task's: its default applies
    (view / CONFIG).write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    metrics = root / METRICS
    if metrics.is_file():  # the task's own metrics, for the model card
        own = {k.split("/", 1)[1]: v for k, v in json.loads(metrics.read_text()).get("validation", {}).items() if k.startswith(task + "/")}
        (view / METRICS).write_text(json.dumps({"validation": own}))
    return view


def write_common(source: Source, folder: Path, form) -> None:
    """The files every export holds beside the model: config.yaml, config.json, the tokenizer, README.md, the manifest."""
    from weitiao.formats import MANIFEST
    from weitiao.version import __version__

    shutil.copy(source.run_dir / CONFIG, folder / CONFIG)
    if (source.run_dir / METRICS).is_file():  # the run's own scores, for /v1/model and the card
        shutil.copy(source.run_dir / METRICS, folder / METRICS)
    if not (folder / "config.json").is_file():
        source.run.model.config.save_pretrained(folder)
    source.run.tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(model_card(source, form), encoding="utf-8")
    (folder / MANIFEST).write_text(json.dumps({"format": form.name, "inputs": source.inputs, "task": source.run.opts.type,
                                               "run": str(source.run_dir), "weitiao_version": __version__,
                                               "created": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))


def model_card(source: Source, form) -> str:
    """A Hugging Face model card: front matter (base model, library, pipeline), then data, strategy and metrics."""
    from weitiao.version import __version__

    cfg = source.run.settings
    metrics_file = source.run_dir / METRICS
    validation = json.loads(metrics_file.read_text()).get("validation", {}) if metrics_file.is_file() else {}
    headline = source.run.task.headline(validation) if validation else {}
    strategy = {k: v for k, v in cfg["strategy"].items() if v not in (None, [], {}, False) and k != "dropout"}
    library = "peft" if form.name == "adapter" else "onnx" if form.name.startswith("onnx") else "transformers"
    lines = ["---", f"base_model: {json.dumps(cfg['model'])}", f"library_name: {library}",
             f"pipeline_tag: {source.run.task.pipeline_tag or cfg['task']['type']}", "tags:", "- weitiao", f"- {cfg['strategy']['method']}", "---", "",
             f"# {source.name}", "",
             f"Fine-tuned from `{cfg['model']}` by [weitiao](https://pypi.org/project/weitiao/) {__version__} "
             f"({cfg['task']['type']}); exported as `{form.name}`.", "",
             "## Data", "", f"- train: `{cfg['data']['train']}`", f"- validation: `{cfg['data']['validation'] or 'split off the training data'}`",
             f"- max_length: {cfg['data']['max_length']}", "", "## Strategy", ""]
    lines += [f"- {k}: `{json.dumps(v)}`" for k, v in strategy.items()]
    lines += ["", f"- training: {cfg['training']['epochs']} epochs, lr {cfg['training']['lr']}, batch {cfg['training']['batch_size']}", "",
              "## Validation metrics", ""]
    lines += [f"- {k}: {v:.4f}" for k, v in headline.items()] or ["- (not recorded)"]
    lines += ["", "parity.json compares this export with the run's own model on the validation data.", ""]
    return "\n".join(lines)
