"""Property tests over everything a user hands in: data files, configs, --set overrides.

The contract: whatever the bytes, the reader, the data stage and the config loader return a
result or raise a `UserError` whose message is one line naming the field (and the file); no
other exception escapes, and `weitiao train` on bad data writes no run folder.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from weitiao.cli import main
from weitiao.config import DataConfig, RunConfig, load_config
from weitiao.data import DataBundle, load_data
from weitiao.data.sources import Table, read_table
from weitiao.errors import UserError

FORMATS = {"csv": ".csv", "tsv": ".tsv", "jsonl": ".jsonl", "json": ".json", "parquet": ".parquet"}
TEXT_FORMATS = ["csv", "tsv", "jsonl", "json"]
FIELD = "data.train"

# database=None: no failing examples saved between runs, so every run draws afresh (and the same way in CI).
quick = settings(max_examples=200, deadline=None, database=None)


@contextmanager
def scratch():
    """A fresh folder per example (pytest's tmp_path is one folder for all examples)."""
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def outcome(label: str) -> None:
    """Count how examples end (shown by --hypothesis-show-statistics), inside a property test."""
    if currently_in_test_context():
        event(label)


def check_refusal(err: UserError, field: str, *names: str) -> None:
    """A UserError fit for the CLI: one line, naming the field and (when given) the file."""
    line = err.line()
    assert line.splitlines() == [line], f"not one line: {line!r}"
    assert str(err) == line
    assert err.field == field, line
    for name in names:
        assert name in err.problem, line


# ---------------------------------------------------------------------------------------
# Writing tables in each format

# Odd but valid code points: RTL and LTR marks, right-to-left override, combining accent,
# emoji with a zero-width joiner, line and paragraph separators, a BOM in mid-text, NEL,
# vertical tab, form feed, NUL, CR and CRLF.
ODD = ["\u200f", "\u200e", "\u202e", "e\u0301", "\U0001f600", "\U0001f469\u200d\U0001f467", "\u2028", "\u2029",
       "\ufeff", "\x85", "\x0b", "\x0c", "\x00", "\r", "\r\n", "\t", ",", '"', "'", "\\", " ", "漢字", "ß"]
odd_text = st.lists(st.one_of(st.sampled_from(ODD), st.text(max_size=4)), max_size=6).map("".join)


def cell(value) -> str:
    return "" if value is None else str(value)


def table_bytes(fmt: str, rows: list[dict], line_end: str = "\n") -> bytes:
    """`rows` written as a file of format `fmt`, as a careful writer of that format would."""
    columns = list(dict.fromkeys(k for r in rows for k in r)) or ["text", "label"]
    if fmt == "csv":
        out = io.StringIO()
        # Python's writer quotes only the characters of its own line end: quote all for a "\n" or "\r" file
        writer = csv.writer(out, lineterminator=line_end, quoting=csv.QUOTE_MINIMAL if line_end == "\r\n" else csv.QUOTE_ALL)
        writer.writerow(columns)
        writer.writerows([cell(r.get(c)) for c in columns] for r in rows)
        return out.getvalue().encode("utf-8")
    if fmt == "tsv":  # no quoting in TSV: a tab or line break inside a cell breaks the row, as it would
        lines = ["\t".join(columns)] + ["\t".join(cell(r.get(c)) for c in columns) for r in rows]
        return (line_end.join(lines) + line_end).encode("utf-8")
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + line_end for r in rows).encode("utf-8")
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=1).replace("\n", line_end).encode("utf-8")
    return parquet_bytes(rows)


def parquet_bytes(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):  # mixed types, big ints: store them as text
        table = pa.Table.from_pylist([{k: None if v is None else str(v) for k, v in r.items()} for r in rows])
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def read(path: Path) -> Table | None:
    """read_table, or None after checking that the refusal is a proper UserError."""
    try:
        table = read_table(str(path), FIELD, expect=("text", "label"))
    except UserError as err:
        check_refusal(err, FIELD, path.name)
        outcome("refused")
        return None
    outcome("read")
    assert isinstance(table, Table) and table.rows
    assert len(table.lines) == len(table.rows)
    return table


# ---------------------------------------------------------------------------------------
# 1. Readers


@quick
@given(fmt=st.sampled_from(list(FORMATS)), content=st.binary(max_size=2000))
def test_random_bytes_are_read_or_refused(fmt, content):
    with scratch() as tmp:
        path = tmp / f"d{FORMATS[fmt]}"
        path.write_bytes(content)
        read(path)


