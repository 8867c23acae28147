"""Data: read the configured files, settle the label set, clean, check leakage and split.

What the rows of a file mean belongs to the task: it hands `load_data` a `Reader`. The
default reads a text column (and a pair) with a label column (`ColumnReader`); a token
classifier reads lists of words and tags. Cleaning, duplicates, leakage, the split and the
report are the same for every task.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from weitiao.data.clean import clean_split, find_leakage
from weitiao.data.examples import Examples, LabelSet, take_columns
from weitiao.data.sources import Table, read_table, read_utf8
from weitiao.data.split import split_examples
from weitiao.errors import UserError


@dataclass
class DataBundle:
    train: Examples
    validation: Examples
    test: Examples | None
    labels: LabelSet
    report: dict = field(default_factory=dict)


class Reader(Protocol):
    """How a task turns data files into `Examples`."""

    restrict_labels: bool  # settle the labels as those the kept training rows use (a fixed tag set: False)
    stratify_name: str  # what the split stratifies by, for the report ("label", "entity types", ...)

    def read(self, path: str, field: str, labels: LabelSet | None) -> tuple[Examples, LabelSet]:
        """Read one file; `labels` None (the training file): settle the label set from it (or the config)."""

    def read_inputs(self, path: str, field: str) -> Examples:
        """Read one file of inputs to predict (no labels needed)."""

    def check_labels(self, labels: LabelSet, field: str, path: str) -> None:
        """Refuse a label set the task cannot learn from (one class; no entities)."""

    def stratify_key(self, ex: Examples, names: list[str]) -> list | None:
        """One key (an int) per example to stratify the split by, or None; `names`: the label set."""


@dataclass
class ColumnReader:
    """A text column (and a pair) with a label column (one label per row, or several with `multi_label`)."""

    data: object  # the `data` config section
    multi_label: bool = False
    restrict_labels: bool = True

    @property
    def stratify_name(self) -> str:
        return "label set" if self.multi_label else "label"

    def read(self, path: str, field: str, labels: LabelSet | None) -> tuple[Examples, LabelSet]:
        ex, table = read_examples(path, field, self.data, labels, self.multi_label)
        if labels is None:
            labels = label_set(self.data, table, self.multi_label)
            ex.labels = labels.encode([r.get(self.data.label_column) for r in table.rows], self.data.label_separator if self.multi_label else None, field, table)
        return ex, labels

    def read_inputs(self, path: str, field: str) -> Examples:
        return read_examples(path, field, replace_section(self.data, label_column=None), None, self.multi_label)[0]

    def check_labels(self, labels: LabelSet, field: str, path: str) -> None:
        if len(labels) < 2 and not self.multi_label:
            raise UserError("data.label_column", f"'{self.data.label_column}' in '{path}' has only {len(labels)} distinct label(s)", "a classifier needs at least 2 labels")

    def stratify_key(self, ex: Examples, names: list[str]) -> list | None:
        from weitiao.data.split import stratify_key

        return stratify_key(ex.labels)


def replace_section(section, **values):
    """A copy of a config section with some values changed (validation skipped: None is allowed here)."""
    return section.model_copy(update=values)


def read_examples(path: str, field_name: str, data, labels: LabelSet | None, multi_label: bool) -> tuple[Examples, Table]:
    """Read one file into Examples; with `labels` given, its cells are checked against them.

    `data` is the validated `data` config section (plain attributes only are read).
    """
    expect = tuple(c for c in (data.text_column, data.label_column, data.text_pair_column) if c)
    table = read_table(path, field_name, data.format, data.header, data.columns, expect)
    text, pair, raw = take_columns(table, field_name, data.text_column, data.text_pair_column, data.label_column)
    sep = data.label_separator if multi_label else None
    ids = labels.encode(raw, sep, field_name, table) if labels is not None else None
    return Examples(text, pair, ids, table.lines, table.path), table


def configured_labels(data) -> tuple[str, LabelSet] | None:
    """The label set the config names, in id order (data.labels, or data.labels_file: one name per
    line), with the key that named it; None when the data is to settle it."""
    if data.labels:
        return "data.labels", _given_labels(data.labels, "data.labels")
    if data.labels_file:
        p = Path(data.labels_file)
        if not p.is_file():
            raise UserError("data.labels_file", f"file '{p}' does not exist", "give a text file with one label name per line")
        text = read_utf8(p, "data.labels_file")
        return "data.labels_file", _given_labels([line.strip() for line in text.splitlines() if line.strip()], "data.labels_file")
    return None


def label_set(data, train_table: Table, multi_label: bool) -> LabelSet:
    given = configured_labels(data)
    if given:
        return given[1]
    cells = [r.get(data.label_column) for r in train_table.rows]
    return LabelSet.from_cells(cells, data.label_separator if multi_label else None, "data.train", train_table)


def _given_labels(names: list[str], field: str) -> LabelSet:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(field, f"label {twice[0]!r} is listed more than once", "list each label once, in id order")
    return LabelSet(names)


def load_task_data(task, data, opts, seed: int) -> DataBundle:
    """A task's data as its config says: read by the task itself where it reads its own (multi-task),
    else by `load_data` with the task's reader."""
    own = task.load_data
    return own(data, opts, seed) if own else load_data(data, seed=seed, reader=task.reader(data, opts))


