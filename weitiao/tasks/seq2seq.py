"""Sequence to sequence: an encoder-decoder (T5, BART, ...: `AutoModelForSeq2SeqLM`) learns to write
the target text of each source text (translation, summarization, rewriting).

- Data: `data.source_column` and `data.target_column` of any table.
- The loss is on every target token (its EOS included), summed over the batch; the decoder reads
  the target shifted right (the model's own rule). Label smoothing applies.
- Evaluation: loss and perplexity, and the validation sources translated (greedy, or beam search
  with `task.generate.num_beams`) and scored against their targets with BLEU and chrF
  (sacrebleu); the first `generate.samples` are written to generations.jsonl.
- Layer-aware strategies see both stacks (`strategies.layers.encoder_decoder_parts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from weitiao.data.examples import Examples, LabelSet
from weitiao.errors import UserError
from weitiao.schema import Section
from weitiao.tasks import TaskDefaults, metrics_line, pick_metrics, register_task
from weitiao.tasks.common.generation import GenerateOptions as LMGenerateOptions
from weitiao.tasks.common.rows import TokenRows


class GenerateOptions(LMGenerateOptions):
    """A causal LM's generation options, beam search, and BLEU/chrF of every validation row by default."""

    num_beams: int = Field(1, ge=1)  # 1: greedy
    eval_rows: int | None = Field(None, ge=1)  # validation rows generated for BLEU/chrF at every evaluation (default: all)
    metrics: list[Literal["bleu", "chrf", "rouge_l"]] = ["bleu", "chrf"]


class Options(Section):
    """The `task:` section of a sequence-to-sequence model."""

    type: Literal["seq2seq"] = "seq2seq"
    prefix: str = ""  # put before every source (T5's "translate English to German: ")
    generate: GenerateOptions = GenerateOptions()


@dataclass
class Encoded(TokenRows):
    input_ids: list[list[int]]
    labels: list[list[int]] | None
    sources: list[str]
    references: list[str] | None
    truncated: int = 0  # sources or targets longer than data.max_length, cut to it

    @property
    def examples(self) -> int:
        return len(self.input_ids)

    def subset(self, index: list[int]) -> "Encoded":
        pick = lambda xs: None if xs is None else [xs[i] for i in index]  # noqa: E731
        return Encoded(pick(self.input_ids), pick(self.labels), pick(self.sources), pick(self.references))


@dataclass
class PairReader:
    data: object
    restrict_labels: bool = False
    stratify_name: str = "nothing (no labels)"

    def read(self, path: str, field: str, labels: LabelSet | None) -> tuple[Examples, LabelSet]:
        return self._read(path, field, self.data.target_column), LabelSet([])

    def read_inputs(self, path: str, field: str) -> Examples:
        return self._read(path, field, None)

    def _read(self, path: str, field: str, target: str | None) -> Examples:
        from weitiao.data.examples import take_columns
        from weitiao.data.sources import read_table

        d = self.data
        table = read_table(path, field, d.format, d.header, d.columns, tuple(c for c in (d.source_column, target) if c))
        for key, name in (("source_column", d.source_column), ("target_column", target)):
            if name is not None and name not in table.columns:
                from weitiao.data.sources import shown_names

                raise UserError(f"data.{key}", f"column '{name}' not in {field} '{table.path}'; its columns are {shown_names(table.columns)}",
                                f"set data.{key} to one of them")
        sources, targets, _ = take_columns(table, field, d.source_column, target, None)
        return Examples(sources, targets, None, table.lines, table.path)

    def check_labels(self, labels, field, path) -> None:
        return None

    def stratify_key(self, ex, names) -> None:
        return None


