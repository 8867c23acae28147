"""The run configuration: one pydantic schema, YAML loading and dotted overrides.

Defaults live here and only here. Code below the CLI receives plain values taken from a
validated `RunConfig`, never the raw YAML.
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from weitiao.errors import UserError
from weitiao.schema import DataConfig, Section, SplitConfig  # noqa: F401 (DataConfig and SplitConfig are part of this module's schema)
from weitiao.tasks import DEFAULT as DEFAULT_TASK
from weitiao.tasks import TASKS, check_data_keys, get_task, load_all

SCHEMA_VERSION = 1
load_all()  # the `task:` section is one of the registered tasks' sections


# The `task:` section: the options of whichever registered task `type` names.
TaskConfig = Annotated[Union[tuple(t.Options for t in TASKS.values())], Field(discriminator="type")]


class DropoutConfig(Section):
    """Dropout overrides; None keeps the model's own value."""

    hidden: float | None = Field(None, ge=0, lt=1)
    attention: float | None = Field(None, ge=0, lt=1)
    classifier: float | None = Field(None, ge=0, lt=1)


class StrategyConfig(Section):
    """The fine-tuning controller: which parameters learn, how fast, and what holds them back.

    `strategy: full` and `strategy: {freeze_bottom: 4}` are shorthands for
    `{method: full}` and `{method: freeze_bottom, layers: 4}`. A method's own options sit
    beside `method`; options that the chosen method does not use are refused.
    """

    method: str = "full"
    # parameter selector
    layers: int | None = Field(None, ge=0)  # freeze_bottom: frozen layers; train_top: trained layers
    include: list[str] = []  # regexes: matching parameters learn too
    exclude: list[str] = []  # regexes: matching parameters are frozen
    freeze_embeddings: bool = False
    r: int = Field(8, ge=1)  # lora / dora rank
    alpha: float = Field(16, gt=0)  # lora / dora scaling numerator (scale = alpha / r, or alpha / sqrt(r) with rslora)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    rslora: bool = False
    target_modules: list[str] | str | None = None  # None: peft's per-architecture default; "all-linear"
    num_virtual_tokens: int = Field(20, ge=1)  # prefix / prompt / ptuning
    adapter_size: int = Field(64, ge=1)  # bottleneck width of adapter
    adapter_type: Literal["houlsby", "pfeiffer"] = "houlsby"
    unfreeze_every: int = Field(1, ge=1)  # gradual_unfreeze: one more layer group every N ...
    unfreeze_unit: Literal["epochs", "steps"] = "epochs"
    # gradient controller
    layer_lr_decay: float | None = Field(None, gt=0, le=1)
    head_lr: float | None = Field(None, gt=0)
    head_fit: Literal["solver", "gradient"] = "solver"  # a frozen, cached body's linear head: first fitted by L-BFGS (C chosen on validation), or by gradient alone
    lr_overrides: dict[str, float] = {}  # regex -> learning rate
    # regularizer
    l2sp: float = Field(0.0, ge=0)  # alpha: pull pretrained weights toward their start
    l2sp_beta: float = Field(0.0, ge=0)  # beta: plain L2 on new (head) weights
    dropout: DropoutConfig = DropoutConfig()
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    probe: str | None = None  # forgetting probe: a previous run folder

    @field_validator("lr_overrides")
    @classmethod
    def _valid_overrides(cls, v: dict[str, float]) -> dict[str, float]:
        for pattern, lr in v.items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise UserError("strategy.lr_overrides", f"{pattern!r} is not a regular expression ({e})",
                                r"fix the pattern (Python re syntax; escape dots: 'encoder\.layer\.0\.')") from None
            if not (math.isfinite(lr) and lr > 0):
                raise UserError("strategy.lr_overrides", f"the learning rate of {pattern!r} is {lr}",
                                "give a learning rate above 0, e.g. 1.0e-5 (to freeze those parameters use strategy.exclude)")
        return v


