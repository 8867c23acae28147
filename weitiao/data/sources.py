"""Read labelled rows from CSV, TSV, JSONL, a JSON array, Parquet or a saved HF dataset folder
(the text formats also gzip-compressed: `train.csv.gz`).

Every reader returns a `Table`: the column names, the rows as dicts and, for each row, the
line (or record number) it came from, so that later errors can point at it.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from weitiao.errors import UserError

EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
FORMATS = sorted(set(EXTENSIONS.values()) | {"hf"})
csv.field_size_limit(sys.maxsize)


@dataclass
class Table:
    columns: list[str]
    rows: list[dict]
    lines: list[int]  # 1-based line (text formats) or record number of each row
    path: str
    has_header: bool = True
    class_names: dict[str, list[str]] | None = None  # a saved dataset's ClassLabel names, per column (ids -> names)


def detect_format(path: Path, field: str) -> str:
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file():
            return "hf"
        raise UserError(field, f"'{path}' is a folder but not a saved Hugging Face dataset", "give a file, or a folder written by Dataset.save_to_disk")
    suffix = path.suffix.lower()
    if suffix == ".gz":  # train.csv.gz: the format of what is inside
        suffix = path.with_suffix("").suffix.lower()
    fmt = EXTENSIONS.get(suffix) if suffix != ".parquet" or path.suffix.lower() != ".gz" else None
    if fmt is None:
        raise UserError(field, f"cannot tell the format of '{path.name}' from its extension", f"rename it or set data.format to one of {FORMATS}")
    return fmt


def read_table(path: str, field: str, fmt: str = "auto", header: bool | None = None,
               columns: list[str] | None = None, expect: tuple[str, ...] = ()) -> Table:
    """Read one data file.

    Args:
        path: the file (or dataset folder) to read.
        field: the config key naming it, used in error messages (``data.train``).
        fmt: one of FORMATS or "auto" (from the extension).
        header: CSV/TSV only: True, False, or None to detect it (a first row that names
            one of `expect`, when no `columns` are given).
        columns: names for the columns of a headerless CSV/TSV.
        expect: the column names the config will ask for (for header detection).

    Raises:
        UserError: a missing file, bad encoding or a malformed row, naming the line.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(field, f"file '{path}' does not exist", "check the path (relative paths start from the current directory)")
    fmt = detect_format(p, field) if fmt == "auto" else fmt
    if fmt in ("alpaca", "chat", "text"):
        raise UserError("data.format", f"'{fmt}' names the records of a causal language model, which this task does not read",
                        "set task: causal_lm, or data.format to the file's format (csv, tsv, jsonl, json, parquet)")
    if fmt == "conll":
        raise UserError("data.format", f"'conll' files hold words and tags ('{path}'), which only token classification reads",
                        "set task: token_classification, or give a csv, tsv, jsonl, json or parquet file")
    if fmt == "hf":
        table = _read_hf(p, field)
    elif fmt == "parquet":
        table = _read_parquet(p, field)
    else:
        text = read_utf8(p, field)
        if fmt in ("csv", "tsv"):
            table = _read_delimited(text, str(p), field, "\t" if fmt == "tsv" else ",", header, columns, expect)
        elif fmt == "jsonl":
            table = _read_jsonl(text, str(p), field)
        else:
            table = _read_json(text, str(p), field)
    if not table.rows:
        raise UserError(field, f"'{path}' has no data rows", "give a file with at least one row of data")
    return table


def read_utf8(p: Path, field: str) -> str:
    data = p.read_bytes()
    if p.suffix.lower() == ".gz":
        import gzip
        import zlib

        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(field, f"'{p}' is not a readable gzip file ({e})", "re-compress it with gzip, or give the file uncompressed") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(field, f"'{p}' is not valid UTF-8 (line {line}, byte {e.start})", "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def _read_delimited(text: str, path: str, field: str, sep: str, header: bool | None,
                    columns: list[str] | None, expect: tuple[str, ...]) -> Table:
    # TSV is read without quoting, so bare quotes inside sentences stay (as in GLUE files); cells
    # a CSV writer quoted whole are unquoted below. CSV has standard quoting.
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    # Lines end at \n or \r only (not at U+2028 and the like, as str.splitlines would), and a
    # quoted CSV field keeps its newlines.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, quoting=quoting, strict=True)
    records, lines, start = [], [], 1  # start: the line where the next record begins
    try:
        for row in reader:
            if row and any(cell.strip() for cell in row):
                records.append(row)
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as e:
        raise UserError(field, f"'{path}' line {start} is malformed ({e})", "fix the quoting on that line") from None
    if not records:
        raise UserError(field, f"'{path}' is empty", "give a file with a header row and data rows")
    if sep == "\t":
        records = [[_unquote(c) for c in row] for row in records]
    if header is None:
        header = columns is None and any(c.strip() in expect for c in records[0])
    if header:
        names, records, lines = [c.strip() for c in records[0]], records[1:], lines[1:]
    else:
        names = list(columns) if columns else [str(i) for i in range(len(records[0]))]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # dict(zip(...)) would keep the last of them silently
        source = "header" if header else "data.columns"
        raise UserError(field, f"'{path}' names column '{twice[0]}' twice in its {source}", "give every column its own name")
    rows = []
    for row, line in zip(records, lines):
        if len(row) != len(names):
            raise UserError(field, f"'{path}' line {line} has {len(row)} fields, expected {len(names)} ({shown_names(names)})",
                            "fix that row (a stray separator or quote?)")
        rows.append(dict(zip(names, row)))
    return Table(names, rows, lines, path, has_header=header)


