"""Write tests/data/seqeval_strict_reference.json: seqeval's own strict-mode scores on WNUT 2017's
dev and test files against seeded corruptions of their tags, for IOB2 and for the same files
converted to BIOES. tests/test_strict_scoring.py holds weitiao's scorer (tasks/token_classification/tags.py) equal
to these numbers; seqeval itself is not in the lock (it comes only as source, last released 2020).

    python3 -m venv /tmp/seqeval && /tmp/seqeval/bin/pip install seqeval==1.2.2
    /tmp/seqeval/bin/python tools/seqeval_reference.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "wnut17"
FILES = ("emerging.dev.conll", "emerging.test.annotated")
OUT = ROOT / "tests" / "data" / "seqeval_strict_reference.json"
SEEDS = (0, 1, 2)


def read_conll(path: Path) -> list[list[str]]:
    """The tag column of a two-column CoNLL file, one list per sentence."""
    sentences, tags = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if tags:
                sentences.append(tags)
            tags = []
        else:
            tags.append(line.split("\t")[-1].strip())
    if tags:
        sentences.append(tags)
    return sentences


def to_bioes(tags: list[str]) -> list[str]:
    """IOB2 -> BIOES: an entity's last word E- (S- when it has one word)."""
    out = list(tags)
    for i, tag in enumerate(tags):
        if tag == "O":
            continue
        follows = i + 1 < len(tags) and tags[i + 1] == "I-" + tag[2:]
        if tag.startswith("B-") and not follows:
            out[i] = "S-" + tag[2:]
        elif tag.startswith("I-") and not follows:
            out[i] = "E-" + tag[2:]
    return out


def corrupt(sentences: list[list[str]], seed: int) -> list[list[str]]:
    """Predictions as a model makes them: each word's tag replaced, with probability 0.15, by a
    tag drawn from the file's own tag set (so types swap, entities break, ill-formed runs appear)."""
    rng = random.Random(seed)
    tagset = sorted({t for s in sentences for t in s})
    return [[rng.choice(tagset) if rng.random() < 0.15 else t for t in s] for s in sentences]


def cases():
    """(name, scheme, gold, predicted) for every file, scheme and seed."""
    for name in FILES:
        gold = read_conll(DATA / name)
        for scheme, convert in (("IOB2", list), ("BIOES", to_bioes)):
            g = [convert(s) for s in gold]
            for seed in SEEDS:
                yield f"{name}/{scheme}/seed{seed}", scheme, g, corrupt(g, seed)


def main() -> None:
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2, IOBES

    out = {}
    for key, scheme, gold, pred in cases():
        report = classification_report(gold, pred, mode="strict", scheme=IOBES if scheme == "BIOES" else IOB2,
                                       output_dict=True, zero_division=0)
        report.pop("macro avg"), report.pop("weighted avg")
        out[key] = {k: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"], "support": int(v["support"])}
                    for k, v in report.items()}
    OUT.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(out)} cases)")


if __name__ == "__main__":
    main()