class TrainingConfig(Section):
    epochs: float = Field(1, gt=0, le=100_000)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int | None = Field(None, ge=1)  # default: 128 on a GPU, 32 on CPU (faster there)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    scheduler: Literal["linear", "cosine", "cosine_restarts", "constant"] = "linear"
    num_cycles: int = Field(2, ge=1)  # cosine_restarts: number of cosine cycles
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    warmup_steps: int | None = Field(None, ge=0)  # wins over warmup_ratio when set
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = Field(42, ge=0, lt=2**32)  # numpy and scikit-learn take no other seeds
    group_by_length: bool = True
    pad_to_multiple_of: int | None = Field(None, ge=1)  # training batches; default: 8 on a GPU (fewer distinct shapes), 1 on CPU
    eval_every: int | None = Field(None, ge=1)  # optimizer steps; default: every epoch
    log_every: int = Field(10, ge=1)
    metric: str | None = None  # the validation metric that picks the best model; default: the task's (accuracy; multi-label: f1_micro)
    patience: int | None = Field(None, ge=1)  # early stopping: evaluations without improvement
    checkpoint_every: int | None = Field(None, ge=1)  # optimizer steps; always at epoch end
    keep_checkpoints: int = Field(2, ge=1)
    feature_cache: bool = True  # cache the frozen bottom's output when the strategy freezes it
    feature_cache_memory_gb: float = Field(4.0, ge=0)  # larger caches go to a memory-mapped file in the run folder
    max_bad_steps: int = Field(5, ge=1)  # non-finite losses/gradients in a row before stopping
    auto_batch_size: bool = False  # GPU: find the largest batch that fits, accumulating to keep the effective batch
    mixed_precision: Literal["no", "bf16", "fp16"] | None = None  # None: accelerate launch's setting, else no
    prune_last_layer: bool = True  # BERT-style classifiers: the last layer computes only the token the head reads (exact)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: 58% less GPU memory, 37% fewer samples/s (docs/benchmarks.md)
    attention: Literal["auto", "eager", "sdpa"] = "auto"  # auto: eager on CPU (no measurable difference from sdpa there), sdpa on GPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(None, ge=1, le=1024)  # torch segfaults on absurd counts
    progress: bool = True


class OutputConfig(Section):
    dir: str = "runs"
    report: bool = True  # report.html and plots/ at the end of training (`weitiao report RUN` writes them any time)
    tracking: list[str] | str = "tensorboard"  # accelerate's trackers: tensorboard, wandb, mlflow, ... (installed ones); none: off

    @field_validator("tracking")
    @classmethod
    def _known_trackers(cls, v):
        known = ("tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio", "none")
        for name in [v] if isinstance(v, str) else v:
            if name not in known:
                match = difflib.get_close_matches(name, known, n=1)
                raise UserError("output.tracking", f"unknown tracker {name!r}", f"did you mean '{match[0]}'?" if match else f"use one of {', '.join(known)}")
        return v


class StudentConfig(Section):
    layers: int | None = Field(None, ge=1)  # distill: the teacher's model with this many of its layers (evenly spaced, the top one kept)


class DistillConfig(Section):
    teacher: str | None = None  # the teacher's run folder (`weitiao distill TEACHER student.yaml` sets it)
    temperature: float = Field(2.0, gt=0)  # logits are divided by it before the softmax, on both sides
    alpha: float = Field(0.5, ge=0, le=1)  # the distillation term's weight; 1 - alpha on the labels' cross-entropy
    unlabelled: str | None = None  # texts without labels (a .txt file, a text a line; or a table): the teacher labels them


