"""Token classification (NER): one tag per word, scored by entity (seqeval, strict mode).

- Words are split into sub-words by the model's fast tokenizer; the first sub-word of a word
  carries its tag and the rest are ignored (-100), as transformers' run_ner does; with
  `label_all_subwords` every sub-word is labelled, the entity going on across them.
- A sentence longer than data.max_length is split into overlapping windows (`stride` tokens
  shared, windows start at word boundaries) and merged back: each word is read from the window
  where it has the most context on both sides. Nothing is cut.
- Predictions are made valid before scoring and decoding: an I-/E- tag that does not continue
  an entity of its type begins one (`tags.entity_spans`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from weitiao.data.examples import Examples, LabelSet
from weitiao.errors import UserError
from weitiao.schema import Section
from weitiao.tasks import register_task
from weitiao.tasks import tags as T
from weitiao.tasks.text import ensure_pad_token, load_saved, load_tokenizer, with_head

if TYPE_CHECKING:
    import torch


class Options(Section):
    """The `task:` section of a token classifier."""

    type: Literal["token_classification"] = "token_classification"
    scheme: Literal["auto", "IOB1", "IOB2", "BIOES"] = "auto"  # auto: BIOES when E-/S- tags occur, else IOB (IOB1 converted)
    label_all_subwords: bool = False  # label every sub-word (B- -> I- on continuations), not only the first
    stride: int | None = Field(None, ge=1)  # tokens shared by the windows of a long sentence; default data.max_length // 4


# ---------------------------------------------------------------------------------------
# Reading


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
    for n, line in enumerate(read_utf8(p, field).split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            if words:
                sentences.append(Sentence(words, tags, lines[0], lines))
                words, tags, lines = [], [], []
            continue
        cols = [c for c in line.split("\t")] if "\t" in line else line.split()
        cols = [c.strip() for c in cols]
        if cols[0].startswith("-DOCSTART-"):
            continue
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


def read_rows(path: str, field: str, data, need_tags: bool = True) -> list[Sentence]:
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
        bad = next((w for w in words if not isinstance(w, str) or not w.strip()), None)
        if bad is not None:
            raise UserError(field, f"'{path}' line {line}: word {bad!r} is not a non-empty string", "give every word as text")
        out.append(Sentence([w.strip() for w in words], list(tags), line))
    return out


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
            sentences = read_rows(path, field, self.data, need_tags=False)
        return Examples([tuple(s.words) for s in sentences], None, None, [s.line for s in sentences], path)

    def read(self, path: str, field: str, labels: LabelSet | None) -> tuple[Examples, LabelSet]:
        sentences = read_conll(path, field) if self._format(path) == "conll" else read_rows(path, field, self.data)
        sentences = self._named_ids(sentences, path, field)
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
        return "BIOES" if self.found == "BIOES" else "IOB2"

    def _named_ids(self, sentences: list[Sentence], path: str, field: str) -> list[Sentence]:
        """Tags stored as ids (a saved Hugging Face dataset) become names through data.labels."""
        if not any(isinstance(t, int) and not isinstance(t, bool) for s in sentences for t in s.tags):
            return [Sentence(s.words, [str(t).strip() for t in s.tags], s.line, s.tag_lines) for s in sentences]
        names = self.data.labels
        if not names:
            raise UserError("data.labels", f"the tags in '{path}' are ids, not names", "list the tag names in id order in data.labels, e.g. [O, B-PER, I-PER]")
        for s in sentences:
            bad = next((t for t in s.tags if not isinstance(t, int) or not 0 <= t < len(names)), None)
            if bad is not None:
                raise UserError(field, f"'{path}' line {s.line}: tag id {bad!r} is not in data.labels ({len(names)} names)", "fix the id, or list every tag in data.labels")
        return [Sentence(s.words, [names[t] for t in s.tags], s.line, s.tag_lines) for s in sentences]

    def _given_labels(self, field: str) -> LabelSet | None:
        if not self.data.labels:
            return None
        bad = next((n for n in self.data.labels if not T.split_tag(str(n))[0]), None)
        if bad is not None:
            raise UserError("data.labels", f"{bad!r} is not a tag", "list tags such as O, B-PER, I-PER")
        return LabelSet(self.data.labels)

    def _detect(self, sentences: list[Sentence], path: str, field: str) -> str:
        """The scheme of the training data: as configured, else BIOES when E-/S- occur, IOB1 when an
        entity starts with I-, else IOB2."""
        if self.scheme != "auto":
            return self.scheme
        if any(T.split_tag(t)[0] in ("E", "S") for s in sentences for t in s.tags):
            return "BIOES"
        return "IOB1" if any(T.starts_without_begin(s.tags) is not None for s in sentences) else "IOB2"

    def _encode(self, s: Sentence, scheme: str, labels: LabelSet, path: str, field: str) -> list[int]:
        tags = s.tags
        for i, tag in enumerate(tags):
            prefix = T.split_tag(tag)[0]
            if not prefix:
                raise UserError(field, f"'{path}' line {_line(s, i)}: tag {tag!r} is not O or B-/I-/E-/S-TYPE", "fix the tag (e.g. B-person)")
            if prefix in ("E", "S") and scheme != "BIOES":
                raise UserError(field, f"'{path}' line {_line(s, i)}: tag {tag!r} is outside the {scheme} scheme of data.train (mixed schemes?)",
                                "use one scheme in every file, or set task.scheme")
        if scheme == "BIOES":
            bad = T.bioes_error(tags)
            if bad is not None:
                raise UserError(field, f"'{path}' line {_line(s, bad)}: tag {tags[bad]!r} breaks BIOES (after {tags[bad - 1] if bad else 'the start'!r}; mixed schemes?)",
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

    def stratify_key(self, ex: Examples) -> list | None:
        """The set of entity types in each sentence (B-/S- tags), so that rare types reach every part."""
        return None if ex.labels is None else [tuple(sorted(set(i for i in x if i))) for x in ex.labels]


def _line(s: Sentence, i: int) -> int:
    return s.tag_lines[i] if s.tag_lines else s.line


def label_scheme(names: list[str]) -> str:
    return "BIOES" if any(T.split_tag(n)[0] in ("E", "S") for n in names) else "IOB2"


# ---------------------------------------------------------------------------------------
# Encoding: sub-words, windows


@dataclass
class Encoded:
    """Rows of token ids (one per window; a sentence that fits is one window) and where each word is read.

    input_ids: per row, with the model's special tokens. labels: per row, a tag id per token
    (-100: not trained), or None. reads: per row, (token position, word index) of the words
    this row answers for (each word exactly once over all rows of its sentence).
    """

    input_ids: list[list[int]]
    labels: list[list[int]] | None
    reads: list[list[tuple[int, int]]]
    sentence: list[int]  # the sentence of each row
    words: list[int]  # per sentence: its number of words
    gold: list[list[int]] | None  # per sentence: a tag id per word
    truncated: int = 0  # sentences split into windows
    unread: int = 0  # words the tokenizer gives no sub-word (they are predicted O)
    extra: dict = field(default_factory=dict)

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def examples(self) -> int:
        """Sentences encoded (a long one is several rows)."""
        return len(self.words)

    def subset(self, index: list[int]) -> "Encoded":
        pick = lambda xs: None if xs is None else [xs[i] for i in index]  # noqa: E731
        return Encoded(pick(self.input_ids), pick(self.labels), pick(self.reads), pick(self.sentence), self.words, self.gold)


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single sequence ([CLS] ... [SEP], <s> ... </s>)."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i:i + len(bare)] == bare:
            return full[:i], full[i + len(bare):]
    return [], []


def word_pieces(tokenizer, sentences: list[tuple[str, ...]]) -> list[list[list[int]]]:
    """Sub-word ids of every word: [sentence][word] -> ids (empty for a word the tokenizer drops)."""
    enc = tokenizer([list(s) for s in sentences], is_split_into_words=True, add_special_tokens=False)
    out = []
    for k, words in enumerate(sentences):
        pieces: list[list[int]] = [[] for _ in words]
        for token, w in zip(enc["input_ids"][k], enc.word_ids(k)):
            if w is not None:
                pieces[w].append(token)
        out.append(pieces)
    return out


def windows(starts: list[int], total: int, budget: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) token ranges covering `total` sub-words, each at most `budget` long, starting
    at a word start (`starts`), consecutive ones sharing about `stride` tokens."""
    if total <= budget:
        return [(0, total)]
    out, start = [], 0
    while True:
        end = min(start + budget, total)
        if end < total:
            inside = [b for b in starts if start < b <= end]
            end = inside[-1] if inside and inside[-1] > start else end  # end at a word boundary unless one word is longer than the window
        out.append((start, end))
        if end >= total:
            return out
        later = [b for b in starts if b > start and b >= end - stride]
        start = later[0] if later and later[0] < end else end


