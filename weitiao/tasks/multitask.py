"""Multi-task: several text tasks learned at once by one encoder with a head each (the shared-
and private-parameter design: Caruana 1997; Liu et al. 2019, MT-DNN).

```yaml
task:
  type: multitask
  sampling: proportional          # or uniform, or {temperature: 2}
  tasks:
    sentiment: {type: classification, weight: 1.0, data: {train: ..., text_column: sentence}}
    entities:  {type: token_classification, data: {train: ..., format: conll}}
```

Each task is a registered task with its own options, `data:` section and loss weight; its
examples are read, cleaned and split by that task's reader, encoded with the one tokenizer,
and batched alone: every batch holds one task's rows, and the sampling rule decides which task
the next batch comes from. The model (`MultiTaskModel`) holds each task's own transformers
model (a sequence classifier, a token classifier) with their base models replaced by one shared
encoder; strategies see the encoder's layers and a head per task (each its own LR group).
Metrics: every task's, named `task/metric`, and `mean`, the mean of each task's default metric.
`weitiao predict` returns every task's output for each input; `weitiao export RUN --task NAME`
writes one task's model alone, a plain transformers folder.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, create_model, field_validator, model_validator

from weitiao.data.examples import Examples, LabelSet
from weitiao.errors import UserError
from weitiao.schema import DataConfig, Section
from weitiao.tasks import TASKS, TaskDefaults, check_data_keys, get_task, register_task

if TYPE_CHECKING:
    from weitiao.models.multitask import Tagged

SEPARATOR = ":"  # the run's label names are "task:label" (model.config.id2label), each task's in its own id order
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
SHAREABLE = ("classification", "token_classification")  # tasks that read text through the one tokenizer


def _member(task) -> type:
    """A task's own options, with the two keys each task of a multi-task run adds: its loss weight and data."""
    return create_model(f"{task.Options.__name__}In{task.name.title().replace('_', '')}Multitask", __base__=task.Options,
                        weight=(float, Field(1.0, gt=0)), data=(DataConfig, ...))


MEMBERS = {n: _member(TASKS[n]) for n in SHAREABLE if n in TASKS}
Member = Annotated[Union[tuple(MEMBERS.values())], Field(discriminator="type")]


class Temperature(Section):
    temperature: float = Field(..., gt=0)  # p(task) ~ rows ** (1 / temperature): 1 proportional, large: uniform


class Options(Section):
    """The `task:` section of a multi-task run."""

    type: Literal["multitask"] = "multitask"
    sampling: Literal["proportional", "uniform"] | Temperature = "proportional"
    tasks: dict[str, Member]

    @field_validator("sampling", mode="before")
    @classmethod
    def _sampling(cls, v):
        if isinstance(v, str) or (isinstance(v, dict) and set(v) == {"temperature"}):
            return v
        raise UserError("task.sampling", f"{v!r} is not a sampling rule", "write proportional, uniform or {temperature: 2}")

    @field_validator("tasks", mode="before")
    @classmethod
    def _members(cls, v):
        if not isinstance(v, dict) or len(v) < 2:
            raise UserError("task.tasks", f"holds {len(v) if isinstance(v, dict) else repr(v)} task(s)",
                            "a multi-task run needs at least two, each NAME: {type: ..., data: {train: ...}}")
        out = {}
        for name, member in v.items():
            if not isinstance(name, str) or not NAME.match(name):
                raise UserError("task.tasks", f"task name {name!r} is not a plain name", "use letters, digits, _ or - (it names metrics: NAME/f1)")
            member = {"type": member} if isinstance(member, str) else member
            if isinstance(member, dict):
                member = {"type": "classification", **member}
                kind = get_task(member["type"]).name
                if kind not in SHAREABLE:
                    raise UserError(f"task.tasks.{name}.type", f"is {kind}, which does not read text",
                                    f"a shared text encoder learns {' and '.join(SHAREABLE)} tasks")
                member["type"] = kind
            out[name] = member
        return out

    @model_validator(mode="after")
    def _member_data(self):
        for name, member in self.tasks.items():
            check_data_keys(member.data, member.type, f"task.tasks.{name}.data")
        return self


def names_of(flat: list[str], task: str) -> list[str]:
    """One task's label names, in its id order, from the run's flat 'task:label' list."""
    return [n.split(SEPARATOR, 1)[1] for n in flat if n.split(SEPARATOR, 1)[0] == task]


