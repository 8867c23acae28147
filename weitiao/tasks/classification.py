"""Sequence classification, single-label (softmax + cross-entropy) and multi-label (sigmoid + BCE).

The `Classification` task at the end is what the registry holds; the functions above it are
its parts (and what tests and benchmarks call directly). torch loads inside them: this module
is imported by the config schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from weitiao.data.examples import Examples
from weitiao.models.heads import DROPOUT_KEYS, load_saved, with_head  # noqa: F401 (part of this module's API)
from weitiao.schema import Section
from weitiao.tasks import TaskDefaults, register_task
from weitiao.tasks.common.labels import Labelled, label_tensor, loss_fn, probabilities  # noqa: F401 (part of this module's API)
from weitiao.tasks.common.rows import TokenRows
from weitiao.tasks.common.text import ensure_pad_token, load_tokenizer, pad_rows  # noqa: F401 (part of this module's API)

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Encoded(TokenRows):
    """Token ids of one split, unpadded; padding happens per batch in `collate`."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list | None
    truncated: int = 0  # texts longer than max_length, cut to it

    @property
    def examples(self) -> int:
        """Examples encoded (one row each)."""
        return len(self.input_ids)

    def subset(self, index: list[int]) -> "Encoded":
        pick = lambda xs: None if xs is None else [xs[i] for i in index]  # noqa: E731
        return Encoded(pick(self.input_ids), pick(self.token_type_ids), pick(self.labels))


def build_model(path: str, label_names: list[str], multi_label: bool, dropout: dict | None = None,
                attention: str | None = None, pad_token_id: int | None = None):
    """A pretrained encoder with a fresh classification head, labels named in its config.

    Returns:
        (model, names of the newly initialised parameters: the head). See `text.with_head`.
    """
    from transformers import AutoModelForSequenceClassification

    return with_head(AutoModelForSequenceClassification, path, label_names, dropout, attention, pad_token_id,
                     problem_type="multi_label_classification" if multi_label else "single_label_classification")


def encode(tokenizer, ex: Examples, max_length: int) -> Encoded:
    """Tokenize a whole split once (the fast tokenizer batches internally), counting the texts
    that were longer than `max_length` and cut (only texts that reach it are tokenized again)."""
    enc = tokenizer(ex.text, ex.pair, truncation=True, max_length=max_length, padding=False)
    types = enc.get("token_type_ids") if ex.pair is not None else None
    full = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) >= max_length]
    truncated = 0
    if full:
        pick = lambda xs: None if xs is None else [xs[i] for i in full]  # noqa: E731
        whole = tokenizer(pick(ex.text), pick(ex.pair), truncation=False, padding=False)["input_ids"]
        truncated = sum(len(ids) > max_length for ids in whole)
    return Encoded(enc["input_ids"], types, ex.labels, truncated)


def collate(data: Encoded, index: list[int], pad_id: int, num_labels: int, multi_label: bool, multiple: int = 1) -> dict:
    """Pad the chosen examples to the longest among them (rounded up to `multiple`).

    Returns:
        input_ids, attention_mask (and token_type_ids): [batch, longest]; labels: [batch]
        (long) or [batch, num_labels] (float 0/1 for multi-label).
    """
    ids, mask = pad_rows(data.input_ids, index, pad_id, multiple)
    batch = {"input_ids": ids, "attention_mask": mask}
    if data.token_type_ids is not None:
        batch["token_type_ids"] = pad_rows(data.token_type_ids, index, 0, multiple)[0]
    if data.labels is not None:
        batch["labels"] = label_tensor([data.labels[i] for i in index], num_labels, multi_label)
    return batch


def predict_probs(model, data: Encoded, pad_id: int, num_labels: int, multi_label: bool,
                  batch_size: int, device, forward=None) -> tuple["np.ndarray", float | None]:
    """Probabilities for every example, in input order ([n, num_labels]), and the mean loss when labels exist."""
    import numpy as np

    from weitiao.tasks.common.scoring import score

    scored = score(model, TASK, data, pad_id, num_labels, Options(multi_label=multi_label), batch_size, device, forward)
    probs = np.stack(scored.outputs) if scored.outputs else np.zeros((0, num_labels), dtype=np.float32)
    return probs, (scored.loss if data.labels is not None and len(data) else None)


def build_model_from_run(model_dir) -> object:
    """The trained classifier saved in a run folder (see `text.load_saved`)."""
    from transformers import AutoModelForSequenceClassification

    return load_saved(AutoModelForSequenceClassification, model_dir)


class Options(Section):
    """The `task:` section of a classifier."""

    type: Literal["classification"] = "classification"
    multi_label: bool = False
    threshold: Annotated[float, Field(gt=0, lt=1)] | Literal["auto"] = "auto"  # multi-label decision threshold on sigmoid; auto: the best validation micro-F1's, saved with the model
    bias_init: Literal["prior", "zero"] = "prior"  # multi-label: the new head's biases start at each label's log-odds in the training data (zero: the library's init)


class Classification(Labelled, TaskDefaults):
    """One label (softmax) or several (sigmoid) per text or text pair."""

    name = "classification"
    pipeline_tag = "text-classification"
    distillable = distill_unlabelled = True
    report_section = "labels"
    Options = Options
    data_keys = frozenset({"text_column", "text_pair_column", "label_column", "label_separator"})
    peft_task_type = "SEQ_CLS"
    feature_cache = True  # a frozen bottom's output per token can be cached
    reads_one_position = True  # BERT-style heads read the first token; the cache and pruning check the model too
    takes_images = False

    def describe(self, opts) -> str:
        return "multi-label classification" if opts.multi_label else "classification"

    too_long = "cut to data.max_length ({n} tokens)"
    too_long_note = "{k} of {n} texts were longer than data.max_length ({m} tokens) and were cut to it"
    too_long_fix = "raise data.max_length to keep more of them"

    def reader(self, data, opts):
        from weitiao.data import ColumnReader

        return ColumnReader(data, opts.multi_label)

    def processor(self, model_path: str, model_name: str | None = None, max_length: int | None = None):
        return load_tokenizer(model_path, model_name, max_length)

    def encode(self, tokenizer, examples: Examples, max_length: int, opts, names: list[str]) -> Encoded:
        return encode(tokenizer, examples, max_length)

    def build(self, model_path, label_names, opts, dropout=None, attention=None, pad_token_id=None):
        return build_model(model_path, label_names, opts.multi_label, dropout, attention, pad_token_id)

    def collate(self, encoded: Encoded, index: list[int], pad_id: int, num_labels: int, opts, multiple: int = 1) -> dict:
        return collate(encoded, index, pad_id, num_labels, opts.multi_label, multiple)

    def examples_from_texts(self, texts: list[str], tokenizer, opts) -> Examples:
        return Examples([t.strip() for t in texts], None, None, list(range(1, len(texts) + 1)), "--text")

    def load(self, model_dir):
        return build_model_from_run(model_dir)


TASK = register_task(Classification())