def encode(tokenizer, ex: Examples, max_length: int, label_all_subwords: bool = False, stride: int | None = None,
           names: list[str] | None = None) -> Encoded:
    """Tokenize every sentence once; long ones become overlapping windows (see the module docstring)."""
    before, after = special_tokens(tokenizer)
    budget = max_length - len(before) - len(after)
    stride = min(stride or max_length // 4, budget // 2)
    scheme = label_scheme(names) if names else "IOB2"
    index = {n: i for i, n in enumerate(names or [])}
    rows, labels, reads, sentence, split, unread = [], [], [], [], 0, 0
    for k, pieces in enumerate(word_pieces(tokenizer, ex.text)):
        flat, word_of, starts = [], [], []
        for w, ids in enumerate(pieces):
            starts.append(len(flat))
            flat += ids
            word_of += [w] * len(ids)
        unread += sum(not ids for ids in pieces)
        first = {starts[w]: w for w, ids in enumerate(pieces) if ids}
        spans = windows(sorted(first), len(flat), budget, stride)
        split += len(spans) > 1
        owner = {}  # word -> the window where it has most context
        for r, (a, b) in enumerate(spans):
            for pos, w in first.items():
                if a <= pos < b:
                    margin = min(pos - a, b - 1 - pos)
                    if w not in owner or margin > owner[w][1]:
                        owner[w] = (r, margin)
        gold = ex.labels[k] if ex.labels is not None else None
        for r, (a, b) in enumerate(spans):
            rows.append(before + flat[a:b] + after)
            sentence.append(k)
            reads.append([(len(before) + pos - a, w) for pos, w in sorted(first.items()) if a <= pos < b and owner[w][0] == r])
            if gold is not None:
                labels.append([-100] * len(before) + _row_labels(flat[a:b], word_of[a:b], starts, a, gold, names, index, scheme,
                                                                label_all_subwords, pieces) + [-100] * len(after))
    return Encoded(rows, labels if ex.labels is not None else None, reads, sentence, [len(s) for s in ex.text],
                   ex.labels, split, unread)


def _row_labels(tokens, word_of, starts, a, gold, names, index, scheme, all_subwords, pieces) -> list[int]:
    out = []
    for j, w in enumerate(word_of):
        pos = a + j
        if pos == starts[w] and not all_subwords:
            out.append(gold[w])
        elif not all_subwords:
            out.append(-100)
        else:
            tags = T.subword_tags(names[gold[w]], len(pieces[w]), scheme)
            out.append(index.get(tags[pos - starts[w]], gold[w]))
    return out


def collate(data: Encoded, index: list[int], pad_id: int, multiple: int = 1) -> dict:
    """input_ids, attention_mask: [batch, longest] (rounded up to `multiple`); labels: [batch, longest], -100 on padding."""
    import torch

    longest = -(-max(len(data.input_ids[i]) for i in index) // multiple) * multiple
    ids = torch.full((len(index), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(index), longest), dtype=torch.long)
    labels = torch.full((len(index), longest), -100, dtype=torch.long) if data.labels is not None else None
    for row, i in enumerate(index):
        n = len(data.input_ids[i])
        ids[row, :n] = torch.tensor(data.input_ids[i])
        mask[row, :n] = 1
        if labels is not None:
            labels[row, :n] = torch.tensor(data.labels[i])
    batch = {"input_ids": ids, "attention_mask": mask}
    if labels is not None:
        batch["labels"] = labels
    return batch


# ---------------------------------------------------------------------------------------
# Scores


def word_probs(outputs: list, enc: Encoded) -> list:
    """Per sentence: [words, num_labels] probabilities (rows merged back; an unread word: all zeros -> O)."""
    import numpy as np

    width = next((o.shape[1] for o in outputs if o is not None and len(o)), 1)
    out = [np.zeros((n, width), dtype=np.float32) for n in enc.words]
    for row, probs in enumerate(outputs):
        for (_, w), p in zip(enc.reads[row], probs):
            out[enc.sentence[row]][w] = p
    return out


def predicted_tags(probs, names: list[str]) -> tuple[list[str], list[float]]:
    """The tags of one sentence, repaired (see module docstring), and each word's probability of its tag."""
    scheme = label_scheme(names)
    raw = [names[int(p.argmax())] if p.any() else "O" for p in probs]
    tags = T.repair(raw, scheme)
    index = {n: i for i, n in enumerate(names)}
    return tags, [float(p[index[t]]) if p.any() else 1.0 for p, t in zip(probs, tags)]


def entity_metrics(gold: list[list[str]], pred: list[list[str]], scheme: str) -> dict:
    """seqeval in strict mode: entity-level precision/recall/F1 micro and per type, and word accuracy."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2, IOBES

    report = classification_report(gold, pred, mode="strict", scheme=IOBES if scheme == "BIOES" else IOB2, output_dict=True, zero_division=0)
    micro = report.pop("micro avg")
    for key in ("macro avg", "weighted avg"):
        report.pop(key, None)
    words = sum(len(s) for s in gold)
    right = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p))
    return {"f1": float(micro["f1-score"]), "precision": float(micro["precision"]), "recall": float(micro["recall"]),
            "token_accuracy": right / words if words else 0.0, "entities": int(micro["support"]), "n": len(gold),
            "per_type": {k: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]),
                             "support": int(v["support"])} for k, v in sorted(report.items())}}


# ---------------------------------------------------------------------------------------
# Raw text for `predict --text`


def words_of(text: str, tokenizer) -> tuple[tuple[str, ...], list[tuple[int, int]]]:
    """The words of a raw string as the model's tokenizer splits them before sub-words (whitespace
    and punctuation for BERT), with their character spans: text[start:end] is the word."""
    pre = tokenizer.backend_tokenizer.pre_tokenizer
    found = pre.pre_tokenize_str(text) if pre is not None else []
    spans = [(a, b) for _, (a, b) in found if text[a:b].strip()] if found else []
    if not spans:
        import re

        spans = [m.span() for m in re.finditer(r"\S+", text)]
    return tuple(text[a:b] for a, b in spans), spans


class TokenClassification:
    """A tag per word (named entities, parts of speech, ...)."""

    name = "token_classification"
    Options = Options
    data_keys = frozenset({"tokens_column", "tags_column"})
    peft_task_type = "TOKEN_CLS"
    reads_one_position = False
    too_long = "split into overlapping windows of data.max_length ({n} tokens) and merged back"
    too_long_note = "{k} of {n} sentences were longer than data.max_length ({m} tokens): split into overlapping windows and merged back"
    too_long_fix = "nothing was cut; raise data.max_length for fewer windows"

    def describe(self, opts) -> str:
        return "token classification"

    def metric_names(self, opts) -> tuple[str, ...]:
        return ("f1", "precision", "recall", "token_accuracy", "loss")

    def default_metric(self, opts) -> str:
        return "f1"

    def headline(self, metrics: dict) -> dict:
        return {k: metrics[k] for k in self.metric_names(None) if metrics.get(k) is not None}

    def summary(self, metrics: dict) -> str:
        return ", ".join(f"{k}={metrics[k]:.4f}" for k in ("f1", "precision", "recall", "token_accuracy") if metrics.get(k) is not None)

    def reader(self, data, opts) -> TagReader:
        return TagReader(data, opts.scheme)

    def processor(self, model_path: str):
        tokenizer = load_tokenizer(model_path, need_fast=True)
        try:
            tokenizer([["a", "b"]], is_split_into_words=True)
        except Exception:  # byte-level BPE (RoBERTa, GPT-2) reads pre-split words only with a prefix space
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_path, add_prefix_space=True)
        return tokenizer

    def encode(self, tokenizer, examples: Examples, max_length: int, opts, names: list[str]) -> Encoded:
        return encode(tokenizer, examples, max_length, opts.label_all_subwords, opts.stride, names)

    def build(self, model_path, label_names, opts, dropout=None, attention=None, pad_token_id=None):
        from transformers import AutoModelForTokenClassification

        return with_head(AutoModelForTokenClassification, model_path, label_names, dropout, attention, pad_token_id)

    def collate(self, encoded: Encoded, index: list[int], pad_id: int, num_labels: int, opts, multiple: int = 1) -> dict:
        return collate(encoded, index, pad_id, multiple)

    def loss(self, logits: "torch.Tensor", labels: "torch.Tensor", opts, label_smoothing: float = 0.0):
        """(cross-entropy summed over the labelled tokens, their number)."""
        import torch.nn.functional as F

        total = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100,
                                label_smoothing=label_smoothing, reduction="sum")
        return total, int((labels != -100).sum())

    def count_targets(self, batch: dict) -> int:
        return int((batch["labels"] != -100).sum())

    def outputs(self, logits, encoded: Encoded, index: list[int], opts) -> list:
        import torch

        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return [probs[row, [pos for pos, _ in encoded.reads[i]]] for row, i in enumerate(index)]

    def metrics(self, outputs: list, encoded: Encoded, label_names: list[str], opts) -> dict:
        gold = [[label_names[i] for i in s] for s in encoded.gold]
        pred = [predicted_tags(p, label_names)[0] for p in word_probs(outputs, encoded)]
        return entity_metrics(gold, pred, label_scheme(label_names))

    def decode(self, outputs: list, encoded: Encoded, examples: Examples, label_names: list[str], opts) -> list[dict]:
        rows = []
        for k, probs in enumerate(word_probs(outputs, encoded)):
            words = list(examples.text[k])
            text, spans = examples.meta[k] if examples.meta else _joined(words)
            tags, scores = predicted_tags(probs, label_names)
            entities = [{"text": text[spans[a][0]:spans[b - 1][1]], "type": kind, "start": spans[a][0], "end": spans[b - 1][1],
                         "score": round(sum(scores[a:b]) / (b - a), 6)} for a, b, kind in T.entity_spans(tags)]
            rows.append({"text": text, "entities": entities, "words": words, "tags": tags})
        return rows

    def csv_columns(self, rows: list[dict]):
        import json

        return ["text", "entities", "tags"], lambda r: [r["text"], json.dumps(r["entities"], ensure_ascii=False), " ".join(r["tags"])]

    def examples_from_texts(self, texts: list[str], tokenizer) -> Examples:
        split = [words_of(t, tokenizer) for t in texts]
        return Examples([w for w, _ in split], None, None, list(range(1, len(texts) + 1)), "--text",
                        meta=[(t, spans) for t, (_, spans) in zip(texts, split)])

    def load(self, model_dir):
        from transformers import AutoModelForTokenClassification

        return load_saved(AutoModelForTokenClassification, model_dir)


def _joined(words: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Pre-split words (a --file row) as one string joined by spaces, with each word's span."""
    spans, at = [], 0
    for w in words:
        spans.append((at, at + len(w)))
        at += len(w) + 1
    return " ".join(words), spans


TASK = register_task(TokenClassification())
__all__ = ["TASK", "Options", "TagReader", "encode", "collate", "ensure_pad_token"]
