"""Cleaning counts on a hand-made file, the leakage check, and the seeded stratified split."""

import random
from collections import Counter
from pathlib import Path

import pytest

from weitiao.config import DataConfig
from weitiao.data import load_data
from weitiao.data.clean import clean_split
from weitiao.data.examples import Examples
from weitiao.data.split import split_examples
from weitiao.errors import UserError

# 10 rows: 2 need stripping, 2 are blank, 1 is an exact duplicate (after stripping) of "a,pos",
# "c" appears with two labels (not a duplicate), and "d" and "v1" are also in the validation file.
TRAIN = "text,label\n  a  ,pos\na,pos\nb,neg\n   ,neg\n,pos\nc,neg\nc,pos\nd,neg\ne,pos\nv1,neg\n"
VALIDATION = "text,label\nv1,neg\nd,neg\nx,pos\nx,pos\n  ,pos\n"


@pytest.fixture
def files(tmp_path: Path) -> dict:
    (tmp_path / "train.csv").write_text(TRAIN, encoding="utf-8")
    (tmp_path / "dev.csv").write_text(VALIDATION, encoding="utf-8")
    return {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "dev.csv")}


def test_cleaning_counts(files):
    data = load_data(DataConfig(**files), multi_label=False, seed=0)
    assert data.report["train"] == {"rows": 10, "stripped": 2, "empty_dropped": 2, "duplicates_dropped": 1, "kept": 7}
    # evaluation data is never de-duplicated: every row counts in the metric
    assert data.report["validation"] == {"rows": 5, "stripped": 1, "empty_dropped": 1, "duplicates_dropped": 0, "kept": 4}
    assert data.train.text == ["a", "b", "c", "c", "d", "e", "v1"]
    assert data.train.labels == [1, 0, 0, 1, 0, 1, 0]
    assert data.train.lines == [2, 4, 7, 8, 9, 10, 11]  # rows still point at their lines
    assert data.validation.text == ["v1", "d", "x", "x"]


def test_leakage_is_counted_but_kept_by_default(files):
    data = load_data(DataConfig(**files), multi_label=False, seed=0)
    assert data.report["leakage"] == {"train_rows_in_eval": 2, "dropped": False}
    assert {"d", "v1"} <= set(data.train.text)


def test_leakage_is_dropped_when_asked(files):
    data = load_data(DataConfig(**files, drop_leakage=True), multi_label=False, seed=0)
    assert data.report["leakage"] == {"train_rows_in_eval": 2, "dropped": True}
    assert data.train.text == ["a", "b", "c", "c", "e"]
    assert data.train.labels == [1, 0, 0, 1, 1]


def test_duplicates_are_kept_when_asked(files):
    data = load_data(DataConfig(**files, drop_duplicates=False), multi_label=False, seed=0)
    assert data.report["train"]["duplicates_dropped"] == 0
    assert data.train.text.count("a") == 2


def test_text_pairs_count_as_one_key():
    ex = Examples(["q", "q ", "q", "r"], ["a", "a", "b", " "], [0, 0, 0, 1], [1, 2, 3, 4], "f")
    kept, counts = clean_split(ex)
    assert (kept.text, kept.pair) == (["q", "q"], ["a", "b"])  # an empty pair empties the row
    assert counts == {"rows": 4, "stripped": 1, "empty_dropped": 1, "duplicates_dropped": 1, "kept": 2}


def test_training_set_empty_after_cleaning_is_refused(tmp_path, files):
    (tmp_path / "blank.csv").write_text("text,label\n  ,pos\n\t,neg\n,pos\n", encoding="utf-8")
    with pytest.raises(UserError) as info:
        load_data(DataConfig(train=str(tmp_path / "blank.csv"), validation=files["validation"]), multi_label=False, seed=0)
    assert info.value.field == "data.train"
    assert "no training rows left after cleaning" in info.value.problem
    assert "'empty_dropped': 3" in info.value.problem


# ---------------------------------------------------------------------------------------
# Split


def skewed(n: int = 1000) -> Examples:
    """n rows, classes 60% / 30% / 10%, in a shuffled order."""
    labels = [0] * (n * 6 // 10) + [1] * (n * 3 // 10) + [2] * (n // 10)
    random.Random(7).shuffle(labels)
    return Examples([f"text {i}" for i in range(n)], None, labels, list(range(1, n + 1)), "f")


def shares(labels: list[int]) -> list[float]:
    counts = Counter(labels)
    return [counts[k] / len(labels) for k in (0, 1, 2)]


def test_split_sizes_and_disjoint_parts():
    train, validation, test, _ = split_examples(skewed(), 0.8, 0.1, 0.1, seed=0)
    assert (len(train), len(validation), len(test)) == (800, 100, 100)
    seen = train.text + validation.text + test.text
    assert sorted(seen) == sorted(skewed().text)  # every row in exactly one part


def test_split_keeps_class_shares():
    *parts, how = split_examples(skewed(), 0.8, 0.1, 0.1, seed=0)
    assert how == "label"
    for part in parts:
        assert shares(part.labels) == pytest.approx([0.6, 0.3, 0.1], abs=0.02)


def test_split_depends_on_the_seed_only():
    a = split_examples(skewed(), 0.8, 0.1, 0.1, seed=3)
    b = split_examples(skewed(), 0.8, 0.1, 0.1, seed=3)
    c = split_examples(skewed(), 0.8, 0.1, 0.1, seed=4)
    assert [p.text for p in a[:3]] == [p.text for p in b[:3]]
    assert a[1].text != c[1].text and a[2].text != c[2].text


def test_load_data_splits_when_there_is_no_validation_file(tmp_path):
    rows = [(f"text {i}", "pos" if i % 4 else "neg") for i in range(200)]
    (tmp_path / "all.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    data = load_data(DataConfig(train=str(tmp_path / "all.csv")), multi_label=False, seed=1)
    assert data.report["split"] == {"train": 160, "validation": 20, "test": 20, "seed": 1, "stratified_by": "label"}
    assert Counter(data.validation.labels) == {1: 15, 0: 5}


def test_too_few_rows_to_split_is_a_user_error(tmp_path):
    (tmp_path / "tiny.csv").write_text("text,label\na,x\nb,y\n", encoding="utf-8")
    with pytest.raises(UserError) as info:
        load_data(DataConfig(train=str(tmp_path / "tiny.csv")), multi_label=False, seed=0)
    assert info.value.field == "data.split"
    assert "2 training rows" in info.value.problem


def test_multi_label_split_keeps_the_share_of_each_label_set():
    # Half the rows are [0], half [0, 1]: the first label is 0 everywhere, so stratifying by it
    # alone splits at random; by label set, every part is half and half.
    labels = [[0] if i % 2 else [0, 1] for i in range(400)]
    ex = Examples([f"text {i}" for i in range(400)], None, labels, list(range(1, 401)), "f")
    *parts, how = split_examples(ex, 0.8, 0.1, 0.1, seed=0)
    assert how == "label set"
    for part in parts:
        assert sum(x == [0, 1] for x in part.labels) == len(part) // 2


def test_a_split_that_cannot_stratify_says_so():
    ex = Examples([f"text {i}" for i in range(10)], None, list(range(10)), list(range(1, 11)), "f")
    *_, how = split_examples(ex, 0.8, 0.1, 0.1, seed=0)
    assert how == "none (too few rows per label)"
