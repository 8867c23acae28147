"""Readers: every format gives the same rows, and every malformed file names the line at fault."""

import json
from pathlib import Path

import pytest
from helpers import write_file as write

from weitiao.data.examples import take_columns
from weitiao.data.sources import read_table
from weitiao.errors import UserError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ROWS = [{"text": "good film", "label": "pos"}, {"text": "bad, slow film", "label": "neg"}]


def refusal(*args, **kwargs) -> UserError:
    with pytest.raises(UserError) as info:
        read_table(*args, **kwargs)
    return info.value


def test_csv_with_quoting(tmp_path):
    path = write(tmp_path / "d.csv", 'text,label\n"hello, world",pos\n"she said ""hi""",neg\n"two\nlines",pos\nplain,neg\n')
    table = read_table(path, "data.train", expect=("text", "label"))
    assert table.columns == ["text", "label"] and table.has_header
    assert [r["text"] for r in table.rows] == ["hello, world", 'she said "hi"', "two\nlines", "plain"]
    assert [r["label"] for r in table.rows] == ["pos", "neg", "pos", "neg"]
    assert table.lines == [2, 3, 4, 6]  # a record spanning two lines is named by its first


def test_csv_with_windows_line_ends_and_a_byte_order_mark(tmp_path):
    path = write(tmp_path / "d.csv", "\ufefftext,label\r\ngood,pos\r\nbad,neg\r\n")
    table = read_table(path, "data.train", expect=("text", "label"))
    assert table.rows == [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]


def test_tsv_with_header_and_bare_quotes(tmp_path):
    # SST-2 style: no quoting at all, so a lone " is part of the sentence.
    path = write(tmp_path / "d.tsv", 'sentence\tlabel\nit \'s a " great film \t1\n" bad\t0\n')
    table = read_table(path, "data.train", expect=("sentence", "label"))
    assert table.columns == ["sentence", "label"] and table.has_header
    assert table.rows == [{"sentence": 'it \'s a " great film ', "label": "1"}, {"sentence": '" bad', "label": "0"}]
    assert table.lines == [2, 3]


def test_tsv_cell_quoted_whole_by_a_csv_writer_is_unquoted(tmp_path):
    # GoEmotions style: a text holding quotes was written by a CSV writer with a tab separator.
    path = write(tmp_path / "d.tsv", '"He said ""stop"" twice"\t3\n"""Quote"" first"\t1,2\n"a" and "b"\t0\n')
    table = read_table(path, "data.train", columns=["text", "labels"])
    assert [r["text"] for r in table.rows] == ['He said "stop" twice', '"Quote" first', '"a" and "b"']


def test_tsv_without_header_takes_names_from_data_columns(tmp_path):
    path = write(tmp_path / "d.tsv", 'a "quoted text\t3,5\tid1\nplain\t27\tid2\n')
    table = read_table(path, "data.train", columns=["text", "labels", "comment_id"], expect=("text", "labels"))
    assert not table.has_header
    assert table.rows == [{"text": 'a "quoted text', "labels": "3,5", "comment_id": "id1"},
                          {"text": "plain", "labels": "27", "comment_id": "id2"}]
    assert table.lines == [1, 2]


def test_headerless_file_without_names_gets_numbered_columns(tmp_path):
    path = write(tmp_path / "d.tsv", "good\t1\nbad\t0\n")
    table = read_table(path, "data.train", expect=("text", "label"))
    assert table.columns == ["0", "1"] and not table.has_header
    assert len(table.rows) == 2


def test_jsonl_skips_blank_lines_and_keeps_line_numbers(tmp_path):
    path = write(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in ROWS[:1]) + "\n" + json.dumps(ROWS[1]) + "\n")
    table = read_table(path, "data.train")
    assert table.rows == ROWS
    assert table.lines == [1, 3]


def test_line_separator_inside_a_text_does_not_split_the_row(tmp_path):
    text = "one\u2028two\x0cthree"  # U+2028 and form feed: str.splitlines would break here
    jsonl = write(tmp_path / "d.jsonl", json.dumps({"text": text, "label": "pos"}, ensure_ascii=False) + "\n")
    csv = write(tmp_path / "d.csv", f"text,label\n{text},pos\n")
    assert read_table(jsonl, "data.train").rows == [{"text": text, "label": "pos"}]
    assert read_table(csv, "data.train", expect=("text",)).rows == [{"text": text, "label": "pos"}]


def test_json_array(tmp_path):
    path = write(tmp_path / "d.json", json.dumps(ROWS, indent=1))
    table = read_table(path, "data.train")
    assert table.columns == ["text", "label"]
    assert table.rows == ROWS
    assert table.lines == [1, 2]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": "good film", "label": 1}, {"text": "bad film", "label": 0}]), path)
    table = read_table(str(path), "data.train")
    assert table.columns == ["text", "label"]
    assert table.rows == [{"text": "good film", "label": 1}, {"text": "bad film", "label": 0}]


def test_saved_hf_dataset_folder(tmp_path):
    from datasets import Dataset

    folder = tmp_path / "ds"
    Dataset.from_dict({"text": ["good film", "bad film", "fine"], "label": [1, 0, 1]}).save_to_disk(str(folder))
    table = read_table(str(folder), "data.train")
    assert table.columns == ["text", "label"]
    assert [(r["text"], r["label"]) for r in table.rows] == [("good film", 1), ("bad film", 0), ("fine", 1)]
    assert table.lines == [1, 2, 3]