def _unquote(cell: str) -> str:
    """Undo a CSV writer's quoting of a whole TSV cell (GoEmotions: "say ""hi"" now"); bare quotes stay."""
    inner = cell[1:-1]
    if len(cell) >= 2 and cell[0] == cell[-1] == '"' and '"' not in inner.replace('""', ""):
        return inner.replace('""', '"')
    return cell


def _read_jsonl(text: str, path: str, field: str) -> Table:
    rows, lines = [], []
    for n, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 may sit inside a JSON string
        if not line.strip():
            continue
        try:
            row = _loads(line)
        except json.JSONDecodeError as e:
            raise UserError(field, f"'{path}' line {n} is not valid JSON ({e.msg})", "each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise UserError(field, f"'{path}' line {n} is a {type(row).__name__}, not an object", "each line must be one JSON object")
        rows.append(row)
        lines.append(n)
    return Table(_columns(rows), rows, lines, path)


def _read_json(text: str, path: str, field: str) -> Table:
    try:
        data = _loads(text)
    except json.JSONDecodeError as e:
        raise UserError(field, f"'{path}' line {e.lineno} is not valid JSON ({e.msg})", "fix the JSON there") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(field, f"'{path}' is not a JSON array of objects", "write [{\"text\": ..., \"label\": ...}, ...] or use JSONL")
    return Table(_columns(data), data, list(range(1, len(data) + 1)), path)


def _loads(text: str):
    """json.loads, failing only with JSONDecodeError, also where json.loads would not: an
    integer past int()'s 4300-digit limit, or brackets nested past the recursion limit."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:
        match = re.search(r"\d{4301}", text)
        raise json.JSONDecodeError("a number with more than 4300 digits", text, match.start() if match else 0) from None
    except RecursionError:
        raise json.JSONDecodeError("arrays or objects nested too deeply", text, 0) from None


def _read_parquet(p: Path, field: str) -> Table:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(p).to_pylist()
    except Exception as e:
        raise UserError(field, f"'{p}' is not a readable Parquet file ({type(e).__name__}: {e})", "re-write it with pandas.DataFrame.to_parquet") from None
    return Table(_columns(rows), rows, list(range(1, len(rows) + 1)), str(p))


def _read_hf(p: Path, field: str) -> Table:
    from datasets import Dataset, load_from_disk

    try:
        ds = load_from_disk(str(p))
    except Exception as e:
        raise UserError(field, f"'{p}' could not be loaded as a saved dataset ({type(e).__name__})", "write it with Dataset.save_to_disk") from None
    if not isinstance(ds, Dataset):
        raise UserError(field, f"'{p}' holds several splits {list(ds)}", f"point at one split folder, e.g. '{p}/{next(iter(ds))}'")
    rows = ds.to_list()
    return Table(list(ds.column_names), rows, list(range(1, len(rows) + 1)), str(p), class_names=_class_names(ds.features))


def _class_names(features) -> dict[str, list[str]]:
    """Columns stored as ClassLabel ids (or lists of them, as NER tags are), with their names."""
    out = {}
    for column, feature in features.items():
        inner = getattr(feature, "feature", feature)  # Sequence(ClassLabel) / List(ClassLabel)
        if getattr(inner, "names", None):
            out[column] = list(inner.names)
    return out


def shown_names(names: list[str]) -> str:
    """Column names for an error line; a name holding a line break or other control character is shown as its repr."""
    return ", ".join(n if n.isprintable() else repr(n) for n in map(str, names))


def _columns(rows: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows[:1000]:
        seen.update(dict.fromkeys(row))
    return list(seen)
