"""Token classification without training: tag schemes, reading (and refusing) files, sub-word
alignment and the windows of long sentences."""

from __future__ import annotations

import json

import pytest
from helpers import minilm_path, write_config

from weitiao.config import DataConfig
from weitiao.data import load_data
from weitiao.errors import UserError
from weitiao.tasks.token_classification import tags as T
from weitiao.tasks.token_classification.reader import TagReader
from weitiao.tasks.token_classification import encode, windows


def conll(path, sentences: list[list[tuple[str, str]]], docstart: bool = False) -> str:
    text = "-DOCSTART- O\n\n" if docstart else ""
    text += "\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in sentences) + "\n"
    path.write_text(text, encoding="utf-8")
    return str(path)


S1 = [("John", "B-PER"), ("Smith", "I-PER"), ("lives", "O"), ("in", "O"), ("New", "B-LOC"), ("York", "I-LOC")]
S2 = [("Acme", "B-ORG"), ("hired", "O"), ("Mary", "B-PER")]


def read(tmp_path, train, validation=None, scheme="auto", **data):
    cfg = DataConfig(train=train, validation=validation or train, **data)
    reader = TagReader(cfg, scheme)
    return load_data(cfg, seed=0, reader=reader), reader


# --- schemes


def test_iob1_becomes_iob2_and_is_the_identity_on_iob2():
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]
    assert T.iob1_to_iob2(iob1) == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert T.iob1_to_iob2(T.iob1_to_iob2(iob1)) == T.iob1_to_iob2(iob1)


def test_invalid_predictions_are_repaired_by_the_stated_rule():
    # An I- that does not continue its type begins an entity; E-/S- close one.
    assert T.repair(["O", "I-PER", "I-PER", "I-LOC"], "IOB2") == ["O", "B-PER", "I-PER", "B-LOC"]
    assert T.repair(["B-PER", "O", "E-LOC", "I-PER"], "BIOES") == ["S-PER", "O", "S-LOC", "S-PER"]
    assert T.repair(["B-PER", "I-PER", "I-PER"], "BIOES") == ["B-PER", "I-PER", "E-PER"]
    assert T.bioes_error(T.repair(["I-X", "B-X", "O", "E-Y", "E-Y"], "BIOES")) is None


def test_bioes_checks_every_transition():
    assert T.bioes_error(["B-PER", "E-PER", "S-LOC", "O"]) is None
    assert T.bioes_error(["B-PER", "O"]) == 1
    assert T.bioes_error(["O", "I-PER"]) == 1
    assert T.bioes_error(["B-PER", "I-PER"]) == 1  # ends open


def test_all_subword_tags_continue_the_entity():
    assert T.subword_tags("B-PER", 3, "IOB2") == ["B-PER", "I-PER", "I-PER"]
    assert T.subword_tags("S-PER", 3, "BIOES") == ["B-PER", "I-PER", "E-PER"]
    assert T.subword_tags("E-PER", 2, "BIOES") == ["I-PER", "E-PER"]
    assert T.subword_tags("O", 2, "IOB2") == ["O", "O"]


# --- reading


def test_conll_is_read_with_docstart_skipped_and_the_scheme_tags_for_each_type(tmp_path):
    data, reader = read(tmp_path, conll(tmp_path / "t.conll", [S1, S2], docstart=True))
    assert reader.found == "IOB2"
    assert data.labels.names == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert data.train.text[0] == ("John", "Smith", "lives", "in", "New", "York")
    assert [data.labels.names[i] for i in data.train.labels[1]] == ["B-ORG", "O", "B-PER"]
    assert len(data.train.text) == 2 and not any("-DOCSTART-" in w for s in data.train.text for w in s)  # the DOCSTART line is no sentence


def test_iob1_and_bioes_are_detected(tmp_path):
    iob1 = [[("John", "I-PER"), ("Smith", "I-PER"), ("met", "O"), ("Ann", "I-PER")]]
    data, reader = read(tmp_path, conll(tmp_path / "a.conll", iob1))
    assert reader.found == "IOB1"
    assert [data.labels.names[i] for i in data.train.labels[0]] == ["B-PER", "I-PER", "O", "B-PER"]
    bioes = [[("John", "B-PER"), ("Smith", "E-PER"), ("met", "O"), ("Ann", "S-PER")]]
    data, reader = read(tmp_path, conll(tmp_path / "b.conll", bioes))
    assert reader.found == "BIOES" and "S-PER" in data.labels.names


