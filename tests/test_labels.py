"""Labels: ids or names (never a mix), unknown labels named with their line, multi-label lists."""

from pathlib import Path

import pytest

from weitiao.config import DataConfig
from weitiao.data import load_data
from weitiao.data.examples import LabelSet
from weitiao.data.sources import Table
from weitiao.errors import UserError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def column(cells: list) -> Table:
    """A one-column table whose rows come from lines 2, 3, ... (line 1 is the header)."""
    return Table(["label"], [{"label": c} for c in cells], list(range(2, len(cells) + 2)), "f.csv")


def from_cells(cells: list, separator: str | None = None) -> LabelSet:
    return LabelSet.from_cells(cells, separator, "data.train", column(cells))


def encode(labels: LabelSet, cells: list, separator: str | None = None, field: str = "data.validation") -> list:
    return labels.encode(cells, separator, field, column(cells))


def write_csv(path: Path, rows: list[tuple[str, str]]) -> str:
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    return str(path)


def test_ids_give_a_label_per_id_seen():
    labels = from_cells(["0", "2", "1", "2"])
    assert labels.names == ["0", "1", "2"]
    assert encode(labels, ["2", "0", 1]) == [2, 0, 1]  # JSON ints and digit strings alike


def test_ratings_1_to_5_are_five_classes():
    labels = from_cells(["5", "1", "3", 2, "4", "10"])
    assert labels.names == ["1", "2", "3", "4", "5", "10"]  # no phantom class 0 (or 6..9); sorted as numbers
    assert encode(labels, ["1", 5, "05", "10"]) == [0, 4, 4, 5]


def test_ratings_1_to_5_train_a_five_class_model(tmp_path):
    rows = [(f"review number {i}", str(1 + i % 5)) for i in range(50)]
    train = write_csv(tmp_path / "train.csv", rows)
    data = load_data(DataConfig(train=train, validation=train), multi_label=False, seed=0)
    assert data.labels.names == ["1", "2", "3", "4", "5"]
    assert sorted(set(data.train.labels)) == [0, 1, 2, 3, 4]


def test_a_label_seen_only_on_dropped_rows_is_not_a_class(tmp_path):
    # "neutral" is only on a row whose text is empty, which cleaning drops.
    train = write_csv(tmp_path / "train.csv", [("good", "pos"), ("bad", "neg"), (" ", "neutral"), ("fine", "pos")])
    dev = write_csv(tmp_path / "dev.csv", [("great", "pos"), ("awful", "neg")])
    data = load_data(DataConfig(train=train, validation=dev), multi_label=False, seed=0)
    assert data.labels.names == ["neg", "pos"]
    assert data.train.labels == [1, 0, 1]
    assert data.report["labels_only_on_dropped_rows"] == ["neutral"]
    assert data.report["labels"] == 2


def test_ids_seen_only_on_dropped_rows_are_not_classes(tmp_path):
    train = write_csv(tmp_path / "train.csv", [("good", "1"), ("bad", "3"), ("", "7"), ("ok", "3")])
    data = load_data(DataConfig(train=train, validation=write_csv(tmp_path / "dev.csv", [("x", "1"), ("y", "3")])),
                     multi_label=False, seed=0)
    assert data.labels.names == ["1", "3"]
    assert data.validation.labels == [0, 1]


def test_names_are_sorted_into_ids():
    labels = from_cells(["pos", "neg", "neutral", "pos"])
    assert labels.names == ["neg", "neutral", "pos"]
    assert encode(labels, ["pos", " neg ", "neutral"]) == [2, 0, 1]


def test_ids_and_names_mixed_in_one_column_are_refused():
    with pytest.raises(UserError) as info:
        from_cells(["0", "pos", "1"])
    assert info.value.field == "data.train"
    assert "mixes ids ('0') and names ('pos')" in info.value.problem


def test_unknown_label_names_the_label_and_the_line():
    labels = LabelSet(["neg", "pos"])
    with pytest.raises(UserError) as info:
        encode(labels, ["pos", "neg", "neutral"])
    assert info.value.field == "data.validation"
    assert "line 4: unknown label 'neutral'" in info.value.problem
    assert "['neg', 'pos']" in info.value.problem


def test_id_beyond_the_label_set_is_unknown():
    with pytest.raises(UserError, match="line 3: unknown label '2'"):
        encode(LabelSet(["neg", "pos"]), ["1", "2"])


def test_names_given_for_ids_in_the_file():
    # SST-2 with data.labels: [negative, positive]: the file holds 0/1.
    assert encode(LabelSet(["negative", "positive"]), ["1", "0", "1"]) == [1, 0, 1]


def test_labels_named_with_digits_are_read_as_names():
    # Star ratings 1..5 listed in data.labels: the cell "5" is the label "5" (id 4), not id 5.
    assert encode(LabelSet(["1", "2", "3", "4", "5"]), ["5", "1", 3]) == [4, 0, 2]