class RunConfig(Section):
    version: int = SCHEMA_VERSION
    model: str = "minilm"
    task: TaskConfig = Field(default_factory=lambda: get_task(DEFAULT_TASK).Options())
    data: DataConfig = Field(default_factory=DataConfig)
    strategy: StrategyConfig = StrategyConfig()
    training: TrainingConfig = TrainingConfig()
    output: OutputConfig = OutputConfig()
    student: StudentConfig | None = None
    distill: DistillConfig | None = None

    @field_validator("version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"this weitiao reads config version {SCHEMA_VERSION}")
        return v

    @model_validator(mode="after")
    def _task_defaults(self):
        """A task's own defaults where the config is silent: a causal LM learns with LoRA (r 16) on
        examples of up to 512 tokens."""
        task = get_task(self.task.type)
        if "strategy" not in self.model_fields_set and task.default_strategy:
            self.strategy = StrategyConfig(**task.default_strategy)
        if "max_length" not in self.data.model_fields_set and task.default_max_length:
            self.data.max_length = task.default_max_length
        return self

    @model_validator(mode="after")
    def _task_metric(self):
        """The task's default metric when none is named; a metric the task does not produce is refused
        here, before anything is trained (it would never pick a best model)."""
        task = get_task(self.task.type)
        names = task.metric_names(self.task)
        if self.training.metric is None:
            self.training.metric = task.default_metric(self.task)
        elif self.training.metric not in names:
            raise UserError("training.metric", f"{self.training.metric!r} is not a metric of {task.describe(self.task)}",
                            f"use one of {', '.join(names)}")
        return self

    @model_validator(mode="after")
    def _data_files(self):
        """data.train names the training file; a task that reads its data itself (multi-task: each of its
        tasks names its own) refuses data files at the top."""
        own = get_task(self.task.type).own_data
        if not own and not self.data.train:
            raise UserError("data.train", "is required", "add 'train:' to the data section (the training file)")
        for key in ("train", "validation", "test", "labels", "labels_file") if own else ():
            if getattr(self.data, key):
                raise UserError(f"data.{key}", f"is set, but each task of a {self.task.type} run names its own data",
                                f"move it into task.tasks.NAME.data.{key}")
        for member in (getattr(self.task, "tasks", None) or {}).values():  # the top's data keys are every task's defaults
            for key in self.data.model_fields_set - member.data.model_fields_set:
                setattr(member.data, key, getattr(self.data, key))
        return self

    @model_validator(mode="after")
    def _task_data_keys(self):
        """A data key that only another task reads (data.text_column on a token classifier) is refused:
        it would be silently ignored."""
        check_data_keys(self.data, self.task.type)
        return self

    @model_validator(mode="after")
    def _augmented_cache(self):
        """A feature cache stores the frozen backbone's output for un-augmented images: asked for by
        name beside task.augment, it is refused (left at its default, it is turned off at run time)."""
        augment = getattr(self.task, "augment", None)
        if augment and augment.active() and self.training.feature_cache and "feature_cache" in self.training.model_fields_set:
            raise UserError("training.feature_cache", "true, but task.augment changes the images every epoch, and the cache "
                            "holds the frozen backbone's features of the un-augmented ones",
                            "set training.feature_cache: false (the backbone runs on every augmented batch) or remove task.augment")
        return self

    @field_validator("task", mode="before")
    @classmethod
    def _task_shorthand(cls, v: Any) -> Any:
        """`task: ner_name` -> {type: ...}; an unknown type gets a did-you-mean before pydantic's union error."""
        v = {"type": v} if isinstance(v, str) else v
        if isinstance(v, dict):
            v = {"type": DEFAULT_TASK, **v}
            v["type"] = get_task(v["type"]).name  # refused with a did-you-mean, or an alias resolved
        return v

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategy_shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"method": v}
        return expand_strategy(v)


def expand_strategy(v: Any) -> Any:
    """`full` -> {method: full}; `{freeze_bottom: 4}` -> {method: freeze_bottom, layers: 4}.

    A single key that is an option of the section (`{layers: 4}`) is not a method name.
    """
    if isinstance(v, str):
        return {"method": v}
    if isinstance(v, dict) and len(v) == 1:
        (key, layers), = v.items()
        if key not in StrategyConfig.model_fields and isinstance(layers, int) and not isinstance(layers, bool):
            return {"method": key, "layers": layers}
    return v


# ---------------------------------------------------------------------------------------
# Loading


