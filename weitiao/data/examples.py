"""Turn a read `Table` into labelled examples: texts, optional text pairs and label ids."""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import field as dc_field

from weitiao.data.sources import Table, shown_names
from weitiao.errors import UserError


@dataclass
class Examples:
    """One split. `text` holds one input per example (a string; a tuple of words for token tasks);
    `labels` ids (single-label), lists of ids (multi-label; a tag id per word), or None; `meta`
    what a task keeps beside an input (the raw text a tuple of words came from, with spans)."""

    text: list
    pair: list[str] | None
    labels: list | None
    lines: list[int]
    source: str
    dropped: dict[str, int] = dc_field(default_factory=dict)
    meta: list | None = None

    def __len__(self) -> int:
        return len(self.text)

    def subset(self, index: list[int]) -> "Examples":
        pick = lambda xs: None if xs is None else [xs[i] for i in index]  # noqa: E731
        return Examples(pick(self.text), pick(self.pair), pick(self.labels), pick(self.lines), self.source, dict(self.dropped), pick(self.meta))


def take_columns(table: Table, field: str, text_column: str, pair_column: str | None,
                 label_column: str | None) -> tuple[list[str], list[str] | None, list | None]:
    """Pick the configured columns, with an error that lists the columns that do exist."""
    if label_column is not None and label_column in (text_column, pair_column):
        raise UserError("data.label_column", f"'{label_column}' is also the text column: the model would read its answer",
                        "name the column that holds the labels")
    for key, name in (("text_column", text_column), ("text_pair_column", pair_column), ("label_column", label_column)):
        if name is not None and name not in table.columns:
            first = ", ".join(repr(v) for v in table.rows[0].values()) if table.rows else ""
            hint = "" if table.has_header else f" (no header row naming them was found; the first row is {first}: name the columns with data.columns)"
            raise UserError(f"data.{key}", f"column '{name}' not in {field} '{table.path}'; its columns are {shown_names(table.columns)}{hint}",
                            f"set data.{key} to one of them")
    text = [_as_text(r.get(text_column), table, i, field, text_column) for i, r in enumerate(table.rows)]
    pair = [_as_text(r.get(pair_column), table, i, field, pair_column) for i, r in enumerate(table.rows)] if pair_column else None
    raw = [r.get(label_column) for r in table.rows] if label_column else None
    return text, pair, raw