def test_format_can_be_forced_over_the_extension(tmp_path):
    path = write(tmp_path / "d.txt", "text\tlabel\ngood\tpos\n")
    assert read_table(path, "data.train", fmt="tsv", expect=("text",)).rows == [{"text": "good", "label": "pos"}]


def test_non_utf8_file_names_the_line(tmp_path):
    path = write(tmp_path / "d.csv", b"text,label\nfine,pos\ncaf\xe9 au lait,neg\n")
    err = refusal(path, "data.train")
    assert err.field == "data.train"
    assert "not valid UTF-8 (line 3" in err.problem


def test_csv_row_with_wrong_number_of_fields_names_the_line(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\nfine,pos\nnot fine, at all,neg\n")
    err = refusal(path, "data.train", expect=("text",))
    assert "line 3 has 3 fields, expected 2 (text, label)" in err.problem


def test_csv_row_with_broken_quoting_names_the_line(tmp_path):
    path = write(tmp_path / "d.csv", 'text,label\nfine,pos\n"quoted" then more,neg\nlast,pos\n')
    err = refusal(path, "data.train", expect=("text",))
    assert "line 3 is malformed" in err.problem


def test_unclosed_quote_names_the_line_where_it_opens(tmp_path):
    path = write(tmp_path / "d.csv", 'text,label\nfine,pos\n"never closed,neg\nlast,pos\n')
    assert "line 3 is malformed" in refusal(path, "data.train", expect=("text",)).problem


def test_bad_jsonl_line_is_named(tmp_path):
    path = write(tmp_path / "d.jsonl", json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]) + "\n{'text': 'single quotes'}\n")
    assert "line 3 is not valid JSON" in refusal(path, "data.validation").problem


def test_jsonl_line_that_is_not_an_object_is_named(tmp_path):
    path = write(tmp_path / "d.jsonl", json.dumps(ROWS[0]) + '\n["a", "list"]\n')
    assert "line 2 is a list, not an object" in refusal(path, "data.train").problem


def test_bad_json_array_names_the_line(tmp_path):
    path = write(tmp_path / "d.json", '[\n{"text": "a", "label": 1},\n{"text": "b" "label": 0}\n]')
    assert "line 3 is not valid JSON" in refusal(path, "data.train").problem


@pytest.mark.parametrize("name, content, problem", [
    ("d.csv", "", "is empty"),
    ("d.csv", "text,label\n", "has no data rows"),
    ("d.jsonl", "\n\n", "has no data rows"),
    ("d.json", "[]", "has no data rows"),
    ("d.txt", "text,label\na,b\n", "cannot tell the format"),
])
def test_unusable_files_are_refused(tmp_path, name, content, problem):
    err = refusal(write(tmp_path / name, content), "data.train", expect=("text",))
    assert err.field == "data.train"
    assert problem in err.problem


def test_missing_column_lists_the_columns_that_exist(tmp_path):
    table = read_table(write(tmp_path / "d.csv", "text,label\ngood,pos\n"), "data.train", expect=("text", "label"))
    with pytest.raises(UserError) as info:
        take_columns(table, "data.train", "sentence", None, "label")
    assert info.value.field == "data.text_column"
    assert "column 'sentence' not in data.train" in info.value.problem
    assert info.value.problem.endswith("its columns are text, label")


def test_missing_column_in_a_headerless_file_shows_its_first_row(tmp_path):
    # The header names neither configured column, so it is read as data: say so.
    table = read_table(write(tmp_path / "d.tsv", "sentence\tsentiment\ngood\t1\n"), "data.train", expect=("text", "label"))
    with pytest.raises(UserError) as info:
        take_columns(table, "data.train", "text", None, "label")
    assert "its columns are 0, 1" in info.value.problem
    assert "the first row is 'sentence', 'sentiment'" in info.value.problem
    assert "data.columns" in info.value.problem


def test_missing_file_is_named(tmp_path):
    err = refusal(str(tmp_path / "nope.csv"), "data.test")
    assert (err.field, err.problem) == ("data.test", f"file '{tmp_path / 'nope.csv'}' does not exist")


def test_folder_that_is_not_a_dataset_is_refused(tmp_path):
    assert "not a saved Hugging Face dataset" in refusal(str(tmp_path), "data.train").problem


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared data not beside the project")
def test_real_sst2_and_goemotions_files_read_whole():
    sst2 = read_table(str(SHARED / "sst2" / "dev.tsv"), "data.validation", expect=("sentence", "label"))
    assert sst2.columns == ["sentence", "label"] and len(sst2.rows) == 872
    assert {r["label"] for r in sst2.rows} == {"0", "1"}
    go = read_table(str(SHARED / "goemotions" / "dev.tsv"), "data.validation", columns=["text", "labels", "comment_id"], expect=("text", "labels"))
    assert len(go.rows) == 5426
    quoted = [r["text"] for r in go.rows if '"' in r["text"]]
    assert len(quoted) == 137  # texts holding quotes, with the file's CSV quoting undone
    assert not any('""' in t for t in quoted)
    assert quoted[0].startswith('"I didn\'t learn anything')