# Text made mostly of each format's own punctuation, so the parsers get past the first byte.
syntax_text = st.lists(st.sampled_from(list(',\t"\n\r {}[]:0123-.eEtruefalsn\\') + ["text", "label", "\u2028", "é"]), max_size=100).map("".join)


@quick
@given(fmt=st.sampled_from(TEXT_FORMATS), text=st.one_of(st.text(max_size=300), syntax_text))
def test_random_text_is_read_or_refused(fmt, text):
    with scratch() as tmp:
        path = tmp / f"d{FORMATS[fmt]}"
        path.write_text(text, encoding="utf-8", newline="")
        read(path)


rows_of_text = st.lists(st.fixed_dictionaries({"text": odd_text, "label": st.sampled_from(["pos", "neg", "1", "0"])}), min_size=1, max_size=8)


@quick
@given(fmt=st.sampled_from(list(FORMATS)), rows=rows_of_text, data=st.data())
def test_truncated_files_are_read_or_refused(fmt, rows, data):
    whole = table_bytes(fmt, rows)
    cut = data.draw(st.integers(0, len(whole) - 1), label="cut")
    with scratch() as tmp:
        path = tmp / f"d{FORMATS[fmt]}"
        path.write_bytes(whole[:cut])
        table = read(path)
    if table is not None and fmt in ("jsonl", "json", "parquet"):
        assert table.rows == rows[: len(table.rows)]  # whole records only, never a cut one


latin_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), min_size=1, max_size=20)


@quick
@given(fmt=st.sampled_from(TEXT_FORMATS), rows=st.lists(st.fixed_dictionaries({"text": latin_text, "label": st.just("pos")}), min_size=1, max_size=5),
       encoding=st.sampled_from(["latin-1", "cp1252", "utf-16", "utf-16-le", "utf-32"]))
def test_other_encodings_are_refused_by_name(fmt, rows, encoding):
    content = table_bytes(fmt, rows).decode("utf-8").encode(encoding, errors="replace")
    with scratch() as tmp:
        path = tmp / f"d{FORMATS[fmt]}"
        path.write_bytes(content)
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            with pytest.raises(UserError) as info:
                read_table(str(path), FIELD)
            check_refusal(info.value, FIELD, path.name, "not valid UTF-8")
        else:  # plain ASCII in a one-byte code page, or UTF-16 without a byte-order mark: bytes that happen to be UTF-8
            read(path)


@quick
@given(fmt=st.sampled_from(list(FORMATS)), rows=rows_of_text, line_end=st.sampled_from(["\n", "\r\n", "\r"]))
def test_unicode_edge_cases_survive_a_round_trip(fmt, rows, line_end):
    """Written by a proper writer, odd code points come back unchanged (TSV has no quoting: no promise)."""
    with scratch() as tmp:
        path = tmp / f"d{FORMATS[fmt]}"
        path.write_bytes(table_bytes(fmt, rows, line_end))
        table = read(path)
    if fmt == "jsonl" and line_end == "\r":
        # JSON Lines split at "\n" only (U+2028 may sit in a string), so a file with CR line
        # ends is one long line: refused, or read when it holds one record.
        assert table is None or table.rows == rows == rows[:1]
    elif fmt != "tsv":
        assert table is not None
        assert table.rows == rows