def flat_names(labels: dict[str, list[str]]) -> list[str]:
    return [f"{task}{SEPARATOR}{n}" for task, names in labels.items() for n in names]


@dataclass
class MultiExamples:
    """Each task's examples of one split."""

    parts: dict[str, Examples]

    def __len__(self) -> int:
        return sum(len(x) for x in self.parts.values())


@dataclass
class MultiEncoded:
    """Each task's encoded rows, numbered one after another (task by task, in config order)."""

    parts: dict[str, Any]
    inputs: MultiExamples | None = None  # what was encoded (prediction decodes from it)
    num_labels: dict[str, int] = field(default_factory=dict)  # each task's label count
    offsets: dict[str, int] = field(init=False)

    def __post_init__(self):
        self.offsets, at = {}, 0
        for name, enc in self.parts.items():
            self.offsets[name] = at
            at += len(enc)

    @property
    def lengths(self) -> list[int]:
        return [n for enc in self.parts.values() for n in enc.lengths]

    @property
    def groups(self) -> list[int]:
        """The task of each row (evaluation batches never mix tasks)."""
        return [k for k, enc in enumerate(self.parts.values()) for _ in range(len(enc))]

    def __len__(self) -> int:
        return sum(len(enc) for enc in self.parts.values())

    @property
    def examples(self) -> int:
        return sum(enc.examples for enc in self.parts.values())

    @property
    def truncated(self) -> int:
        return sum(enc.truncated for enc in self.parts.values())

    def locate(self, index: list[int]) -> tuple[str, list[int]]:
        """The task of a batch (one task per batch) and the rows' indices within it."""
        for name, enc in self.parts.items():
            start = self.offsets[name]
            if start <= index[0] < start + len(enc):
                local = [i - start for i in index]
                if not all(0 <= i < len(enc) for i in local):
                    raise AssertionError("a batch mixes tasks")
                return name, local
        raise IndexError(index[0])

    def slice(self, outputs: list, name: str) -> list:
        start = self.offsets[name]
        return outputs[start:start + len(self.parts[name])]

    def subset(self, index: list[int]) -> "MultiEncoded":
        """Rows by global index (kept in task order: `index` ascending)."""
        parts = {}
        for name, enc in self.parts.items():
            start = self.offsets[name]
            mine = [i - start for i in index if start <= i < start + len(enc)]
            parts[name] = enc.subset(mine)
        return MultiEncoded(parts, None, self.num_labels)


def sampling_weights(sizes: dict[str, int], sampling) -> dict[str, float]:
    """Each task's share of the batches of an epoch."""
    if sampling == "proportional":
        raw = {k: float(n) for k, n in sizes.items()}
    elif sampling == "uniform":
        raw = {k: 1.0 for k in sizes}
    else:
        raw = {k: float(n) ** (1.0 / sampling.temperature) for k, n in sizes.items()}
    total = sum(raw.values())
    return {k: v / total for k, v in raw.items()}