def test_multi_label_cells_encode_to_sorted_id_lists():
    cells = ["3,5", "27", " 5 , 3 ,3", ["2", "0"]]
    labels = from_cells(cells, ",")
    assert labels.names == ["0", "2", "3", "5", "27"]
    assert encode(labels, cells, ",") == [[2, 3], [4], [2, 3], [0, 1]]


def test_several_labels_in_a_single_label_task_point_at_multi_label():
    with pytest.raises(UserError) as info:
        encode(LabelSet(["a", "b"]), ["a", ["a", "b"]])
    assert "line 3 has 2 labels" in info.value.problem
    assert "task.multi_label: true" in info.value.fix


def test_comma_separated_ids_in_a_single_label_task_point_at_multi_label():
    with pytest.raises(UserError) as info:
        from_cells(["27", "3,5"])
    assert "mixes ids ('27') and names ('3,5')" in info.value.problem
    assert "task.multi_label: true" in info.value.fix


def test_row_without_a_label_is_named():
    with pytest.raises(UserError, match="line 3 has no label"):
        encode(LabelSet(["a", "b"]), ["a", ""])


def test_unknown_label_in_the_validation_file_is_refused(tmp_path):
    train = write_csv(tmp_path / "train.csv", [("good", "pos"), ("bad", "neg"), ("fine", "pos")])
    validation = write_csv(tmp_path / "dev.csv", [("great", "pos"), ("meh", "neutral")])
    with pytest.raises(UserError) as info:
        load_data(DataConfig(train=train, validation=validation), multi_label=False, seed=0)
    assert info.value.field == "data.validation"
    assert f"'{validation}' line 3: unknown label 'neutral'" in info.value.problem


def test_labels_from_the_config_fix_the_ids(tmp_path):
    train = write_csv(tmp_path / "train.csv", [("good", "pos"), ("bad", "neg")])
    data = load_data(DataConfig(train=train, validation=train, labels=["pos", "neg", "neutral"]), multi_label=False, seed=0)
    assert data.labels.names == ["pos", "neg", "neutral"]
    assert data.train.labels == [0, 1]


def test_labels_from_a_file(tmp_path):
    (tmp_path / "labels.txt").write_text("anger\n\njoy\nneutral\n", encoding="utf-8")
    train = tmp_path / "train.tsv"
    train.write_text("so happy\t1\nugh\t0,2\n", encoding="utf-8")
    cfg = DataConfig(train=str(train), validation=str(train), columns=["text", "labels"], label_column="labels",
                     labels_file=str(tmp_path / "labels.txt"))
    data = load_data(cfg, multi_label=True, seed=0)
    assert data.labels.names == ["anger", "joy", "neutral"]
    assert data.train.labels == [[1], [0, 2]]


def test_a_label_listed_twice_is_refused(tmp_path):
    train = write_csv(tmp_path / "train.csv", [("good", "pos"), ("bad", "neg")])
    with pytest.raises(UserError) as info:
        load_data(DataConfig(train=train, validation=train, labels=["neg", "pos", "neg"]), multi_label=False, seed=0)
    assert info.value.field == "data.labels"
    assert "'neg'" in info.value.problem


def test_labels_file_that_is_not_utf8_names_the_line(tmp_path):
    (tmp_path / "labels.txt").write_bytes(b"anger\ncaf\xe9\n")
    train = write_csv(tmp_path / "train.csv", [("good", "1"), ("bad", "0")])
    with pytest.raises(UserError) as info:
        load_data(DataConfig(train=train, validation=train, labels_file=str(tmp_path / "labels.txt")), multi_label=False, seed=0)
    assert info.value.field == "data.labels_file"
    assert "line 2" in info.value.problem


def test_a_single_label_class_is_refused(tmp_path):
    train = write_csv(tmp_path / "train.csv", [("good", "pos"), ("great", "pos")])
    with pytest.raises(UserError, match="has only 1 distinct label"):
        load_data(DataConfig(train=train, validation=train), multi_label=False, seed=0)


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared data not beside the project")
def test_goemotions_dev_encodes_as_multi_label():
    go = SHARED / "goemotions"
    cfg = DataConfig(train=str(go / "dev.tsv"), validation=str(go / "dev.tsv"), columns=["text", "labels", "comment_id"],
                     label_column="labels", labels_file=str(go / "emotions.txt"))
    data = load_data(cfg, multi_label=True, seed=0)
    assert len(data.labels) == 28 and data.labels.names[27] == "neutral"
    sizes = [len(ids) for ids in data.validation.labels]
    assert len(sizes) == 5426
    # SOURCE.md: dev has 4,548 rows with one label, 809 with two, 62 with three, 7 with four
    assert [sizes.count(k) for k in (1, 2, 3, 4)] == [4548, 809, 62, 7]