@settings(max_examples=5, deadline=None, database=None)
@given(fmt=st.sampled_from(list(FORMATS)), size=st.integers(1_000_000, 5_000_000), chunk=st.text(alphabet="ab é漢\U0001f600", min_size=1, max_size=8))
def test_huge_field_is_read_whole(fmt, size, chunk):
    big = (chunk * (size // len(chunk) + 1))[:size]
    rows = [{"text": "short", "label": "pos"}, {"text": big, "label": "neg"}]
    with scratch() as tmp:
        path = tmp / f"d{FORMATS[fmt]}"
        path.write_bytes(table_bytes(fmt, rows))
        table = read(path)
    assert table is not None and table.rows == rows


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
@pytest.mark.parametrize("content", [
    "[" * 100_000 + "]" * 100_000,  # nesting past Python's recursion limit
    '[{"text": "a", "label": ' + "9" * 5000 + "}]",  # an integer past Python's 4300-digit limit
    '[{"text": "a", "label": ' + "[" * 900 + "]" * 900 + '}, {"text": "b", "label": "x"}]',  # deep but parseable
])
def test_json_past_python_limits_is_refused(tmp_path, fmt, content):
    """json.loads raises RecursionError and ValueError besides JSONDecodeError; deep labels must not crash later."""
    path = tmp_path / f"d{FORMATS[fmt]}"
    path.write_text(content if fmt == "json" else content[1:-1].replace("}, {", "}\n{"), encoding="utf-8")
    assert stage(DataConfig(train=str(path)), False, 0) is None


@settings(max_examples=5, deadline=None, database=None)
@given(marker=st.sampled_from(["dataset_info.json", "state.json"]), content=st.binary(max_size=200))
def test_folder_posing_as_a_saved_dataset_is_refused(marker, content):
    with scratch() as tmp:
        (tmp / "ds").mkdir()
        (tmp / "ds" / marker).write_bytes(content)
        with pytest.raises(UserError) as info:
            read_table(str(tmp / "ds"), FIELD)
    check_refusal(info.value, FIELD, "ds")


# ---------------------------------------------------------------------------------------
# 2. The data stage: read, labels, clean, split

scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.floats(), st.text(max_size=6),
                   st.sampled_from(["pos", "neg", "1", "2", " 0 ", "a,b", "1,2", "", "  ", "１", "²", "007"]))
plain_labels = st.one_of(
    st.lists(st.integers(0, 3), min_size=8, max_size=16),  # ids
    st.lists(st.sampled_from(["pos", "neg", "neu"]), min_size=8, max_size=16),  # names
    st.lists(st.sampled_from(["pos", "neg", "pos,neg", "neu, pos", "neg|neu", ""]), min_size=8, max_size=16),  # multi-label cells
)
messy_labels = st.one_of(
    # ids, or what could pass for them: digit strings, whole floats, tweet ids, "²" (a digit to str.isdigit)
    st.lists(st.sampled_from([0, 1, 2, "0", "1", " 2 ", "007", 1.0, 2.0, -1, "²", "１", 10**12, "123456789012", 1e300]), min_size=1, max_size=12),
    st.lists(scalar, min_size=1, max_size=12),  # anything, mixed
    st.lists(st.one_of(scalar, st.lists(scalar, max_size=3)), min_size=1, max_size=12),  # nested lists (JSON only)
)
words = st.sampled_from(["good", "bad", " good", "fine", "good\tfilm", "bad film"])
plain_texts = st.one_of(words, st.text(alphabet="abcdef ", min_size=1, max_size=8), st.just(""), st.text(alphabet=" \t\n\u3000\xa0", max_size=3), odd_text)
messy_texts = st.one_of(plain_texts, st.none(), st.integers(), st.floats(), st.lists(st.integers(), max_size=2))


@st.composite
def datasets(draw) -> list[dict]:
    """Rows of text and label: half of them plain (strings, one kind of label), half anything."""
    messy = draw(st.booleans())
    labels = draw(messy_labels if messy else plain_labels)
    return [{"text": draw(messy_texts if messy else plain_texts), "label": label} for label in labels]


def check_bundle(bundle: DataBundle, multi_label: bool, drop_duplicates: bool) -> None:
    assert isinstance(bundle, DataBundle)
    for split in ("train", "validation", "test"):
        counts = bundle.report.get(split)
        if counts:
            assert counts["rows"] == counts["kept"] + counts["empty_dropped"] + counts["duplicates_dropped"], counts
            assert drop_duplicates or counts["duplicates_dropped"] == 0
    if "split" in bundle.report:
        s = bundle.report["split"]
        assert s["train"] + s["validation"] + s["test"] == bundle.report["train"]["kept"]
    assert len(bundle.train) >= 1 and len(bundle.validation) >= 1
    assert multi_label or len(bundle.labels) >= 2
    for ex in (bundle.train, bundle.validation, bundle.test):
        if ex is None:
            continue
        assert all(t and t == t.strip() for t in ex.text), ex.text
        assert len(ex.labels) == len(ex.text) == len(ex.lines)
        for label in ex.labels:
            ids = label if multi_label else [label]
            assert all(isinstance(i, int) and 0 <= i < len(bundle.labels) for i in ids), (label, bundle.labels.names)
            assert not multi_label or label == sorted(set(label))


def stage(data: DataConfig, multi_label: bool, seed: int) -> DataBundle | None:
    """load_data, or None after checking that the refusal is a proper UserError."""
    try:
        bundle = load_data(data, multi_label, seed)
    except UserError as err:
        check_refusal(err, err.field)
        assert err.field.startswith("data."), err.line()
        outcome(f"refused: {err.field}")
        return None
    outcome("loaded")
    check_bundle(bundle, multi_label, data.drop_duplicates)
    return bundle


@settings(max_examples=300, deadline=None, database=None)
@given(fmt=st.sampled_from(list(FORMATS)), train=datasets(), validation=st.one_of(st.none(), datasets()),
       multi_label=st.booleans(), options=st.fixed_dictionaries({
           "drop_duplicates": st.booleans(), "drop_leakage": st.booleans(),
           "train_limit": st.one_of(st.none(), st.integers(1, 6)),
           "labels": st.sampled_from([None, None, None, ["neg", "pos"], ["neg", "neu", "pos"], ["0", "1"], ["pos"], ["pos", "pos"]]),
           "label_separator": st.sampled_from([",", "|", " "]),
       }), seed=st.integers(0, 2**32 - 1))
def test_load_data_returns_consistent_counts_or_refuses(fmt, train, validation, multi_label, options, seed):
    with scratch() as tmp:
        section = {"train": str(tmp / f"train{FORMATS[fmt]}"), **options}
        Path(section["train"]).write_bytes(table_bytes(fmt, train))
        if validation is not None:
            section["validation"] = str(tmp / f"dev{FORMATS[fmt]}")
            Path(section["validation"]).write_bytes(table_bytes(fmt, validation))
        bundle = stage(DataConfig.model_validate(section), multi_label, seed)
    if bundle is not None and fmt in ("jsonl", "json", "parquet"):
        assert bundle.report["train"]["rows"] == len(train)  # these formats skip nothing on reading


@pytest.mark.parametrize("labels", [
    ["123456789012", "1"],  # tweet ids, read as class ids
    [1e300, 0],
    ["9" * 5000, "1"],
    ["²", "1"],  # a digit to str.isdigit, not to int()
])
def test_label_ids_that_are_not_class_ids_are_refused(tmp_path, labels):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": x}) + "\n" for i, x in enumerate(labels * 3)), encoding="utf-8")
    try:
        bundle = load_data(DataConfig(train=str(path)), False, 0)
    except UserError as err:
        check_refusal(err, "data.train", "d.jsonl")
    else:
        check_bundle(bundle, False, True)
        assert len(bundle.labels) <= 100_000


# ---------------------------------------------------------------------------------------
# 3. The config loader


def key_paths(model: type[BaseModel] = RunConfig, prefix: tuple = ()) -> list[tuple[str, ...]]:
    """Every key the schema knows, sections and their keys: ("data",), ("data", "train"), ..."""
    paths = []
    for name, info in model.model_fields.items():
        paths.append(prefix + (name,))
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            paths += key_paths(info.annotation, prefix + (name,))
    return paths


KEY_PATHS = key_paths()
BASE = {"version": 1, "data": {"train": "train.csv"}}
json_values = st.recursive(st.none() | st.booleans() | st.integers(-(10**40), 10**40) | st.floats() | st.text(max_size=20)
                           | st.sampled_from(["a\nb", "\u2028", "x" * 300]),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=6)
# Values YAML reads (or nearly: a month 13, a 5000-digit number, 1000 open brackets), then any text.
plain_scalars = st.one_of(
    st.sampled_from(["1", "-1", "0", "1e-4", "3e5", "true", "no", "null", "~", "[a, b]", "{a: 1}", "2024-13-01", "2024-02-30", "2024-01-01",
                     "0x1F", ".nan", "-.inf", "1:30", "0o17", "9" * 5000, "[" * 1000, "x" * 300, "&a [1]", "!!binary x", '"a\\nb"']),
    st.text(alphabet="abc-_ ", min_size=1, max_size=8),
)
yaml_scalars = st.one_of(
    plain_scalars,
    st.sampled_from(["[", "{", "*a", "!!python/object:os.system", "|", ">", "'x", '"x', "@", "`", "%", "\t", "\\n"]),
    st.text(max_size=10),
)


def config_file(folder: Path, text: str) -> Path:
    path = folder / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path, overrides: list[str] = ()) -> RunConfig | None:
    try:
        cfg = load_config(path, list(overrides))
    except UserError as err:
        check_refusal(err, err.field)
        return None
    assert isinstance(cfg, RunConfig)
    return cfg