def epoch_batches(enc: MultiEncoded, batch_size: int, seed: int, epoch: int, sampling, group: bool = True) -> list[list[int]]:
    """One epoch's batches, each from one task, as many as the tasks' batches together.

    proportional: every task's batches once, shuffled together (each row once per epoch).
    uniform / temperature: the task of each batch is drawn with those probabilities; a task
    whose batches run out starts another shuffled pass over its rows. Depends only on (seed,
    epoch): a resumed run rebuilds the same epoch.
    """
    from weitiao.data.batching import length_grouped_batches

    def passes(k: int, name: str):
        sub, start, n = enc.parts[name], enc.offsets[name], 0
        while True:
            for b in length_grouped_batches(sub.lengths, batch_size, seed * 7919 + k, epoch * 1000 + n, group=group):
                yield [start + i for i in b]
            n += 1

    names = list(enc.parts)
    counts = {name: -(-len(enc.parts[name]) // batch_size) for name in names}
    total = sum(counts.values())
    rng = random.Random(seed * 1_000_003 + epoch + 17)
    if sampling == "proportional":
        order = [name for name in names for _ in range(counts[name])]
        rng.shuffle(order)
    else:
        weights = sampling_weights({n: len(enc.parts[n]) for n in names}, sampling)
        order = rng.choices(names, [weights[n] for n in names], k=total)
    streams = {name: passes(k, name) for k, name in enumerate(names)}
    return [next(streams[name]) for name in order]


class MultiTask(TaskDefaults):
    """Several tasks on one encoder."""

    name = "multitask"
    Options = Options
    data_keys = frozenset()  # each task's data section holds its keys
    own_data = True  # reads its tasks' data itself (`load_data`): no data.train at the top
    peft_task_type = "FEATURE_EXTRACTION"
    reads_one_position = False
    takes_images = False
    feature_cache = False
    too_long = "cut to data.max_length ({n} tokens) or windowed, as each task does"
    too_long_fix = "raise data.max_length"
    too_long_note = "{k} of {n} inputs were longer than data.max_length ({m} tokens)"

    def member_options(self, kind: str) -> type:
        """The section of one task inside a multi-task run (its options, weight and data)."""
        return MEMBERS[kind]

    def _each(self, opts):
        return [(name, get_task(m.type), m) for name, m in opts.tasks.items()]

    def describe(self, opts) -> str:
        return "multi-task (" + ", ".join(f"{n}: {t.describe(m)}" for n, t, m in self._each(opts)) + ")"

    def metric_names(self, opts) -> tuple[str, ...]:
        return ("mean", "loss") + tuple(f"{n}/{k}" for n, t, m in self._each(opts) for k in t.metric_names(m) if k != "loss")

    def default_metric(self, opts) -> str:
        return "mean"

    def headline(self, metrics: dict) -> dict:
        return {k: v for k, v in metrics.items() if (k in ("mean", "loss") or "/" in k) and isinstance(v, (int, float))}

    def summary(self, metrics: dict) -> str:
        parts = [f"mean={metrics['mean']:.4f}"] if metrics.get("mean") is not None else []
        return ", ".join(parts + [f"{n}: {metrics[n]['summary']}" for n in metrics.get("tasks", [])])

    def load_data(self, data, opts, seed: int):
        """Each task's data, read, cleaned and split by its own reader (weitiao.data.load_data)."""
        from weitiao.data import DataBundle, load_data

        bundles = {}
        for name, t, m in self._each(opts):
            try:
                bundles[name] = load_data(m.data, seed=seed, reader=t.reader(m.data, m))
            except UserError as e:
                raise UserError(f"task.tasks.{name}.{e.field}", e.problem, e.fix) from None
        labels = LabelSet(flat_names({n: b.labels.names for n, b in bundles.items()}))
        tests = {n: b.test for n, b in bundles.items() if b.test is not None}
        return DataBundle(MultiExamples({n: b.train for n, b in bundles.items()}),
                          MultiExamples({n: b.validation for n, b in bundles.items()}),
                          MultiExamples(tests) if tests else None, labels, {n: b.report for n, b in bundles.items()})

    def reader(self, data, opts):
        return MultiReader(opts)

    def processor(self, model_path: str, model_name: str | None = None, max_length: int | None = None):
        # The strictest of the text tasks' tokenizers (a fast one: token classification maps words to pieces).
        return get_task("token_classification").processor(model_path, model_name, max_length)

    def encode(self, tokenizer, examples, max_length: int, opts, names: list[str]) -> MultiEncoded:
        """Each task's examples with its own encoder; plain inputs (a `predict --file`) go to every task."""
        if isinstance(examples, Examples):
            texts = [t if isinstance(t, str) else " ".join(t) for t in examples.text]
            examples = self.examples_from_texts(texts, tokenizer, opts)
        parts = {}
        for name, t, m in self._each(opts):
            if name in examples.parts:
                parts[name] = t.encode(tokenizer, examples.parts[name], m.data.max_length, m, names_of(names, name))
        return MultiEncoded(parts, examples, {name: len(names_of(names, name)) for name in parts})

    def build(self, model_path, label_names, opts, dropout=None, attention=None, pad_token_id=None):
        """Each task's model from the pretrained folder, sharing one encoder. From a multi-task run's model
        (training on from it): its encoder, and the head of each task of the same name, type and labels."""
        import tempfile

        from weitiao.models.multitask import MultiTaskModel, is_multitask_folder

        with tempfile.TemporaryDirectory(prefix="weitiao-encoder-") as tmp:
            earlier = None
            if is_multitask_folder(model_path):
                earlier = MultiTaskModel.from_pretrained(model_path)
                earlier.encoder.save_pretrained(tmp)  # a plain base model: each task's head model loads it
                model_path = tmp
            models, new = {}, {}
            for name, t, m in self._each(opts):
                models[name], new[name] = t.build(model_path, names_of(label_names, name), m, dropout, attention, pad_token_id)
        model = MultiTaskModel.sharing(models, {name: m.type for name, _, m in self._each(opts)}, label_names)
        if earlier is not None:
            kept = model.keep_heads(earlier)
            new = {name: set() if name in kept else names for name, names in new.items()}
        return model, model.renamed(new)

    def train_batches(self, encoded: MultiEncoded, batch_size: int, seed: int, epoch: int, opts, group: bool = True) -> list[list[int]]:
        return epoch_batches(encoded, batch_size, seed, epoch, opts.sampling, group)

    def collate(self, encoded: MultiEncoded, index: list[int], pad_id: int, num_labels: int, opts, multiple: int = 1) -> dict:
        name, local = encoded.locate(index)
        member = opts.tasks[name]
        sub = get_task(member.type).collate(encoded.parts[name], local, pad_id, encoded.num_labels[name], member, multiple)
        return {**sub, "task": name}

    def loss(self, logits: Tagged, labels, opts, label_smoothing: float = 0.0):
        member = opts.tasks[logits.task]
        total, n = get_task(member.type).loss(logits.logits, labels, member, label_smoothing)
        return total * member.weight, n

    def count_targets(self, batch: dict) -> int:
        """As the batch's task counts: labelled tokens (integer tags per token, -100 where none), else rows."""
        labels = batch["labels"]
        if labels.dim() == 2 and not labels.is_floating_point():
            return int((labels != -100).sum())
        return len(labels)

    def outputs(self, logits: Tagged, encoded: MultiEncoded, index: list[int], opts) -> list:
        name, local = encoded.locate(index)
        member = opts.tasks[name]
        return get_task(member.type).outputs(logits.logits, encoded.parts[name], local, member)

    def metrics(self, outputs: list, encoded: MultiEncoded, label_names: list[str], opts) -> dict:
        out: dict = {"tasks": []}
        mains = []
        for name, t, m in self._each(opts):
            if name not in encoded.parts:
                continue
            own = t.metrics(encoded.slice(outputs, name), encoded.parts[name], names_of(label_names, name), m)
            own["summary"] = t.summary(own)
            out[name] = own
            out["tasks"].append(name)
            for k, v in t.headline(own).items():
                out[f"{name}/{k}"] = v
            mains.append(own[t.default_metric(m)])
        out["mean"] = sum(mains) / len(mains) if mains else None
        out["n"] = sum(out[n].get("n", 0) for n in out["tasks"])
        return out

    def decode(self, outputs: list, encoded: MultiEncoded, examples: MultiExamples, label_names: list[str], opts) -> list[dict]:
        """One object per input: its text and each task's prediction under the task's name."""
        examples = examples if isinstance(examples, MultiExamples) else encoded.inputs
        rows: list[dict] | None = None
        for name, t, m in self._each(opts):
            own = t.decode(encoded.slice(outputs, name), encoded.parts[name], examples.parts[name], names_of(label_names, name), m)
            if rows is None:
                rows = [{"text": r["text"]} for r in own]
            for row, r in zip(rows, own):
                row[name] = {k: v for k, v in r.items() if k != "text"}
        return rows or []

    def csv_columns(self, rows: list[dict]):
        import json

        names = [k for k in (rows[0] if rows else {}) if k != "text"]
        return ["text"] + names, lambda r: [r["text"]] + [json.dumps(r[n], ensure_ascii=False) for n in names]

    def examples_from_texts(self, texts: list[str], tokenizer, opts) -> MultiExamples:
        return MultiExamples({name: t.examples_from_texts(texts, tokenizer, m) for name, t, m in self._each(opts)})

    def load(self, model_dir):
        from weitiao.models.multitask import MultiTaskModel

        return MultiTaskModel.from_pretrained(model_dir)


@dataclass
class MultiReader:
    """`weitiao predict --file`: the inputs of a file, read as the first task reads its data; every task sees them."""

    opts: Options
    restrict_labels: bool = False
    stratify_name: str = "task"

    def read(self, path: str, field: str, labels):
        raise UserError(field, "a multi-task run is scored on each task's own data", "run `weitiao eval RUN` without --data: every task's validation data")

    def read_inputs(self, path: str, field: str) -> Examples:
        member = next(iter(self.opts.tasks.values()))
        return get_task(member.type).reader(member.data, member).read_inputs(path, field)

    def check_labels(self, labels, field, path) -> None:
        pass

    def stratify_key(self, ex, names):
        return None


TASK = register_task(MultiTask())