def _as_text(value, table: Table, i: int, field: str, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise UserError(field, f"'{table.path}' line {table.lines[i]}: column '{column}' holds a {type(value).__name__}, not text", "give plain text in that column")
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate from a JSON escape ("\udcff"): no tokenizer reads it
        raise UserError(field, f"'{table.path}' line {table.lines[i]}: column '{column}' holds {text[e.start]!r}, which is not valid Unicode",
                        "fix or drop that row") from None
    return text


MAX_LABELS = 100_000  # more distinct labels than this are record ids or timestamps, not classes


class LabelSet:
    """Label names in id order, and the rule that turns cells (ids or names) into ids.

    A column is read as ids when every cell is an integer (or a string of digits), as names
    when none is; a mix of both is refused, since "1" next to "positive" is ambiguous.
    """

    def __init__(self, names: list[str]):
        self.names = [str(n) for n in names]
        self.index = {n: i for i, n in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_cells(cls, cells: list, separator: str | None, field: str, table: Table) -> "LabelSet":
        """The labels that occur in `cells`, sorted: numerically for ids, alphabetically for names.

        Ids are labels like any other: ratings 1..5 are five classes, never range(max + 1).
        """
        parts = [p for c in cells for p in split_cell(c, separator)]
        kind = cell_kind(parts, cells, separator, field, table)
        names = [str(i) for i in sorted({_id(p) for p in parts})] if kind == "id" else sorted({str(p).strip() for p in parts})
        if len(names) > MAX_LABELS:
            raise UserError(field, f"label column in '{table.path}' holds {len(names)} distinct labels, more than {MAX_LABELS}",
                            "point data.label_column at the labels (not at a record id), or list the labels in data.labels")
        return cls(names)

    def restricted(self, labels: list) -> tuple["LabelSet", list, list[str]]:
        """Only the labels that `labels` (ids, or lists of ids) use, renumbered in the same order.

        Returns:
            (the smaller set, `labels` in its ids, the names that were left out).
        """
        used = sorted({i for x in labels for i in (x if isinstance(x, list) else [x])})
        if len(used) == len(self.names):
            return self, labels, []
        new = {old: k for k, old in enumerate(used)}
        remapped = [[new[i] for i in x] if isinstance(x, list) else new[x] for x in labels]
        return LabelSet([self.names[i] for i in used]), remapped, [n for i, n in enumerate(self.names) if i not in new]

    def encode(self, cells: list, separator: str | None, field: str, table: Table) -> list:
        """Cells -> ids (single-label) or lists of ids (multi-label, `separator` set)."""
        parts = [p for c in cells for p in split_cell(c, separator)]
        kind = cell_kind(parts, cells, separator, field, table)
        all_ids = kind == "id"
        if kind == "id" and self.names and all(_is_id(n) for n in self.names):
            kind = "name"  # labels named "1".."5" (star ratings): the cell "5" is the label "5", not id 5
        out = []
        for i, cell in enumerate(cells):
            ids = []
            for p in split_cell(cell, separator):
                key = _id(p) if kind == "id" else _as_name(p, numeric=all_ids)
                ok = (0 <= key < len(self.names)) if kind == "id" else key in self.index
                if not ok:
                    shown = self.names if len(self.names) <= 30 else self.names[:30] + ["..."]
                    raise UserError(field, f"'{table.path}' line {table.lines[i]}: unknown label {p!r}; the labels are {shown}",
                                    "fix the label, or list every label in data.labels")
                ids.append(key if kind == "id" else self.index[key])
            if separator is None:
                if not ids:
                    raise UserError(field, f"'{table.path}' line {table.lines[i]} has no label", "give every row a label, or drop the row")
                if len(ids) > 1:
                    raise UserError(field, f"'{table.path}' line {table.lines[i]} has {len(ids)} labels {cell!r}",
                                    "set task.multi_label: true, or give one label per row")
                out.append(ids[0])
            else:
                out.append(sorted(set(ids)))
        return out


def split_cell(cell, separator: str | None) -> list:
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        return []
    if isinstance(cell, (list, tuple)):
        return list(cell)
    if separator is not None and isinstance(cell, str):
        return [p.strip() for p in cell.split(separator) if p.strip()]
    return [cell]


def _refuse_odd_cells(cells: list, separator: str | None, field: str, table: Table) -> None:
    """A label is a name or an integer id: an object, a nested list, null or NaN in a list is none
    (JSON `{"a": 1}` would otherwise become the class name "{'a': 1}")."""
    for i, cell in enumerate(cells):
        for p in split_cell(cell, separator):
            if p is None or isinstance(p, (dict, list, tuple)) or (isinstance(p, float) and not (math.isfinite(p) and p.is_integer())):
                what = ("null" if p is None else "a fraction" if isinstance(p, float) and math.isfinite(p) else "NaN or infinity" if isinstance(p, float)
                        else f"a JSON {'object' if isinstance(p, dict) else 'array'}")
                raise UserError(field, f"'{table.path}' line {table.lines[i]} has the label {cell!r}: {what} is not a label",
                                "give each label as a name or an integer id (a list of them for multi-label)")


def _as_name(p, numeric: bool = False) -> str:
    """A cell as a label name; `numeric`: every cell is an id, so "05" and 5.0 are the label "5"."""
    if numeric:
        return str(_id(p))
    return str(int(p)) if isinstance(p, float) and p.is_integer() else str(p).strip()


def _is_id(p) -> bool:
    if isinstance(p, bool):
        return False
    if isinstance(p, int):
        return True
    if isinstance(p, float):
        return p.is_integer()
    # ASCII only: "²" and "①" are digits to str.isdigit but not numbers to int()
    return isinstance(p, str) and p.strip().isascii() and p.strip().isdigit()


def _id(p) -> int:
    """An id cell as an int; a digit string past int()'s 4300-digit limit is no class id either."""
    if isinstance(p, str) and len(p.strip()) > 4300:
        return MAX_LABELS
    return int(p)


def cell_kind(parts: list, cells: list, separator: str | None, field: str, table: Table) -> str:
    _refuse_odd_cells(cells, separator, field, table)
    ids = [_is_id(p) for p in parts]
    if all(ids):
        return "id"
    if not any(ids):
        return "name"
    first_id = next(p for p, k in zip(parts, ids) if k)
    first_name = next(p for p, k in zip(parts, ids) if not k)
    several = separator is None and "," in str(first_name)  # GoEmotions "3,5" without multi_label
    raise UserError(field, f"label column in '{table.path}' mixes ids ({first_id!r}) and names ({first_name!r})",
                    "several labels per row? set task.multi_label: true" if several else "use either label ids everywhere or label names everywhere")