@st.composite
def yaml_sections(draw) -> str:
    """Mostly well-formed YAML: sections of `key: value` lines with known and unknown keys, odd values."""
    sections = [p[0] for p in KEY_PATHS if len(p) == 1]
    lines = []
    name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=6)
    for section in draw(st.lists(st.sampled_from(sections) | name, max_size=4, unique=True)):
        if draw(st.booleans()):
            lines.append(f"{section}: {draw(plain_scalars)}")
            continue
        lines.append(f"{section}:")
        keys = [p[1] for p in KEY_PATHS if len(p) == 2 and p[0] == section] or ["x"]
        for key in draw(st.lists(st.sampled_from(keys) | name, max_size=4, unique=True)):
            lines.append(f"  {key}: {draw(plain_scalars)}")
    return "\n".join(lines)


@quick
@given(text=st.one_of(st.text(max_size=200), yaml_sections(), st.lists(st.tuples(
    st.integers(0, 4).map(" ".__mul__), st.sampled_from([p[-1] for p in KEY_PATHS]) | st.text(max_size=5),
    st.sampled_from([": ", ":", " : ", ": - ", "- "]), yaml_scalars), max_size=8).map(lambda lines: "\n".join("".join(t) for t in lines))))
def test_random_yaml_is_loaded_or_refused(text):
    with scratch() as tmp:
        load(config_file(tmp, text))


