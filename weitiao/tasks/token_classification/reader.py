"""Reading tagged sentences for token classification: CoNLL files, or rows with a list of words
and a list of tags; the scheme detected (or as configured) and checked, IOB1 converted to IOB2,
the label set settled. Every refusal names the file, the line and the fix."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from weitiao.data.examples import Examples, LabelSet
from weitiao.errors import UserError
from weitiao.tasks.token_classification import tags as T


@dataclass
class Sentence:
    words: list[str]
    tags: list  # tag names (or ids, from a file that stores ids)
    line: int  # where it starts (1-based line, or record number)
    tag_lines: list[int] | None = None  # CoNLL: the line of each word


def read_conll(path: str, field: str, need_tags: bool = True) -> list[Sentence]:
    """Whitespace-separated columns (token first, tag last), a blank line between sentences,
    -DOCSTART- lines skipped. Tab-separated files split on tabs only, so a token may hold spaces."""
    from weitiao.data.sources import read_utf8

    p = Path(path)
    if not p.is_file():
        raise UserError(field, f"file '{path}' does not exist", "check the path (relative paths start from the current directory)")
    sentences, words, tags, lines = [], [], [], []
    text = read_utf8(p, field).replace("\r\n", "\n").replace("\r", "\n")  # Windows and old Mac line ends
    for n, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip(" \t")
        if not line.strip(" \t"):
            if words:
                sentences.append(Sentence(words, tags, lines[0], lines))
                words, tags, lines = [], [], []
            continue
        # Tabs when the line has one (a token may then hold spaces), else spaces; never other Unicode
        # whitespace, which can sit inside a token ("1\u00a0000").
        cols = [c.strip(" ") for c in line.split("\t")] if "\t" in line else re.split(r" +", line.strip(" "))
        if cols[0].startswith("-DOCSTART-"):
            continue
        if not cols[0]:
            raise UserError(field, f"'{path}' line {n} has an empty token before its tag ({line!r})", "give the token, or remove the line")
        if need_tags and (len(cols) < 2 or not cols[-1]):
            raise UserError(field, f"'{path}' line {n} has one column ({line.strip()!r}); a CoNLL line is 'token<TAB>tag'",
                            "add the tag after the token, or leave a blank line between sentences")
        words.append(cols[0])
        tags.append(cols[-1] if len(cols) > 1 else None)
        lines.append(n)
    if words:
        sentences.append(Sentence(words, tags, lines[0], lines))
    if not sentences:
        raise UserError(field, f"'{path}' holds no sentences", "give a CoNLL file: one 'token<TAB>tag' per line, a blank line between sentences")
    return sentences


def read_rows(path: str, field: str, data, need_tags: bool = True) -> tuple[list[Sentence], list[str] | None]:
    """JSONL / JSON / Parquet / a saved dataset with a list-of-words and a list-of-tags column."""
    from weitiao.data.sources import read_table, shown_names

    table = read_table(path, field, data.format, data.header, data.columns, (data.tokens_column, data.tags_column))
    for key, name in (("tokens_column", data.tokens_column), ("tags_column", data.tags_column)):
        if name not in table.columns and (need_tags or key == "tokens_column"):
            raise UserError(f"data.{key}", f"column '{name}' not in {field} '{table.path}'; its columns are {shown_names(table.columns)}",
                            f"set data.{key} to the column holding a list per row")
    out = []
    for row, line in zip(table.rows, table.lines):
        words, tags = row.get(data.tokens_column), row.get(data.tags_column)
        if not need_tags:
            tags = [None] * len(words) if isinstance(words, (list, tuple)) else tags
        for name, value in ((data.tokens_column, words), (data.tags_column, tags)):
            if not isinstance(value, (list, tuple)):
                raise UserError(field, f"'{path}' line {line}: column '{name}' holds {type(value).__name__}, not a list",
                                "give a list of words and a list of tags per row (for one string per row, use task: classification)")
        if not words:
            raise UserError(field, f"'{path}' line {line} is an empty sentence (no words)", "drop that row, or give it words and tags")
        if len(words) != len(tags):
            raise UserError(field, f"'{path}' line {line} has {len(words)} words but {len(tags)} tags", "give one tag per word")
        bad = next((w for w in words if not isinstance(w, str) or not w.strip() or not _encodable(w)), None)
        if bad is not None:
            raise UserError(field, f"'{path}' line {line}: word {bad!r} is not a non-empty string of valid Unicode", "give every word as text")
        out.append(Sentence([w.strip() for w in words], list(tags), line))
    return out, (table.class_names or {}).get(data.tags_column)


@dataclass
class TagReader:
    """Sentences with a tag per word; the label set is the scheme's tags for the entity types seen."""

    data: object  # the `data` config section
    scheme: str = "auto"  # as configured; `found` is what the training data turned out to be
    restrict_labels: bool = False  # a tag set is the scheme's, whole: I-X stays though only B-X was seen
    stratify_name: str = "entity types"
    found: str | None = None

    def _format(self, path: str) -> str:
        fmt = self.data.format
        if fmt == "auto" and not Path(path).is_dir() and Path(path).suffix.lower() not in (".jsonl", ".json", ".ndjson", ".parquet"):
            fmt = "conll"  # .conll, .txt, .bio, .iob, test.annotated ...
        if fmt in ("csv", "tsv"):
            raise UserError("data.format", f"'{fmt}' cannot hold a list of words per row", "use conll, jsonl, json, parquet or hf for token classification")
        return fmt

    def read_inputs(self, path: str, field: str) -> Examples:
        """Sentences to tag (a CoNLL file of words, tags optional; or rows with the tokens column)."""
        if self._format(path) == "conll":
            sentences = read_conll(path, field, need_tags=False)
        else:
            sentences = read_rows(path, field, self.data, need_tags=False)[0]
        return Examples([tuple(s.words) for s in sentences], None, None, [s.line for s in sentences], path)

    def read(self, path: str, field: str, labels: LabelSet | None) -> tuple[Examples, LabelSet]:
        sentences, names = (read_conll(path, field), None) if self._format(path) == "conll" else read_rows(path, field, self.data)
        sentences = self._named_ids(sentences, path, field, names)
        if labels is None:
            self.found = self._detect(sentences, path, field)
            kinds = sorted({k for s in sentences for t in s.tags for k in [T.split_tag(t)[1]] if k})
            labels = self._given_labels(field) or LabelSet(T.tag_names(kinds, self.trained_scheme))
        scheme = label_scheme(labels.names)
        ids = [self._encode(s, scheme, labels, path, field) for s in sentences]
        if not any(i != labels.index.get("O") for x in ids for i in x):
            raise UserError(field, f"'{path}' has no entities at all (every tag is O)",
                            "give data with tagged entities (check data.tags_column / the last CoNLL column)")
        return Examples([tuple(s.words) for s in sentences], None, ids, [s.line for s in sentences], path), labels

    @property
    def trained_scheme(self) -> str:
        return self.found if T.ends(self.found or "") else "IOB2"

    def _named_ids(self, sentences: list[Sentence], path: str, field: str, stored: list[str] | None) -> list[Sentence]:
        """Tags stored as ids become names: data.labels, else the dataset's own ClassLabel names."""
        if not any(isinstance(t, int) and not isinstance(t, bool) for s in sentences for t in s.tags):
            return [Sentence(s.words, [str(t).strip() for t in s.tags], s.line, s.tag_lines) for s in sentences]
        given = self._given_labels(field)
        if given is not None and stored and given.names != stored:
            raise UserError("data.labels", f"{given.names} differ from the tag names stored with '{path}' ({stored})",
                            "remove data.labels (the stored names are used), or list the same names in the same order")
        names = given.names if given is not None else stored
        if not names:
            raise UserError("data.labels", f"the tags in '{path}' are ids, not names", "list the tag names in id order in data.labels, e.g. [O, B-PER, I-PER]")
        for s in sentences:
            bad = next((t for t in s.tags if not isinstance(t, int) or not 0 <= t < len(names)), None)
            if bad is not None:
                raise UserError(field, f"'{path}' line {s.line}: tag id {bad!r} is not in data.labels ({len(names)} names)", "fix the id, or list every tag in data.labels")
        return [Sentence(s.words, [names[t] for t in s.tags], s.line, s.tag_lines) for s in sentences]

    def _given_labels(self, field: str) -> LabelSet | None:
        """The tag set of data.labels or data.labels_file, if given, checked to be a whole scheme's."""
        from weitiao.data import configured_labels

        given = configured_labels(self.data)
        if given is None:
            return None
        key, labels = given
        names = labels.names
        bad = next((n for n in names if not T.split_tag(n)[0]), None)
        if bad is not None:
            raise UserError(key, f"{bad!r} is not a tag", "list tags such as O, B-PER, I-PER")
        scheme = label_scheme(names)
        kinds = sorted({T.split_tag(n)[1] for n in names if T.split_tag(n)[1]})
        missing = [t for t in T.tag_names(kinds, scheme) if t not in names]
        if missing:  # a repaired prediction may need any tag of the scheme
            raise UserError(key, f"lacks {missing[0]!r}: {scheme} needs {', '.join(p + '-' for p in T.PREFIXES[scheme])} for every entity type, and O",
                            f"add {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        return labels

    def _detect(self, sentences: list[Sentence], path: str, field: str) -> str:
        """The scheme of the training data: as configured, else BMES when M- occurs, BIOES when E-/S-
        occur, IOB1 when an entity starts with I-, else IOB2."""
        if self.scheme != "auto":
            return self.scheme
        if any(t.startswith("M-") for s in sentences for t in s.tags):
            return "BMES"
        if any(T.split_tag(t)[0] in ("E", "S") for s in sentences for t in s.tags):
            return "BIOES"
        return "IOB1" if any(T.starts_without_begin(s.tags) is not None for s in sentences) else "IOB2"

    def _encode(self, s: Sentence, scheme: str, labels: LabelSet, path: str, field: str) -> list[int]:
        tags = s.tags
        for i, tag in enumerate(tags):
            prefix = T.split_tag(tag)[0]
            if not prefix:
                raise UserError(field, f"'{path}' line {_line(s, i)}: tag {tag!r} is not O or B-/I-/M-/E-/S-TYPE", "fix the tag (e.g. B-person)")
            if prefix in ("E", "S") and not T.ends(scheme):
                raise UserError(field, f"'{path}' line {_line(s, i)}: tag {tag!r} is outside the {scheme} scheme of data.train (mixed schemes?)",
                                "use one scheme in every file, or set task.scheme")
        if T.ends(scheme):
            bad = T.bioes_error(tags)
            if bad is not None:
                raise UserError(field, f"'{path}' line {_line(s, bad)}: tag {tags[bad]!r} breaks {scheme} (after {tags[bad - 1] if bad else 'the start'!r}; mixed schemes?)",
                                "fix the tags there, or set task.scheme to the file's scheme")
        else:
            start = T.starts_without_begin(tags)
            if start is not None and self.scheme == "IOB2":
                raise UserError(field, f"'{path}' line {_line(s, start)}: {tags[start]!r} begins an entity, which IOB2 does not allow",
                                f"tag it B-{T.split_tag(tags[start])[1]}, or set task.scheme: IOB1")
            tags = T.iob1_to_iob2(tags)
        out = []
        for i, tag in enumerate(tags):
            if tag not in labels.index:
                shown = labels.names if len(labels) <= 30 else labels.names[:30] + ["..."]
                raise UserError(field, f"'{path}' line {_line(s, i)}: unknown tag {tag!r}; the tags are {shown}",
                                "fix the tag, or list every tag in data.labels")
            out.append(labels.index[tag])
        return out

    def check_labels(self, labels: LabelSet, field: str, path: str) -> None:
        if len(labels) < 2:
            raise UserError(field, f"'{path}' has no entity types", "give data with tagged entities")

    def stratify_key(self, ex: Examples, names: list[str]) -> list | None:
        """The set of entity types in each sentence, so that rare types reach every part (a set seen
        only once shares the key of the rare ones; see `split.stratify_key`)."""
        from weitiao.data.split import stratify_key

        kinds = [T.split_tag(n)[1] for n in names]
        return None if ex.labels is None else stratify_key([sorted({kinds[i] for i in x if kinds[i]}) for x in ex.labels])


def _encodable(text: str) -> bool:
    """False for a string holding a lone surrogate (a JSON "\\udcff"), which no tokenizer can read."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _line(s: Sentence, i: int) -> int:
    return s.tag_lines[i] if s.tag_lines else s.line


def label_scheme(names: list[str]) -> str:
    """The scheme a label set is in: BMES (M- tags), BIOES (E-/S- tags) or IOB2."""
    if any(n.startswith("M-") for n in names):
        return "BMES"
    return "BIOES" if any(T.split_tag(n)[0] in ("E", "S") for n in names) else "IOB2"
