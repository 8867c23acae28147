"""Tasks: one module each, registered by name in `TASKS` (duplicates refused).

The recipe, the loop, the feature cache, `eval`/`predict` and the Python API ask the task;
none of them names one. A task module must import cheaply (pydantic only at the top): the
config schema is built from the registry, and a mistake in the config is reported before
torch loads.

Adding a task: a module with an object that satisfies `Task`, and one line in `load_all`.
The registry test matrix (tests/test_tasks.py) then trains, saves, reloads and predicts it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from weitiao.errors import UserError, add_to, load_plugins, unknown

if TYPE_CHECKING:
    import torch

    from weitiao.data import Reader


class Task(Protocol):
    """What the rest of weitiao asks of a task. `opts` is the task's validated `task:` section.

    Data flows: table rows -> `Examples` (reader) -> `encode` -> rows of token ids (an "encoded"
    object with `lengths`, `len()`, `subset(index)` and `truncated`) -> `collate` -> batches ->
    logits -> (`loss`, `count_targets`) in training; -> `outputs` (one per encoded row) ->
    `metrics` / `decode` in evaluation and prediction.
    """

    name: str
    Options: type  # the pydantic section for `task:` (its `type` field is the discriminator)
    data_keys: frozenset[str]  # data.* keys only this task reads (a key another task reads is refused here)
    peft_task_type: str  # SEQ_CLS | TOKEN_CLS | CAUSAL_LM | SEQ_2_SEQ_LM
    reads_one_position: bool  # the head reads one position of the last layer: gates last-layer pruning and first-token caching
    feature_cache: bool  # its inputs are token sequences whose frozen-bottom features the cache can store
    takes_images: bool  # its inputs are image files (predict --image, uploads); every other task reads text

    def metric_names(self, opts) -> tuple[str, ...]: ...
    def default_metric(self, opts) -> str: ...
    def headline(self, metrics: dict) -> dict: ...  # the scalar metrics worth a log line
    def summary(self, metrics: dict) -> str: ...  # the metrics line printed at the end
    def describe(self, opts) -> str: ...  # the task in words, for errors
    too_long: str  # what happens to inputs past data.max_length ("cut to ... ({n} tokens)"), and the fix
    too_long_fix: str
    too_long_note: str  # eval/predict's note: "{k} of {n} texts were longer than ... ({m} tokens) ..."
    def reader(self, data, opts) -> "Reader": ...  # reads examples and settles the label set (weitiao.data)
    def processor(self, model_path: str, model_name: str | None = None, max_length: int | None = None): ...  # tokenizer / image processor, checked
    def encode(self, processor, examples, max_length: int, opts, names: list[str]): ...
    def build(self, model_path: str, label_names: list[str], opts, dropout: dict | None, attention: str | None,
              pad_token_id: int | None) -> tuple[Any, set[str]]: ...  # (model, names of the parameters it added)
    def collate(self, encoded, index: list[int], pad_id: int, num_labels: int, opts, multiple: int = 1) -> dict: ...
    def loss(self, logits: "torch.Tensor", labels: "torch.Tensor", opts, label_smoothing: float) -> tuple["torch.Tensor", int]: ...
    def count_targets(self, batch: dict) -> int: ...  # the count of `loss`, from the CPU batch (the loop needs it before the forward pass)
    def outputs(self, logits: "torch.Tensor", encoded, index: list[int], opts) -> list: ...  # per row: what metrics and decode read (numpy)
    def metrics(self, outputs: list, encoded, label_names: list[str], opts) -> dict: ...
    def decode(self, outputs: list, encoded, examples, label_names: list[str], opts) -> list[dict]: ...  # `predict`'s objects
    def csv_columns(self, rows: list[dict]) -> tuple[list[str], Any]: ...  # `predict --output x.csv`: header, row -> cells
    def examples_from_texts(self, texts: list[str], processor, opts) -> Any: ...  # `predict --text` inputs
    def load(self, model_dir) -> Any: ...  # the trained model of a run folder


class TaskDefaults:
    """The optional part of `Task`, with what a task that does not set it is. Every plug-in inherits
    this, so code outside tasks/ reads declared attributes: it never probes a task with hasattr and
    never compares a task's name."""

    generates = False  # writes text: generations at every evaluation and `answer` to prompts; it has no label set
    chat = False  # answers conversations: `weitiao chat`, serve's /v1/chat/completions
    pipeline_tag: str | None = None  # the Hugging Face pipeline tag on an export's model card
    distillable = False  # a student can learn its logits (`weitiao distill`)
    distill_same_tokens = False  # the student must read the teacher's tokens (one logit row per token)
    distill_unlabelled = False  # unlabelled texts can join distillation, labelled by the teacher
    report_section: str | None = None  # the report's scored section: "labels" (confusion, calibration), "entities" (entity types)
    probe_text_file = False  # its forgetting probe may be a plain text file (perplexity on it)
    own_data = False  # reads its data itself (`load_data`): no data.train at the top
    default_strategy: dict | None = None  # the strategy when the config names none
    default_max_length: int | None = None  # data.max_length when the config gives none
    cpu_attention = "eager"  # the attention kernel on CPU when training.attention is auto
    forward = None  # (model, batch, labels) -> what `loss` and `outputs` read, instead of model(**batch).logits
    augment = None  # (batch, encoded, opts) -> batch, on training batches only
    train_batches = None  # (encoded, batch_size, seed, epoch, opts, group) -> batches of row indices, instead of length-grouped ones
    load_data = None  # (data, opts, seed) -> DataBundle, instead of weitiao.data.load_data with the task's reader

    def configure_model(self, model, tokenizer, opts, train) -> None:
        """What the task settles on a model it built, from its processor (a causal LM: where generation stops)."""

    def head_targets(self, encoded, num_labels: int, opts):
        """The training targets as a linear head's solver wants them: ("single", ids [n]) or ("multi",
        0/1 [n, num_labels]); None for a task whose head is not a logistic regression."""
        return None

    def head_lr_scale(self, opts) -> float:
        """The new head's LR as a multiple of training.lr when strategy.head_lr is unset and the body learns too."""
        return 1.0

    def calibrate(self, opts, validation: dict) -> dict:
        """What the best model's validation scores settle for its later use (a multi-label decision
        threshold tuned there), as entries stored in the saved model's config.json; most tasks: none."""
        return {}

    def calibrated(self, opts, model_config: dict):
        """The task options a trained model is used with: `opts` with what `calibrate` stored in its config."""
        return opts