def put(raw: dict, path: tuple[str, ...], value) -> dict:
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return raw


def scalar_keys(model: type[BaseModel] = RunConfig, prefix: tuple = ()) -> dict[tuple[str, ...], str]:
    """Every key whose value is one scalar (None aside) -> how a wrong value there is refused: "expected a number",
    "expected a whole number", "expected true or false", "expected a string", or "is not allowed" (a fixed set)."""
    import types
    import typing

    words = {int: "expected a whole number", float: "expected a number", bool: "expected true or false", str: "expected a string"}
    out = {}
    for name, info in model.model_fields.items():
        annotation, path = info.annotation, prefix + (name,)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out |= scalar_keys(annotation, path)
            continue
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = options[0] if len(options) == 1 else None
        if typing.get_origin(annotation) is typing.Literal:
            out[path] = "is not allowed"
        elif annotation in words:
            out[path] = words[annotation]
    return out


SCALAR_KEYS = scalar_keys()


@quick
@given(path=st.sampled_from(KEY_PATHS), value=json_values)
def test_wrong_type_at_a_known_key_is_refused_there(path, value):
    """Any value at any key: read, or refused naming that key. A list or a mapping where the schema wants one
    scalar is always refused, at exactly that key, saying what it wanted."""
    raw = put(json.loads(json.dumps(BASE)), path, value)
    wrong = path in SCALAR_KEYS and isinstance(value, (list, dict))
    outcome("wrong type" if wrong else "any value")
    with scratch() as tmp:
        try:
            load_config(config_file(tmp, yaml.safe_dump(raw, allow_unicode=True)))
        except UserError as err:
            check_refusal(err, err.field)
            where = ".".join(path)
            assert err.field == where or err.field.startswith(where + ".") or where.startswith(err.field + "."), (err.line(), where)
            if wrong:
                assert err.field == where and SCALAR_KEYS[path] in err.problem, (err.line(), where)
        else:
            assert not wrong, f"{'.'.join(path)}: {value!r} was accepted"


def test_a_mapping_or_list_at_a_scalar_key_is_refused_with_what_it_wants(tmp_path):
    assert len(SCALAR_KEYS) > 50 and ("training", "lr") in SCALAR_KEYS
    for path, wanted in SCALAR_KEYS.items():
        for value in ({"a": 1}, [1, 2]):
            try:
                load_config(config_file(tmp_path, yaml.safe_dump(put(json.loads(json.dumps(BASE)), path, value))))
            except UserError as caught:
                err = caught
            else:
                raise AssertionError(f"{'.'.join(path)}: {value!r} was accepted")
            check_refusal(err, ".".join(path))
            assert err.problem == (f"{value!r} {wanted}" if wanted == "is not allowed" else f"{wanted}, got {value!r}"), err.line()


overrides = st.one_of(
    st.text(max_size=30),
    st.builds("{}={}".format, st.sampled_from([".".join(p) for p in KEY_PATHS]) | st.text(max_size=12), yaml_scalars),
)


@quick
@given(items=st.lists(overrides, max_size=4))
def test_random_overrides_are_applied_or_refused(items):
    with scratch() as tmp:
        load(config_file(tmp, yaml.safe_dump(BASE)), items)