def test_jsonl_with_lists_of_words_and_tags(tmp_path):
    rows = [{"words": [w for w, _ in s], "ner": [t for _, t in s]} for s in (S1, S2)]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data, _ = read(tmp_path, str(path), tokens_column="words", tags_column="ner")
    assert len(data.train) == 2 and data.labels.names[0] == "O"


@pytest.mark.parametrize("case, lines, message", [
    ("tag outside the scheme", "John\tB-PER\nSmith\tX-PER\n", "line 2: tag 'X-PER' is not O or B-/I-/M-/E-/S-TYPE"),
    ("one column", "John\tB-PER\nSmith\n", "line 2 has one column ('Smith')"),
    ("no entities", "John\tO\nSmith\tO\n", "has no entities at all"),
    ("broken BIOES", "John\tB-PER\nSmith\tO\n\nAnn\tS-PER\n", "line 2: tag 'O' breaks BIOES"),
])
def test_bad_conll_names_file_line_and_fix(tmp_path, case, lines, message):
    path = tmp_path / "bad.conll"
    path.write_text(lines)
    with pytest.raises(UserError, match="fix: ") as e:
        read(tmp_path, str(path))
    assert message in str(e.value) and "bad.conll" in str(e.value), str(e.value)


def test_mixed_schemes_across_files_and_iob2_claims_are_refused(tmp_path):
    train = conll(tmp_path / "t.conll", [S1, S2])
    dev = conll(tmp_path / "d.conll", [[("Ann", "S-PER"), ("ran", "O")]])
    with pytest.raises(UserError, match=r"d.conll' line 1: tag 'S-PER' is outside the IOB2 scheme of data.train \(mixed schemes\?\)"):
        read(tmp_path, train, dev)
    iob1 = conll(tmp_path / "i.conll", [[("John", "I-PER"), ("ran", "O")]])
    with pytest.raises(UserError, match="'I-PER' begins an entity, which IOB2 does not allow"):
        read(tmp_path, iob1, scheme="IOB2")


def test_an_empty_sentence_and_unequal_lengths_in_jsonl(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"tokens": ["a", "b"], "tags": ["B-X", "O"]}) + "\n" + json.dumps({"tokens": [], "tags": []}) + "\n")
    with pytest.raises(UserError, match="line 2 is an empty sentence"):
        read(tmp_path, str(path))
    path.write_text(json.dumps({"tokens": ["a", "b"], "tags": ["B-X"]}) + "\n")
    with pytest.raises(UserError, match="line 1 has 2 words but 1 tags"):
        read(tmp_path, str(path))


def test_an_unknown_tag_in_validation_names_the_tags(tmp_path):
    train = conll(tmp_path / "t.conll", [S1])
    dev = conll(tmp_path / "d.conll", [[("Acme", "B-ORG")]])
    with pytest.raises(UserError, match="d.conll' line 1: unknown tag 'B-ORG'"):
        read(tmp_path, train, dev)


