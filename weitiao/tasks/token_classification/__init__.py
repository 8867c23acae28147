"""Token classification (NER): one tag per word, scored by entity (strict, as seqeval's strict mode).

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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from weitiao.data.examples import Examples
from weitiao.models.heads import load_saved, with_head
from weitiao.schema import Section
from weitiao.tasks import TaskDefaults, metrics_line, pick_metrics, register_task
from weitiao.tasks.common.rows import TokenRows
from weitiao.tasks.common.text import load_tokenizer, pad_rows
from weitiao.tasks.token_classification import tags as T
from weitiao.tasks.token_classification.reader import TagReader, label_scheme

if TYPE_CHECKING:
    import torch


class Options(Section):
    """The `task:` section of a token classifier."""

    type: Literal["token_classification"] = "token_classification"
    scheme: Literal["auto", "IOB1", "IOB2", "BIOES", "BMES"] = "auto"  # auto: BMES when M- tags occur, BIOES when E-/S- do, else IOB (IOB1 converted)
    label_all_subwords: bool = False  # label every sub-word (B- -> I- on continuations), not only the first
    stride: int | None = Field(None, ge=1)  # tokens shared by the windows of a long sentence; default data.max_length // 4


# ---------------------------------------------------------------------------------------
# Encoding: sub-words, windows


@dataclass
class Encoded(TokenRows):
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
    ids, mask = pad_rows(data.input_ids, index, pad_id, multiple)
    batch = {"input_ids": ids, "attention_mask": mask}
    if data.labels is not None:
        batch["labels"] = pad_rows(data.labels, index, -100, multiple)[0]
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
    """The tags of one sentence, repaired (see module docstring), and each word's score: the
    probability of its entity type (all of that type's tags together; O for O), which a repair
    that turns I-X into B-X leaves as it was."""
    scheme = label_scheme(names)
    raw = [names[int(p.argmax())] if p.any() else "O" for p in probs]
    tags = T.repair(raw, scheme)
    kinds = [T.split_tag(n)[1] for n in names]
    scores = [float(sum(x for x, k in zip(p, kinds) if k == T.split_tag(t)[1])) if p.any() else 1.0 for p, t in zip(probs, tags)]
    return tags, scores


def entity_metrics(gold: list[list[str]], pred: list[list[str]], scheme: str) -> dict:
    """Strict entity-level precision/recall/F1 (seqeval's strict mode), micro and per type, and word accuracy."""
    scores = T.strict_scores(gold, pred, "BIOES" if T.ends(scheme) else "IOB2")
    micro = scores["micro"]
    words = sum(len(s) for s in gold)
    right = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p))
    return {"f1": micro["f1"], "precision": micro["precision"], "recall": micro["recall"],
            "token_accuracy": right / words if words else 0.0, "entities": micro["support"], "n": len(gold),
            "per_type": scores["per_type"]}


# ---------------------------------------------------------------------------------------
# Raw text for `predict --text`


def words_of(text: str, tokenizer) -> tuple[tuple[str, ...], list[tuple[int, int]]]:
    """The words of a raw string, with their character spans (text[start:end] is the word): as the
    model's tokenizer splits it before sub-words (whitespace and punctuation for BERT, so that
    transformers' pipeline sees the same words), then without the leading space that byte-level
    and SentencePiece pre-tokenizers keep, and with punctuation split off as CoNLL data has it
    (BERT's rule: ASCII symbols and Unicode punctuation; a no-op on BERT's own words), and every CJK
    character a word of its own, as Chinese corpora (one character a line) and BERT have it."""
    pre = tokenizer.backend_tokenizer.pre_tokenizer
    found = [span for _, span in pre.pre_tokenize_str(text)] if pre is not None else [(0, len(text))]
    spans = []
    for a, b in found:
        start = None
        for i in range(a, b + 1):
            ch = text[i] if i < b else " "
            if ch.isspace() or _is_punctuation(ch) or _is_cjk(ch):
                if start is not None:
                    spans.append((start, i))
                start = None
                if not ch.isspace():
                    spans.append((i, i + 1))
            elif start is None:
                start = i
    return tuple(text[a:b] for a, b in spans), spans


def _is_cjk(ch: str) -> bool:
    """A CJK ideograph: a word of its own (BERT's rule, and the one-character-a-token Chinese corpora's)."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _is_punctuation(ch: str) -> bool:
    import unicodedata

    cp = ord(ch)
    return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or unicodedata.category(ch).startswith("P")


class TokenClassification(TaskDefaults):
    """A tag per word (named entities, parts of speech, ...)."""

    name = "token_classification"
    pipeline_tag = "token-classification"
    distillable = distill_same_tokens = True
    report_section = "entities"
    Options = Options
    data_keys = frozenset({"tokens_column", "tags_column"})
    peft_task_type = "TOKEN_CLS"
    feature_cache = True  # a frozen bottom's output per token can be cached
    reads_one_position = False
    takes_images = False
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
        return pick_metrics(metrics, self.metric_names(None))

    def summary(self, metrics: dict) -> str:
        return metrics_line(metrics, ("f1", "precision", "recall", "token_accuracy"))

    def reader(self, data, opts) -> TagReader:
        return TagReader(data, opts.scheme)

    def processor(self, model_path: str, model_name: str | None = None, max_length: int | None = None):
        tokenizer = load_tokenizer(model_path, model_name, max_length, need_fast=True)
        try:
            tokenizer([["a", "b"]], is_split_into_words=True)
        except Exception:  # byte-level BPE (RoBERTa, GPT-2) reads pre-split words only with a prefix space
            tokenizer = load_tokenizer(model_path, model_name, max_length, need_fast=True, add_prefix_space=True)
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

    def examples_from_texts(self, texts: list[str], tokenizer, opts) -> Examples:
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
__all__ = ["TASK", "Options", "TagReader", "encode", "collate"]