@settings(max_examples=150, deadline=None, database=None)
@given(section=st.fixed_dictionaries({}, optional={  # mostly values the schema takes, so that the data stage runs
    "label_separator": st.sampled_from(["", ",", " ", "|", ", "]) | st.text(max_size=2), "text_column": st.sampled_from(["text", "label"]),
    "header": st.one_of(st.none(), st.booleans()), "columns": st.sampled_from([["text", "label"], ["label", "text"], ["text"]]),
    "labels": st.sampled_from([["neg", "pos"], ["pos", "neg,neu"], ["neg", "neu", "pos"], ["a"], []]),
    "max_length": st.integers(0, 10_000), "train_limit": st.integers(0, 20), "format": st.sampled_from(["auto", "csv", "tsv", "xml"]),
    "split": st.sampled_from([{"train": 0.5, "validation": 0.25, "test": 0.25}, {"train": 0.9, "validation": 0.1, "test": 0},
                              {"train": 0.98, "validation": 0.01, "test": 0.01}, {"train": 0.5, "validation": 0.1, "test": 0.1}]),
}), seed=st.one_of(st.integers(0, 2**32 - 1), st.integers(-(2**40), 2**40)), multi_label=st.booleans())
def test_a_config_that_validates_never_crashes_the_data_stage(section, seed, multi_label):
    """Values the schema lets through must be values the data stage can take."""
    with scratch() as tmp:
        data = tmp / "train.csv"
        labels = ["pos", '"neg,neu"'] * 6  # the second: two labels to a multi-label reader
        data.write_text("text,label\n" + "".join(f"text {i},{label}\n" for i, label in enumerate(labels)), encoding="utf-8")
        raw = {"version": 1, "data": {"train": str(data), **section}, "task": {"multi_label": multi_label}, "training": {"seed": seed}}
        cfg = load(config_file(tmp, yaml.safe_dump(raw, allow_unicode=True)))
        if cfg is None:
            outcome("config refused")
            return
        try:
            bundle = load_data(cfg.data, cfg.task.multi_label, cfg.training.seed)
        except UserError as err:
            check_refusal(err, err.field)
            # 12 distinct texts, two classes: the default split works, unless the seed is one it cannot
            # take (or the texts are read from the label column, leaving 2 distinct rows)
            assert err.field != "data.split" or {"split", "text_column", "columns"} & section.keys(), err.line()
            outcome("data refused")
            return
    outcome("loaded")
    check_bundle(bundle, multi_label, cfg.data.drop_duplicates)


@pytest.mark.parametrize("override, field", [
    ("training.seed=-1", "training.seed"),  # scikit-learn's split takes seeds 0 .. 2**32 - 1 only
    (f"training.seed={2**32}", "training.seed"),
    ("data.label_separator=''", "data.label_separator"),  # str.split("") raises
])
def test_values_the_data_stage_cannot_take_are_refused_by_the_config(tmp_path, override, field):
    with pytest.raises(UserError) as info:
        load_config(config_file(tmp_path, yaml.safe_dump(BASE)), [override, "task.multi_label=true"])
    check_refusal(info.value, field)


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    # Nine levels of ten aliases: 10^9 strings if anything expands the structure (repr, copy).
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "run.yaml"
    path.write_text("\n".join(lines) + "\ndata:\n  train: t.csv\n  columns: *a8\n", encoding="utf-8")
    with pytest.raises(UserError) as info:
        load_config(path)
    check_refusal(info.value, info.value.field)


# ---------------------------------------------------------------------------------------
# 4. The CLI: bad data gives exit code 2, one `error: data.` line and no run folder


@settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(list(FORMATS)), content=st.one_of(st.binary(max_size=300), datasets()))
def test_cli_refuses_bad_data_in_one_line_and_writes_nothing(capsys, fmt, content):
    capsys.readouterr()  # the fixture is shared by all examples: start from empty
    with scratch() as tmp:
        path = tmp / f"train{FORMATS[fmt]}"
        path.write_bytes(content if isinstance(content, bytes) else table_bytes(fmt, content))
        # One label in data.labels can never make a classifier, so the data stage always refuses;
        # the missing model would be refused next, so an `error: model:` line means the order broke.
        cfg = {"version": 1, "model": str(tmp / "no-such-model"), "data": {"train": str(path), "labels": ["only"]},
               "training": {"device": "cpu", "epochs": 1}}
        config = config_file(tmp, yaml.safe_dump(cfg))
        code = main(["train", str(config), "--name", "p", "--set", f"output.dir={tmp}/runs"])
        captured = capsys.readouterr()
        assert not (tmp / "runs" / "p").exists()
        assert not (tmp / "runs").exists()
    lines = captured.err.splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: data."), captured.err
    assert "Traceback" not in captured.err + captured.out
