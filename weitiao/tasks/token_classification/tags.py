"""Tag schemes for token classification: IOB1, IOB2, BIOES and BMES; reading, checking, converting
and repairing tag sequences. Pure Python (no torch): the data reader and the metrics use it.

A tag is "O" or PREFIX-TYPE with PREFIX one of B, I (IOB1/IOB2), B, I, E, S (BIOES) or B, M, E, S
(BMES, the Chinese corpora's scheme, one character a token: M- where BIOES writes I-). BMES is
BIOES under other names: `split_tag` reads M- as I-, so checking, repair and strict scoring are
BIOES's; the tags a BMES run writes (label names, repaired predictions) keep M-.
weitiao trains on IOB2 or BIOES; IOB1 (an entity starts with I- unless it follows one of the
same type) is converted to IOB2 when read, so strict entity scoring applies.
"""

from __future__ import annotations

SCHEMES = ("IOB1", "IOB2", "BIOES", "BMES")
PREFIXES = {"IOB1": "BI", "IOB2": "BI", "BIOES": "BIES", "BMES": "BMES"}


def ends(scheme: str) -> bool:
    """Whether the scheme marks an entity's end and single-token entities (E-, S-): BIOES and BMES."""
    return scheme in ("BIOES", "BMES")


def inner(scheme: str) -> str:
    """The prefix of a token inside an entity: I, or M in BMES."""
    return "M" if scheme == "BMES" else "I"


def split_tag(tag: str) -> tuple[str, str | None]:
    """'B-person' -> ('B', 'person'); 'M-LOC' (BMES) -> ('I', 'LOC'); 'O' -> ('O', None); anything else -> ('', None)."""
    if tag == "O":
        return "O", None
    prefix, dash, kind = tag.partition("-")
    if dash and prefix in ("B", "I", "E", "S", "M") and kind:
        return ("I" if prefix == "M" else prefix), kind
    return "", None


def starts_without_begin(tags: list[str]) -> int | None:
    """Index of the first I- tag that does not continue an entity of its type (IOB1 style), or None."""
    prev_kind = None
    for i, tag in enumerate(tags):
        prefix, kind = split_tag(tag)
        if prefix == "I" and prev_kind != kind:
            return i
        prev_kind = kind if prefix in ("B", "I") else None
    return None


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """An I-X that does not continue an X entity begins one: B-X. The identity on valid IOB2."""
    out, prev_kind = [], None
    for tag in tags:
        prefix, kind = split_tag(tag)
        out.append(f"B-{kind}" if prefix == "I" and prev_kind != kind else tag)
        prev_kind = kind if prefix in ("B", "I") else None
    return out


def bioes_error(tags: list[str]) -> int | None:
    """Index of the first tag that breaks BIOES (B/I must be followed by I/E of the same type;
    I/E must follow B/I of the same type), or None."""
    open_kind = None
    for i, tag in enumerate(tags):
        prefix, kind = split_tag(tag)
        if prefix in ("I", "E"):
            if open_kind != kind:
                return i
        elif open_kind is not None:
            return i  # O, B or S while an entity is still open
        open_kind = kind if prefix in ("B", "I") else None
    return len(tags) - 1 if open_kind is not None and tags else None


def entity_spans(tags: list[str]) -> list[tuple[int, int, str]]:
    """(start, end, type) of every entity, read leniently (the repair rule): B- and S- begin an
    entity; an I- or E- that does not continue an entity of its type begins one; E- and S- end
    one. Works for IOB1, IOB2 and BIOES."""
    spans, start, open_kind = [], None, None
    for i, tag in enumerate(tags):
        prefix, kind = split_tag(tag)
        continues = prefix in ("I", "E") and open_kind == kind
        if not continues and open_kind is not None:
            spans.append((start, i, open_kind))
            open_kind = None
        if prefix in ("B", "S") or (prefix in ("I", "E") and not continues):
            start, open_kind = i, kind
        if prefix in ("E", "S") and open_kind is not None:
            spans.append((start, i + 1, open_kind))
            open_kind = None
    if open_kind is not None:
        spans.append((start, len(tags), open_kind))
    return spans


def tags_from_spans(spans: list[tuple[int, int, str]], n: int, scheme: str) -> list[str]:
    tags = ["O"] * n
    for start, end, kind in spans:
        if ends(scheme) and end - start == 1:
            tags[start] = f"S-{kind}"
            continue
        tags[start] = f"B-{kind}"
        for i in range(start + 1, end):
            tags[i] = f"{inner(scheme)}-{kind}"
        if ends(scheme):
            tags[end - 1] = f"E-{kind}"
    return tags