class Seq2Seq(TaskDefaults):
    """An encoder-decoder writing a target text for each source text."""

    name = "seq2seq"
    generates = True
    pipeline_tag = "text2text-generation"
    Options = Options
    data_keys = frozenset({"source_column", "target_column"})
    peft_task_type = "SEQ_2_SEQ_LM"
    feature_cache = False
    reads_one_position = False
    takes_images = False
    default_max_length = 256

    too_long = "cut to data.max_length ({n} tokens)"
    too_long_note = "{k} of {n} sources or targets were longer than data.max_length ({m} tokens) and were cut to it"
    too_long_fix = "raise data.max_length to keep more of them"

    def describe(self, opts) -> str:
        return "sequence to sequence"

    def metric_names(self, opts) -> tuple[str, ...]:
        return ("perplexity", "loss", "token_accuracy", *opts.generate.metrics)

    def default_metric(self, opts) -> str:
        return opts.generate.metrics[0] if opts.generate.metrics else "perplexity"

    def headline(self, metrics: dict) -> dict:
        keys = ("bleu", "chrf", "rouge_l", "perplexity", "token_accuracy", "loss")
        return pick_metrics(metrics, keys)

    def summary(self, metrics: dict) -> str:
        keys = ("bleu", "chrf", "rouge_l", "perplexity", "token_accuracy")
        return metrics_line(metrics, keys)

    def reader(self, data, opts) -> PairReader:
        return PairReader(data)

    def processor(self, model_path: str, model_name: str | None = None, max_length: int | None = None):
        from weitiao.tasks.common.text import load_tokenizer

        return load_tokenizer(model_path, model_name, max_length)

    def encode(self, tokenizer, examples: Examples, max_length: int, opts, names) -> Encoded:
        sources = [opts.prefix + s for s in examples.text]
        enc = tokenizer(sources, truncation=True, max_length=max_length)["input_ids"]
        whole = tokenizer(sources, truncation=False)["input_ids"]
        truncated = sum(len(w) > max_length for w in whole)
        labels = None
        if examples.pair is not None:
            labels = tokenizer(text_target=list(examples.pair), truncation=True, max_length=max_length)["input_ids"]
            whole = tokenizer(text_target=list(examples.pair), truncation=False)["input_ids"]
            truncated += sum(len(w) > max_length for w in whole)
        return Encoded(enc, labels, list(examples.text), list(examples.pair) if examples.pair is not None else None, truncated)

    def build(self, model_path, label_names, opts, dropout=None, attention=None, pad_token_id=None):
        from transformers import AutoConfig, AutoModelForSeq2SeqLM

        from weitiao.models.heads import DROPOUT_KEYS

        config = AutoConfig.from_pretrained(model_path)
        if not getattr(config, "is_encoder_decoder", False):
            raise UserError("model", f"'{model_path}' is not an encoder-decoder ({config.model_type})",
                            "use a T5, BART, mT5, Marian or similar model; for a decoder-only model use task: causal_lm")
        for kind, p in (dropout or {}).items():
            if p is not None and kind != "classifier":
                for key in DROPOUT_KEYS[kind] + (("dropout_rate",) if kind == "hidden" else ()):
                    if hasattr(config, key):
                        setattr(config, key, p)
        config.use_cache = False
        kwargs = {"attn_implementation": attention} if attention else {}
        return AutoModelForSeq2SeqLM.from_pretrained(model_path, config=config, **kwargs), set()

    def collate(self, encoded: Encoded, index: list[int], pad_id: int, num_labels: int, opts, multiple: int = 1) -> dict:
        from weitiao.tasks.common.text import pad_rows

        ids, mask = pad_rows(encoded.input_ids, index, pad_id, multiple)
        batch = {"input_ids": ids, "attention_mask": mask}
        if encoded.labels is not None:
            batch["labels"] = pad_rows(encoded.labels, index, -100, multiple)[0]
        return batch

    def forward(self, model, batch: dict, labels):
        """Logits of every target position; the decoder's input is the target shifted right (the model's rule)."""
        return model(**batch, labels=labels, use_cache=False).logits

    def loss(self, logits, labels, opts, label_smoothing: float = 0.0):
        import torch.nn.functional as F

        total = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                                reduction="sum", label_smoothing=label_smoothing)
        return total, int((labels != -100).sum())

    def count_targets(self, batch: dict) -> int:
        return int((batch["labels"] != -100).sum())

    def outputs(self, logits, encoded, index, opts) -> list:
        """Per row: [summed negative log-likelihood, target tokens, correct tokens] (the labels are the batch's own)."""
        import torch
        import torch.nn.functional as F

        from weitiao.tasks.common.text import pad_rows

        labels = pad_rows(encoded.labels, index, -100)[0].to(logits.device)[:, :logits.shape[1]]
        nll = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
        real = labels != -100
        correct = (logits.argmax(-1) == labels) & real
        rows = torch.stack([nll.sum(1).double(), real.sum(1).double(), correct.sum(1).double()], dim=1)
        return list(rows.cpu().numpy())

    def metrics(self, outputs: list, encoded: Encoded, label_names, opts) -> dict:
        from weitiao.tasks.common.generation import token_metrics

        return token_metrics(outputs, encoded.examples)

    def generations(self, model, encoded: Encoded, tokenizer, opts, device) -> tuple[dict, list[dict]]:
        """The sources translated (the first generate.eval_rows), scored against their targets; the first
        generate.samples as records for generations.jsonl."""
        from weitiao.tasks.common.generation import text_scores

        g = opts.generate
        if encoded.references is None or not len(encoded):
            return {}, []
        rows = list(range(min(len(encoded), g.eval_rows or len(encoded))))
        out = self._generate(model, tokenizer, [encoded.input_ids[i] for i in rows], g, device, temperature=0.0)
        refs = [encoded.references[i] for i in rows]
        records = [{"source": encoded.sources[i], "reference": refs[i], "generation": out[i]} for i in rows[:g.samples]]
        return text_scores(out, refs, g.metrics), records

    def _generate(self, model, tokenizer, inputs: list[list[int]], g, device, temperature: float | None = None,
                  max_new_tokens: int | None = None, top_p: float | None = None, num_beams: int | None = None, batch_size: int = 16) -> list[str]:
        """Each input's generated target: task.generate's settings, those given overriding them."""
        from weitiao.tasks.common.generation import Sampling, generate, stop_ids

        sampling = Sampling(max_new_tokens or g.max_new_tokens, g.temperature if temperature is None else temperature, top_p or g.top_p,
                            num_beams or g.num_beams)
        return generate(model, tokenizer, inputs, sampling, stop_ids(tokenizer, model), device, batch_size)

    def answer(self, run, examples: Examples, sampling, batch_size: int | None = None) -> list[dict]:
        """`predict`: each source's generated target."""
        from weitiao.runtime import inference_device

        enc = self.encode(run.tokenizer, examples, run.data.max_length, run.opts, [])
        device = inference_device()
        out = self._generate(run.model.to(device), run.tokenizer, enc.input_ids, run.opts.generate, device, sampling.temperature,
                             sampling.max_new_tokens, sampling.top_p, sampling.num_beams, batch_size or 16)
        return [{"source": s, "generation": o} | ({"reference": r} if examples.pair is not None else {})
                for s, o, r in zip(examples.text, out, examples.pair or [None] * len(out))]

    def decode(self, outputs: list, encoded, examples: Examples, label_names, opts) -> list[dict]:
        return [{"tokens": int(o[1]), "loss": float(o[0] / o[1]) if o[1] else None} for o in outputs]

    def csv_columns(self, rows: list[dict]):
        keys = list(rows[0]) if rows else ["source", "generation"]
        return keys, lambda r: [r.get(k) for k in keys]

    def examples_from_texts(self, texts: list[str], tokenizer, opts) -> Examples:
        return Examples([t.strip() for t in texts], None, None, list(range(1, len(texts) + 1)), "--text")

    def load(self, model_dir):
        from transformers import AutoModelForSeq2SeqLM

        from weitiao.models.heads import load_saved

        return load_saved(AutoModelForSeq2SeqLM, model_dir)


TASK = register_task(Seq2Seq())
