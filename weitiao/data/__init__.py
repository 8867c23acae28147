"""Data: read the configured files, settle the label set, clean, check leakage and split."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

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


def label_set(data, train_table: Table, multi_label: bool) -> LabelSet:
    if data.labels:
        return _given_labels(data.labels, "data.labels")
    if data.labels_file:
        p = Path(data.labels_file)
        if not p.is_file():
            raise UserError("data.labels_file", f"file '{p}' does not exist", "give a text file with one label name per line")
        text = read_utf8(p, "data.labels_file")
        return _given_labels([line.strip() for line in text.splitlines() if line.strip()], "data.labels_file")
    cells = [r.get(data.label_column) for r in train_table.rows]
    return LabelSet.from_cells(cells, data.label_separator if multi_label else None, "data.train", train_table)


def _given_labels(names: list[str], field: str) -> LabelSet:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(field, f"label {twice[0]!r} is listed more than once", "list each label once, in id order")
    return LabelSet(names)


def load_data(data, multi_label: bool, seed: int) -> DataBundle:
    """Read, clean, check leakage and split as the `data` section says.

    Raises:
        UserError: for any problem with the files, columns or labels; nothing is written.
    """
    train, table = read_examples(data.train, "data.train", data, None, multi_label)
    labels = label_set(data, table, multi_label)
    train.labels = labels.encode([r.get(data.label_column) for r in table.rows], data.label_separator if multi_label else None, "data.train", table)

    report: dict = {}
    train, report["train"] = clean_split(train, data.drop_duplicates)
    if len(train) == 0:  # before the split, which would only say that 0 rows are too few
        raise UserError("data.train", f"no training rows left after cleaning '{data.train}' ({report['train']})", "check that the text column holds text")
    if not (data.labels or data.labels_file):  # the classes are the labels of the rows that are kept
        labels, train.labels, unused = labels.restricted(train.labels)
        if unused:
            report["labels_only_on_dropped_rows"] = unused
    report = {"labels": len(labels), **report}
    if len(labels) < 2 and not multi_label:
        raise UserError("data.label_column", f"'{data.label_column}' in '{data.train}' has only {len(labels)} distinct label(s)", "a classifier needs at least 2 labels")
    validation = test = None
    if data.validation:
        validation, _ = read_examples(data.validation, "data.validation", data, labels, multi_label)
        validation, report["validation"] = clean_split(validation, drop_duplicates=False)
    if data.test:
        test, _ = read_examples(data.test, "data.test", data, labels, multi_label)
        test, report["test"] = clean_split(test, drop_duplicates=False)
    if validation is None:
        s = data.split
        train, validation, split_test, stratified_by = split_examples(train, s.train, s.validation, s.test if test is None else 0.0, seed)
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