DEFAULT = "classification"  # the task when the config names none
TASKS: dict[str, Task] = {}
ALIASES = {"ner": "token_classification", "text_classification": "classification", "sequence_classification": "classification"}


def register_task(task: Task) -> Task:
    """Add a task under `task.name`; a second task of the same name is refused."""
    return add_to(TASKS, task.name, task, "task")


# The tasks' modules: importing one registers it (multitask after the tasks it combines). Loaded by
# name, so that plug-ins import this registry and never the reverse (no import cycle).
PLUGINS = ("causal_lm", "classification", "image_classification", "seq2seq", "token_classification", "multitask")


def load_all() -> dict[str, Task]:
    load_plugins(__name__, PLUGINS)
    return TASKS


def get_task(name: str) -> Task:
    """The registered task `name`, else a UserError with a did-you-mean."""
    load_all()
    if not isinstance(name, str):
        raise UserError("task.type", f"{name!r} is not a task name", f"give one of {', '.join(sorted(TASKS))}")
    name = ALIASES.get(name, name)
    if name not in TASKS:
        raise unknown("task.type", "task", name, TASKS)
    return TASKS[name]


def check_data_keys(data, task_type: str, field: str = "data") -> None:
    """A data key that only another task reads (data.text_column on a token classifier) is refused:
    it would be silently ignored."""
    from weitiao.schema import DataConfig

    mine = get_task(task_type).data_keys
    changed = {k for k in data.model_fields_set if getattr(data, k) != DataConfig.model_fields[k].default}
    for key in sorted(changed - mine):
        users = sorted(t.name for t in TASKS.values() if key in t.data_keys)
        if users:
            reads = f"; this task reads {field}.{f', {field}.'.join(sorted(mine))}" if mine else ""
            raise UserError(f"{field}.{key}", f"is not read by task '{task_type}'", f"remove it (it is for {', '.join(users)})" + reads)


def pick_metrics(metrics: dict, keys: tuple[str, ...]) -> dict:
    """The named metrics that have a value, in that order (a task's `headline`)."""
    return {k: metrics[k] for k in keys if metrics.get(k) is not None}


def metrics_line(metrics: dict, keys: tuple[str, ...]) -> str:
    """`k=v, ...` of the named metrics that have a value (a task's `summary`)."""
    return ", ".join(f"{k}={v:.4f}" for k, v in pick_metrics(metrics, keys).items())


def canonical_name(name):
    """A task name with its alias resolved (`ner` -> `token_classification`)."""
    return ALIASES.get(name, name) if isinstance(name, str) else name