def test_a_bad_ner_config_exits_2_before_anything_is_written(tmp_path, capsys):
    from weitiao.cli import main

    path = tmp_path / "bad.conll"
    path.write_text("John\tB-PER\nSmith\n")
    cfg = write_config(tmp_path / "c.yaml", {"task": "token_classification", "data": {"train": str(path)}, "output": {"dir": str(tmp_path / "runs")}})
    assert main(["train", str(cfg), "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 2 has one column" in err
    assert not (tmp_path / "runs").exists()


# --- alignment and windows


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


def test_first_subword_carries_the_tag_and_the_rest_are_ignored(tokenizer, tmp_path):
    data, _ = read(tmp_path, conll(tmp_path / "t.conll", [[("Schwarzenegger", "B-PER"), ("acted", "O")]]))
    names = data.labels.names
    first = encode(tokenizer, data.train, 32, names=names)
    pieces = tokenizer.convert_ids_to_tokens(first.input_ids[0])
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and len(pieces) > 4  # the name is several word pieces
    tags = [names[i] if i >= 0 else None for i in first.labels[0]]
    n = len(tokenizer.tokenize("Schwarzenegger"))
    assert tags[1:1 + n] == ["B-PER"] + [None] * (n - 1) and tags[0] is None and tags[-1] is None
    every = encode(tokenizer, data.train, 32, label_all_subwords=True, names=names)
    assert [names[i] for i in every.labels[0][1:1 + n]] == ["B-PER"] + ["I-PER"] * (n - 1)
    assert first.reads[0] == [(1, 0), (1 + n, 1)]  # each word read at its first piece


def test_windows_start_at_words_and_share_the_stride():
    starts = list(range(0, 100, 2))  # 50 words of 2 pieces
    spans = windows(starts, 100, 30, 8)
    assert spans[0] == (0, 30) and spans[-1][1] == 100
    for (a, b), (c, d) in zip(spans, spans[1:]):
        assert c in starts and b - c >= 8 - 1 and c > a and b - a <= 30


def test_a_long_sentence_becomes_windows_and_every_word_is_read_once(tokenizer, tmp_path):
    words = [(f"word{i}", "B-X" if i % 7 == 0 else "O") for i in range(120)]
    data, _ = read(tmp_path, conll(tmp_path / "t.conll", [words, S2]))
    enc = encode(tokenizer, data.train, 32, stride=8, names=data.labels.names)
    assert enc.truncated == 1 and len(enc) > 3 and max(enc.lengths) <= 32
    read_words = sorted((enc.sentence[r], w) for r, rows in enumerate(enc.reads) for _, w in rows)
    assert read_words == sorted({(k, w) for k, n in enumerate(enc.words) for w in range(n)})


def test_a_saved_dataset_with_tag_ids_uses_its_classlabel_names(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=names))})
    ds = Dataset.from_dict({"tokens": [["John", "Smith", "in", "Oslo"], ["Ann", "left"]], "ner_tags": [[1, 2, 0, 3], [1, 0]]}, features=features)
    ds.save_to_disk(str(tmp_path / "ds"))
    data, _ = read(tmp_path, str(tmp_path / "ds"), tags_column="ner_tags")
    assert [data.labels.names[i] for i in data.train.labels[0]] == ["B-PER", "I-PER", "O", "B-LOC"]


def test_without_validation_the_split_keeps_entity_types_in_every_part(tmp_path):
    people = [[("Ann", "B-PER"), ("Lee", "I-PER"), ("ran", "O")]] * 40
    places = [[("in", "O"), ("Oslo", "B-LOC")]] * 40
    both = [[("Ann", "B-PER"), ("in", "O"), ("Oslo", "B-LOC")]] * 20
    sentences = [[(w + str(i), t) for w, t in s] for i, s in enumerate(people + places + both)]  # no duplicates
    cfg = DataConfig(train=conll(tmp_path / "t.conll", sentences))
    data = load_data(cfg, seed=0, reader=TagReader(cfg))
    assert data.report["split"]["stratified_by"] == "entity types"
    for part in (data.validation, data.test):
        kinds = {data.labels.names[i] for x in part.labels for i in x}
        assert {"B-PER", "B-LOC"} <= kinds


def test_tags_listed_in_a_labels_file_and_conll_refused_for_classification(tmp_path):
    from weitiao.config import validate

    (tmp_path / "tags.txt").write_text("O\nB-PER\nI-PER\nB-LOC\nI-LOC\nB-ORG\nI-ORG\nB-MISC\nI-MISC\n")
    data, _ = read(tmp_path, conll(tmp_path / "t.conll", [S1, S2]), labels_file=str(tmp_path / "tags.txt"))
    assert data.labels.names[-2:] == ["B-MISC", "I-MISC"]
    cfg = validate({"data": {"train": str(tmp_path / "t.conll"), "format": "conll"}})
    with pytest.raises(UserError, match="data.format: 'conll' files hold words and tags .* fix: set task: token_classification"):
        load_data(cfg.data)


