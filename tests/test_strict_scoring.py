"""weitiao's strict entity scorer equals seqeval's strict mode (the numbers in
tests/data/seqeval_strict_reference.json were written by seqeval 1.2.2 itself: tools/seqeval_reference.py)."""

import importlib.util
import json
from pathlib import Path

import pytest

from weitiao.tasks.token_classification import tags as T
from weitiao.tasks.token_classification import entity_metrics

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = json.loads((ROOT / "tests/data/seqeval_strict_reference.json").read_text())
_spec = importlib.util.spec_from_file_location("seqeval_reference", ROOT / "tools/seqeval_reference.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)
CASES = {key: (scheme, gold, pred) for key, scheme, gold, pred in ref.cases()}


@pytest.mark.parametrize("key", sorted(REFERENCE))
def test_scores_equal_seqeval_strict_on_wnut17(key):
    scheme, gold, pred = CASES[key]
    expected = dict(REFERENCE[key])
    ours = T.strict_scores(gold, pred, scheme)
    micro = expected.pop("micro avg")
    assert ours["micro"] == pytest.approx(micro, abs=1e-12)
    assert sorted(ours["per_type"]) == sorted(expected)
    for kind, scores in expected.items():
        assert ours["per_type"][kind] == pytest.approx(scores, abs=1e-12), kind
    # the task's metric function reports the same numbers
    m = entity_metrics(gold, pred, scheme)
    assert (m["f1"], m["entities"]) == (pytest.approx(micro["f1"], abs=1e-12), micro["support"])
    assert 0.3 < micro["f1"] < 0.9  # the corruption leaves a partly right prediction, not a trivial one


def test_strict_reading_by_hand():
    # IOB2: a stray I- is no entity; B- then I- of another type ends the entity at the B-
    assert T.strict_entities(["I-PER", "B-PER", "I-PER", "I-LOC", "O", "B-LOC"], "IOB2") == [(1, 3, "PER"), (5, 6, "LOC")]
    # BIOES: only S- or a B- that reaches its E- counts
    assert T.strict_entities(["B-PER", "I-PER", "O", "S-LOC", "B-ORG", "I-ORG", "E-ORG", "E-ORG"], "BIOES") == \
        [(3, 4, "LOC"), (4, 7, "ORG")]
    with pytest.raises(ValueError, match="E-PER"):
        T.strict_entities(["E-PER"], "IOB2")
    s = T.strict_scores([["B-PER", "I-PER", "O"]], [["B-PER", "O", "B-LOC"]], "IOB2")
    assert s["micro"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert s["per_type"]["LOC"]["support"] == 0  # a type only predicted is listed