def config_from(config: str | Path | dict, overrides: dict | None = None) -> RunConfig:
    """The Python API's door: a YAML path or the same mapping, with {dotted key: value} overrides."""
    import copy

    if not isinstance(config, (dict, str, Path)):
        raise UserError("config", f"a {type(config).__name__} is not a config", "pass the path of a YAML file, or a dict of the same sections")
    raw = copy.deepcopy(config) if isinstance(config, dict) else read_yaml(Path(config))
    for key, value in (overrides or {}).items():
        set_dotted(raw, str(key), value)
    return validate(raw, source="config" if isinstance(config, dict) else str(config))


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML config, apply `key.sub=value` overrides, validate.

    Relative data paths are kept as written: they resolve against the current directory,
    as the user typed them in the shell.

    Raises:
        UserError: a missing file, invalid YAML, an unknown key or a value of the wrong type.
    """
    raw = read_yaml(Path(path))
    for item in overrides:
        apply_override(raw, item)
    return validate(raw, source=str(path))


def read_yaml(path: Path) -> dict:
    """A config file's mapping of sections, unvalidated."""
    if not path.is_file():
        raise UserError("config", f"file '{path}' does not exist", "give the path to a YAML config such as examples/sst2.yaml")
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UserError("config", f"'{path}' is not valid UTF-8 (byte {e.start})", "save the file as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"config {path}{where}", f"invalid YAML: {yaml_problem(e)}", "check the indentation and quoting there") from None
    if not isinstance(raw, dict):
        raise UserError("config", f"'{path}' does not hold a mapping of sections", "start from examples/sst2.yaml")
    return raw


class _UniqueKeys(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (a second `training:` section used to replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' appears twice in one mapping: merge the two",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str) -> Any:
    """yaml.safe_load, failing only with yaml.YAMLError.

    PyYAML lets a few mistakes out as other errors: a date that is not one (`2024-13-01`), an
    integer past Python's 4300-digit limit, brackets nested past the recursion limit.
    """
    try:
        return yaml.load(text, Loader=_UniqueKeys)  # noqa: S506 (a SafeLoader)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    except ValueError as e:
        raise yaml.YAMLError(str(e).split(":")[0]) from None


def yaml_problem(e: yaml.YAMLError) -> str:
    return getattr(e, "problem", None) or str(e).splitlines()[0]


def apply_override(raw: dict, item: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (`3e-5`, `true`, `[a, b]`)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise UserError("--set", f"{item!r} is not key=value", "write it like --set training.lr=3e-5")
    try:
        value = parse_yaml(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise UserError("--set", f"the value in {item!r} is not valid YAML ({yaml_problem(e)})",
                        "quote it, e.g. --set 'data.labels=[neg, pos]'") from None
    set_dotted(raw, key.strip(), value)


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """raw["a"]["b"]["c"] = value for the key "a.b.c", creating sections (and expanding shorthands) on the way."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if node is raw and part == "strategy":
            child = expand_strategy(child)
        elif node is raw and part == "task" and isinstance(child, str):
            child = {"type": child}
        if not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[parts[-1]] = value


def validate(raw: dict, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        errors = e.errors()
        first = describe_error(errors[0])
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UserError(*first[:2], first[2] + more) from None


def describe_error(err: dict) -> tuple[str, str, str]:
    """Turn one pydantic error into (field, problem, fix) for people."""
    loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
    if len(loc) > 1 and loc[0] == "task" and loc[1] in TASKS:
        err = {**err, "task": loc.pop(1)}  # the union's tag: `task.scheme`, not `task.token_classification.scheme`
    if len(loc) > 3 and loc[:2] == ["task", "tasks"] and loc[3] in TASKS:
        err = {**err, "member": loc.pop(3)}  # a multi-task run's task: `task.tasks.NAME.multi_label`
    field = ".".join(_key(p) for p in loc) or "config"
    value = err.get("input")
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1], err.get("task"), err.get("member"))
        match = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
        hint = f"did you mean '{match[0]}'?" if match else f"known keys here: {', '.join(known)}"
        return field, f"unknown key {loc[-1]!r}", hint
    if kind == "missing":
        return field, "is required", f"add '{loc[-1]}:' to the config"
    if kind == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        return field, f"{_shown(value)} is not allowed", f"use one of {allowed}"
    expected = {
        "float_parsing": "a number", "float_type": "a number", "int_parsing": "a whole number",
        "int_type": "a whole number", "int_from_float": "a whole number", "bool_parsing": "true or false",
        "bool_type": "true or false", "string_type": "a string", "list_type": "a list",
        "model_type": "a mapping of keys", "dict_type": "a mapping of keys",
    }.get(kind)
    if expected:
        return field, f"expected {expected}, got {_shown(value)}", f"set {field} to {expected}"
    msg = err["msg"].removeprefix("Value error, ")
    if isinstance(value, dict):  # a section's own check: its message names the key and the value
        key, _, rest = msg.partition(": ")
        if rest and key.isidentifier():
            return (f"{field}.{key}" if field and field != "config" else key), rest, "see docs/config.md for the allowed values"
        return field, msg, "see docs/config.md for the allowed values"
    return field, f"{msg} (got {_shown(value)})", "see docs/config.md for the allowed values"


def _key(part) -> str:
    """A key as written, or its repr when it would break the error line (a newline in a key)."""
    part = str(part)
    return part if part.isprintable() else repr(part)


# YAML aliases can make a small file hold a structure of 10^9 items: show values cut short.
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 120
_short.maxlevel = 3


def _shown(value: Any) -> str:
    return _short.repr(value)


def _known_keys(loc: list[str], task: str | None = None, member: str | None = None) -> list[str]:
    model: type[BaseModel] = RunConfig
    if loc[:1] == ["task"]:
        model, loc = get_task(task or DEFAULT_TASK).Options, loc[1:]
    if member and loc[:1] == ["tasks"]:  # inside a multi-task run's task: that task's options, weight and data
        model, loc = get_task(task).member_options(member), loc[2:]
    for part in loc:
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def flat_config(d: dict | None, prefix: str = "") -> dict:
    """A nested config mapping as {dotted.key: value} (what `--set` takes, trackers store, `compare` lines up)."""
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out |= flat_config(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML: feeding it back to `weitiao train` repeats the run."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