def test_words_of_raw_text_carry_exact_spans_for_byte_level_and_sentencepiece_pre_tokenizers():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from weitiao.tasks.token_classification import words_of

    text = "John Smith lives in Paris, France."
    for pre in (pre_tokenizers.ByteLevel(add_prefix_space=False), pre_tokenizers.Metaspace(), pre_tokenizers.BertPreTokenizer()):
        tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
        tok.pre_tokenizer = pre
        words, spans = words_of(text, PreTrainedTokenizerFast(tokenizer_object=tok))
        assert words == ("John", "Smith", "lives", "in", "Paris", ",", "France", "."), type(pre).__name__
        assert all(text[a:b] == w for w, (a, b) in zip(words, spans))


def test_an_incomplete_tag_set_in_data_labels_is_refused(tmp_path):
    train = conll(tmp_path / "t.conll", [[("Ann", "S-PER"), ("ran", "O")]])
    with pytest.raises(UserError, match=r"data.labels: lacks 'S-PER': BIOES needs B-, I-, E-, S- for every entity type"):
        read(tmp_path, train, labels=["O", "B-PER", "I-PER", "E-PER"])


def test_tag_ids_are_named_by_a_labels_file_and_a_conflict_with_stored_names_is_refused(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"tokens": ["Ann", "ran"], "tags": [1, 0]}) + "\n")
    (tmp_path / "tags.txt").write_text("O\nB-PER\nI-PER\n")
    data, _ = read(tmp_path, str(path), labels_file=str(tmp_path / "tags.txt"))
    assert [data.labels.names[i] for i in data.train.labels[0]] == ["B-PER", "O"]
    features = Features({"tokens": Sequence(Value("string")), "tags": Sequence(ClassLabel(names=["O", "B-LOC", "I-LOC"]))})
    Dataset.from_dict({"tokens": [["Oslo"]], "tags": [[1]]}, features=features).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(UserError, match="differ from the tag names stored with"):
        read(tmp_path, str(tmp_path / "ds"), labels=["O", "B-PER", "I-PER"])


@pytest.mark.parametrize("content, expect", [
    ("1\u00a0000\tO\nAnn\tB-PER\n", ("1\u00a0000", "Ann")),  # a no-break space inside a token
    ("Ann B-PER\rran O\r\rLee B-PER\r", ("Ann", "ran")),  # old Mac line ends
    ("Ann\tB-PER\t\nran\tO\n", ("Ann", "ran")),  # a trailing tab
])
def test_conll_lines_are_split_on_tabs_or_spaces_only(tmp_path, content, expect):
    path = tmp_path / "t.conll"
    path.write_text(content, encoding="utf-8", newline="")
    data, _ = read(tmp_path, str(path))
    assert data.train.text[0] == expect


def test_an_empty_token_is_refused(tmp_path):
    path = tmp_path / "t.conll"
    path.write_text("\tB-PER\nran\tO\n")
    with pytest.raises(UserError, match="line 1 has an empty token"):
        read(tmp_path, str(path))


def test_prompt_tuning_is_refused_for_a_token_classifier(tmp_path):
    from helpers import tiny_bert

    from weitiao.config import StrategyConfig
    from weitiao.strategies import apply_strategy
    from weitiao.tasks import get_task

    task = get_task("token_classification")
    model, _ = task.build(str(tiny_bert(tmp_path / "bert")), ["O", "B-X", "I-X"], task.Options())
    with pytest.raises(UserError, match="strategy.method: 'prompt' puts virtual tokens in front of the words"):
        apply_strategy(model, StrategyConfig(method="prompt"), task.peft_task_type)
    assert apply_strategy(model, StrategyConfig(method="prefix"), task.peft_task_type).peft


def test_predict_refuses_a_text_that_is_not_valid_unicode_before_loading_anything(tmp_path, capsys):
    from weitiao.cli import main

    assert main(["predict", str(tmp_path / "no-run"), "--text", "ok", "bad \udcff byte"]) == 2
    assert "--text: text 2 holds '\\udcff', which is not valid Unicode" in capsys.readouterr().err