def load_data(data, multi_label: bool = False, seed: int = 0, reader: Reader | None = None) -> DataBundle:
    """Read, clean, check leakage and split as the `data` section says.

    Args:
        reader: how rows become examples (the task's); default: text and label columns.

    Raises:
        UserError: for any problem with the files, columns or labels; nothing is written.
    """
    reader = reader or ColumnReader(data, multi_label)
    train, labels = reader.read(data.train, "data.train", None)

    report: dict = {}
    train, report["train"] = clean_split(train, data.drop_duplicates)
    if len(train) == 0:  # before the split, which would only say that 0 rows are too few
        raise UserError("data.train", f"no training rows left after cleaning '{data.train}' ({report['train']})", "check that the text column holds text")
    if reader.restrict_labels and not (data.labels or data.labels_file):  # the classes are the labels of the rows that are kept
        labels, train.labels, unused = labels.restricted(train.labels)
        if unused:
            report["labels_only_on_dropped_rows"] = unused
    report = {"labels": len(labels), **report}
    reader.check_labels(labels, "data.train", data.train)
    validation = test = None
    if data.validation:
        validation, _ = reader.read(data.validation, "data.validation", labels)
        validation, report["validation"] = clean_split(validation, drop_duplicates=False)
    if data.test:
        test, _ = reader.read(data.test, "data.test", labels)
        test, report["test"] = clean_split(test, drop_duplicates=False)
    if validation is None:
        s = data.split
        train, validation, split_test, stratified_by = split_examples(train, s.train, s.validation, s.test if test is None else 0.0, seed,
                                                                      reader.stratify_key(train, labels.names), reader.stratify_name)
        test = test if test is not None else split_test
        report["split"] = {"train": len(train), "validation": len(validation), "test": len(test) if test else 0, "seed": seed,
                           "stratified_by": stratified_by}

    leaked = find_leakage(train, [x for x in (validation, test) if x is not None])
    report["leakage"] = {"train_rows_in_eval": len(leaked), "dropped": bool(data.drop_leakage and leaked)}
    if data.drop_leakage and leaked:
        gone = set(leaked)
        train = train.subset([i for i in range(len(train)) if i not in gone])

    if data.train_limit and data.train_limit < len(train):
        index = sorted(random.Random(seed).sample(range(len(train)), data.train_limit))
        train = train.subset(index)
        report["train_limit"] = data.train_limit
    if len(train) == 0:
        raise UserError("data.drop_leakage", f"all {len(leaked)} training rows also appear in the evaluation data",
                        "give training and evaluation data that differ, or set data.drop_leakage: false")
    if len(validation) == 0:
        raise UserError("data.validation", "no validation rows left after cleaning", "give a validation file with non-empty texts")
    return DataBundle(train, validation, test, labels, report)