def repair(tags: list[str], scheme: str) -> list[str]:
    """A predicted sequence made valid in `scheme` (IOB2, BIOES or BMES) by the rule of `entity_spans`."""
    return tags_from_spans(entity_spans(tags), len(tags), scheme)


def tag_names(kinds: list[str], scheme: str) -> list[str]:
    """The label set for these entity types: O, then each type's tags in prefix order."""
    return ["O"] + [f"{p}-{k}" for k in sorted(kinds) for p in PREFIXES[scheme]]


def subword_tags(tag: str, pieces: int, scheme: str) -> list[str]:
    """The tags of a word's sub-words when every sub-word is labelled: the entity goes on across
    them (B- on the first piece, I- after; in BIOES the word's end stays E-, a single word S- -> B I.. E)."""
    prefix, kind = split_tag(tag)
    if pieces == 1 or prefix == "O":
        return [tag] * pieces
    mid = f"{inner(scheme)}-{kind}"
    first = {"B": f"B-{kind}", "S": f"B-{kind}"}.get(prefix, mid)
    last = {"E": f"E-{kind}", "S": f"E-{kind}"}.get(prefix, mid) if ends(scheme) else mid
    return [first, *[mid] * (pieces - 2), last]


# ---------------------------------------------------------------------------------------
# Strict entity scoring: seqeval's `mode="strict"` (IOB2 / IOBES schemes), in plain Python.
# seqeval's last release is from 2020 and comes only as source, which a cold install would have
# to build; tests/test_tags_scoring.py holds these scores equal to seqeval's on real files.


def strict_entities(tags: list[str], scheme: str) -> list[tuple[int, int, str]]:
    """(start, end, type) of every entity that is well formed in `scheme` (IOB2 or BIOES), as
    seqeval's strict mode reads it: in IOB2 an entity is B-X followed by any run of I-X (a stray
    I- is no entity); in BIOES it is S-X, or B-X, I-X..., E-X (a B- that does not reach its E-
    is none). Raises ValueError on a prefix the scheme does not have."""
    bioes = ends(scheme)  # BMES reads as BIOES (split_tag turns M- into I-)
    allowed = PREFIXES["BIOES" if bioes else "IOB2"] + "O"
    spans, i, n = [], 0, len(tags)
    parsed = [split_tag(t) for t in tags]
    for t, (prefix, _) in zip(tags, parsed):
        if prefix not in allowed:
            raise ValueError(f"tag {t!r} is not valid in {scheme}")
    while i < n:
        prefix, kind = parsed[i]
        if prefix not in ("B", "S") if bioes else prefix != "B":
            i += 1
            continue
        end, last = i + 1, prefix
        if prefix == "B":
            inside = ("I", "E") if bioes else ("I",)
            while end < n and last in ("B", "I") and parsed[end][0] in inside and parsed[end][1] == kind:
                last = parsed[end][0]
                end += 1
        if not bioes or last in ("E", "S"):
            spans.append((i, end, kind))
        i = end
    return spans


def strict_scores(gold: list[list[str]], pred: list[list[str]], scheme: str) -> dict:
    """Entity-level precision, recall and F1 over all sentences, micro-averaged and per type (a
    type only predicted is listed with support 0; 0/0 scores 0), as seqeval's
    `classification_report(mode="strict", zero_division=0)`.

    Returns {"micro": {...}, "per_type": {type: {...}}}, each {precision, recall, f1, support}."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    true_sets: dict[str, set] = {}
    pred_sets: dict[str, set] = {}
    for sid, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {sid}: {len(g)} gold tags but {len(p)} predicted")
        for sets, tags in ((true_sets, g), (pred_sets, p)):
            for start, end, kind in strict_entities(tags, scheme):
                sets.setdefault(kind, set()).add((sid, start, end))

    def score(tp: int, n_pred: int, n_true: int) -> dict:
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "support": n_true}

    per_type, totals = {}, [0, 0, 0]
    for kind in sorted(true_sets.keys() | pred_sets.keys()):
        t, p = true_sets.get(kind, set()), pred_sets.get(kind, set())
        counts = (len(t & p), len(p), len(t))
        per_type[kind] = score(*counts)
        totals = [a + b for a, b in zip(totals, counts)]
    return {"micro": score(*totals), "per_type": per_type}
