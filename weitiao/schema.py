"""The base of every config section and the `data:` section (kept apart from config.py so that
task modules, which declare their own `task:` section, can import them without importing the
whole schema: a multi-task run's tasks each have a `data:` section)."""

import typing
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def _kinds(annotation) -> set:
    """The plain types an annotation admits (Optional, unions, Annotated, Literal and containers unwrapped one level)."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return {type(v) for v in typing.get_args(annotation)}
    if origin is typing.Annotated:
        return _kinds(typing.get_args(annotation)[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return set().union(*(_kinds(a) for a in typing.get_args(annotation)))
    return {origin or annotation}


class Section(BaseModel):
    """Base for every section: unknown keys are refused, assignments are validated, floats are finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)  # no float field takes inf or NaN

    @model_validator(mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, values):
        """pydantic takes `true` as 1 and 1 as true: `batch_size: true` would train with batches of one."""
        for name, value in values.items() if isinstance(values, dict) else ():
            field = cls.model_fields.get(name)
            kinds = _kinds(field.annotation) if field is not None else set()
            if isinstance(value, bool) and bool not in kinds and kinds & {int, float}:
                raise ValueError(f"{name}: {str(value).lower()} is true/false, not a number")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and bool in kinds and not kinds & {int, float, str}:
                raise ValueError(f"{name}: {value} is a number, not true or false")
        return values


class SplitConfig(Section):
    """Ratios for a stratified, seeded split when no validation file is given."""

    train: float = Field(0.8, gt=0, lt=1)
    validation: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self):
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must add up to 1, got {total:g}")
        return self


class DataConfig(Section):
    train: str | None = None  # required, except for a multi-task run (each task names its own)
    validation: str | None = None
    test: str | None = None
    # the file's format; or what its records are, for a causal LM (alpaca, chat, text: read from json/jsonl/csv/parquet/txt)
    format: Literal["auto", "csv", "tsv", "jsonl", "json", "parquet", "hf", "conll", "alpaca", "chat", "text"] = "auto"
    header: bool | None = None  # None: detect (a first row naming the configured columns)
    columns: list[str] | None = None  # names for the columns of a file without a header
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    labels: list[str] | None = None  # the label set, in id order; default: from the training data
    labels_file: str | None = None  # the same, one name per line
    label_separator: str = Field(",", min_length=1)  # multi-label: several labels in one cell
    tokens_column: str = "tokens"  # token classification: a list of words per row
    tags_column: str = "tags"  # token classification: a list of tags per row, one per word
    image_column: str = "image"  # image classification from a table: image paths (relative to the table's folder)
    source_column: str = "source"  # seq2seq: the input text
    target_column: str = "target"  # seq2seq: the text to produce
    max_length: int = Field(128, ge=8, le=8192)
    train_limit: int | None = Field(None, ge=1)  # seeded random subset of the training rows
    split: SplitConfig = SplitConfig()
    drop_duplicates: bool = True
    drop_leakage: bool = False  # drop training rows whose text is also in evaluation data
