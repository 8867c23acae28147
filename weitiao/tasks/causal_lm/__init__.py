"""Causal language modelling: instruction tuning (SFT) on conversations, or plain text.

- Data (`data.format`): `alpaca` records {instruction, input, output}, `chat` records
  {messages: [{role, content}, ...]}, or `text` (a text column, or a .txt file whose blank-line
  separated paragraphs are documents); `auto` tells them apart by their fields.
- The loss is on the assistant's tokens by default (`train_on: responses`; `all`: every token),
  summed over the batch's target tokens; the loop divides by the target tokens of the whole
  accumulation window. Only the positions that are targets go through the output layer.
- Evaluation: loss and perplexity on held-out examples, and generations for a fixed set of
  held-out prompts beside their references (written to the run folder at every evaluation),
  optionally scored with ROUGE-L / BLEU / chrF.
- The text handling (templates, target masks, packing) is in `lm_text`; generation in `generation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from weitiao.data.examples import Examples, LabelSet
from weitiao.errors import UserError
from weitiao.schema import Section
from weitiao.tasks import TaskDefaults, metrics_line, pick_metrics, register_task
from weitiao.tasks.causal_lm.lm_text import END_OF_TURN, Encoded, alpaca_conversation
from weitiao.tasks.common.generation import GenerateOptions, token_metrics

if TYPE_CHECKING:
    import torch

RECORD_FORMATS = ("alpaca", "chat", "text")
ROLES = ("system", "user", "assistant", "tool")


class Options(Section):
    """The `task:` section of a causal language model."""

    type: Literal["causal_lm"] = "causal_lm"
    train_on: Literal["responses", "all"] = "responses"
    packing: bool = False  # several examples per row, attention kept inside each
    template: Literal["chatml", "alpaca", "plain"] | None = None  # for a model without a chat template of its own
    system: str | None = None  # a system message put first in every conversation that has none
    generate: GenerateOptions = GenerateOptions()


# ---------------------------------------------------------------------------------------
# Reading records


@dataclass
class LMReader:
    data: object
    opts: object
    restrict_labels: bool = False
    stratify_name: str = "nothing (no labels)"

    def read(self, path: str, field: str, labels: LabelSet | None) -> tuple[Examples, LabelSet]:
        return self.read_inputs(path, field), LabelSet([])

    def read_inputs(self, path: str, field: str) -> Examples:
        from weitiao.data.sources import read_table, read_utf8

        fmt = self.data.format
        p = Path(path)
        if p.suffix.lower() == ".txt" and fmt in ("auto", "text"):
            if not p.is_file():
                raise UserError(field, f"file '{path}' does not exist", "check the path (relative paths start from the current directory)")
            docs = [d.strip() for d in read_utf8(p, field).split("\n\n")]
            return Examples(docs, None, None, list(range(1, len(docs) + 1)), str(p))
        table = read_table(path, field, "auto" if fmt in RECORD_FORMATS else fmt, self.data.header, self.data.columns,
                           (self.data.text_column, "instruction", "output", "messages"))
        kind = fmt if fmt in RECORD_FORMATS else self.detect(table, field)
        if kind == "alpaca":
            texts = [self.alpaca(r, table, i, field) for i, r in enumerate(table.rows)]
        elif kind == "chat":
            texts = [self.chat(r.get("messages"), table, i, field) for i, r in enumerate(table.rows)]
        else:
            from weitiao.data.examples import take_columns

            texts = take_columns(table, field, self.data.text_column, None, None)[0]
        return Examples(texts, None, None, table.lines, table.path)

    def detect(self, table, field: str) -> str:
        cols = set(table.columns)
        if "messages" in cols:
            return "chat"
        if {"instruction", "output"} <= cols:
            return "alpaca"
        if self.data.text_column in cols:
            return "text"
        from weitiao.data.sources import shown_names

        raise UserError("data.format", f"cannot tell what the records of {field} '{table.path}' are; its fields are {shown_names(table.columns)}",
                        "set data.format to alpaca ({instruction, input, output}), chat ({messages}) or text (data.text_column)")

    def _system(self, conv: tuple) -> tuple:
        if self.opts.system and not (conv and conv[0][0] == "system"):
            return (("system", self.opts.system),) + conv
        return conv

    def alpaca(self, row: dict, table, i: int, field: str) -> tuple:
        for key in ("instruction", "output"):
            if key not in table.columns:
                from weitiao.data.sources import shown_names

                raise UserError("data.format", f"alpaca records need '{key}'; {field} '{table.path}' has {shown_names(table.columns)}",
                                "give {instruction, input, output} records, or set data.format to chat or text")
        values = {k: row.get(k) for k in ("instruction", "input", "output")}
        for k, v in values.items():
            if v is not None and not isinstance(v, str):
                raise UserError(field, f"'{table.path}' record {table.lines[i]}: '{k}' is a {type(v).__name__}, not text", "give text")
        if not (values["instruction"] or "").strip() or not (values["output"] or "").strip():
            return ()  # no prompt or no answer: dropped and counted as empty
        return self._system(alpaca_conversation(values["instruction"], values["input"] or "", values["output"]))

    def chat(self, messages, table, i: int, field: str) -> tuple:
        where = f"'{table.path}' record {table.lines[i]}"
        if not isinstance(messages, list):
            raise UserError(field, f"{where}: 'messages' is a {type(messages).__name__}, not a list of {{role, content}}",
                            "give each record a list of messages")
        conv = []
        for k, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise UserError(field, f"{where}: message {k + 1} is not {{role: text, content: text}}", "give every message a role and a content")
            if m["role"] not in ROLES:
                raise UserError(field, f"{where}: message {k + 1} has role {m['role']!r}", f"use one of {', '.join(ROLES)}")
            conv.append((m["role"], m["content"].strip()))
        if not any(r == "assistant" and c for r, c in conv):
            return ()  # nothing to learn from: dropped and counted as empty
        conv = self._system(tuple(conv))
        if conv[0][0] == "assistant":
            raise UserError(field, f"{where}: the conversation starts with the assistant; nothing prompts its first answer",
                            "begin each conversation with a user (or system) message")
        return conv

    def check_labels(self, labels, field, path) -> None:
        return None

    def stratify_key(self, ex, names) -> None:
        return None


# ---------------------------------------------------------------------------------------
# The forward pass on target positions only


@dataclass
class TargetLogits:
    """The output layer on the positions whose next token is a target: logits [N, vocab], the
    targets [N], and the batch row of each."""

    logits: "torch.Tensor"
    labels: "torch.Tensor"
    rows: "torch.Tensor"
    batch_size: int


def _fast_path(model):
    """(decoder body, output layer) when the output layer can run on chosen positions alone; None for
    prompt-learning adapters (they change the forward) and models that post-process their logits."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    peft_config = getattr(model, "peft_config", None)
    if peft_config and peft_config["default"].is_prompt_learning:
        return None
    cfg = base.config
    if any(getattr(cfg, k, None) for k in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")):
        return None
    try:
        body, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, ValueError, NotImplementedError):
        return None
    return (body, head) if body is not None and head is not None else None


def target_logits(model, batch: dict, labels: "torch.Tensor") -> TargetLogits:
    import torch

    shifted = labels[:, 1:]
    where = shifted != -100
    parts = _fast_path(model)
    if parts is not None:
        body, head = parts
        hidden = body(**batch, use_cache=False).last_hidden_state
        logits = head(hidden[:, :-1][where])
    else:
        full = model(**batch, use_cache=False).logits
        logits = full[:, -labels.shape[1]:][:, :-1][where]  # prompt tuning puts its virtual tokens first
    rows = torch.arange(labels.shape[0], device=labels.device)[:, None].expand_as(shifted)[where]
    return TargetLogits(logits, shifted[where], rows, labels.shape[0])


def lm_parts(model) -> dict:
    """What strategies call the head and the embeddings of a causal LM: the head is the final norm and
    the output layer; with tied weights the output layer is the input embedding matrix, which then
    counts as the head (head_only trains it; layer-wise decay gives it the head's rate)."""
    names = {n for n, _ in model.named_parameters()}
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    prefix = {id(m): n + "." for n, m in model.named_modules()}
    tied = out is not None and inp is not None and out.weight is inp.weight
    head = [prefix[id(inp)]] if tied else ([prefix[id(out)]] if out is not None else [])
    base = model.base_model_prefix
    norms = sorted({n.rsplit(".", 1)[0] + "." for n in names if n.startswith(base + ".") and "norm" in n.split(".")[1]})
    embeddings = [] if tied else sorted({n.rsplit(".", 1)[0] + "." for n in names if n.startswith(base + ".") and "embed" in n})
    return {"head": head + norms, "embeddings": embeddings}


# ---------------------------------------------------------------------------------------
# The task


class CausalLM(TaskDefaults):
    """A decoder-only language model learning to continue text: answers to prompts, or documents."""

    name = "causal_lm"
    generates = chat = probe_text_file = True
    pipeline_tag = "text-generation"
    Options = Options
    data_keys = frozenset({"text_column"})
    peft_task_type = "CAUSAL_LM"
    feature_cache = False
    reads_one_position = False
    takes_images = False
    default_strategy = {"method": "lora", "r": 16, "alpha": 32}  # when the config names none
    default_max_length = 512
    cpu_attention = "sdpa"  # SmolLM2, LoRA, 3 steps of 8 x 256 tokens on 2 cores: 41.7 s and 7.4 GB against eager's 50.2 s and 9.1 GB

    too_long = "cut to data.max_length ({n} tokens)"
    too_long_note = "{k} of {n} examples were longer than data.max_length ({m} tokens) and were cut to it"
    too_long_fix = "raise data.max_length to keep more of them"

    def describe(self, opts) -> str:
        return "causal language modelling" + (" (loss on responses)" if opts.train_on == "responses" else "")

    def metric_names(self, opts) -> tuple[str, ...]:
        return ("perplexity", "loss", "token_accuracy", *opts.generate.metrics)

    def default_metric(self, opts) -> str:
        return "perplexity"

    def headline(self, metrics: dict) -> dict:
        keys = ("perplexity", "token_accuracy", "rouge_l", "bleu", "chrf", "loss")
        return pick_metrics(metrics, keys)

    def summary(self, metrics: dict) -> str:
        keys = ("perplexity", "token_accuracy", "rouge_l", "bleu", "chrf")
        return metrics_line(metrics, keys)

    def reader(self, data, opts) -> LMReader:
        if data.format == "conll":
            raise UserError("data.format", "'conll' files hold words and tags, which only token classification reads",
                            f"set data.format to one of {', '.join(RECORD_FORMATS)}")
        return LMReader(data, opts)

    def processor(self, model_path: str, model_name: str | None = None, max_length: int | None = None):
        from weitiao.tasks.common.text import load_tokenizer

        return load_tokenizer(model_path, model_name, max_length)

    def encode(self, tokenizer, examples: Examples, max_length: int, opts, names: list[str]) -> Encoded:
        from weitiao.tasks.causal_lm.lm_text import encode_conversations, encode_documents, pack, set_template

        samples = opts.generate.samples
        if examples.text and isinstance(examples.text[0], tuple):
            set_template(tokenizer, opts.template, getattr(tokenizer, "name_or_path", "") or "the model")
            enc = encode_conversations(tokenizer, examples.text, max_length, opts.train_on, samples)
            enc.chat = True
        else:
            enc = encode_documents(tokenizer, list(examples.text), max_length, samples)
        return pack(enc, max_length) if opts.packing else enc

    def build(self, model_path, label_names, opts, dropout=None, attention=None, pad_token_id=None):
        from transformers import AutoConfig, AutoModelForCausalLM

        from weitiao.models.heads import DROPOUT_KEYS

        config = AutoConfig.from_pretrained(model_path)
        for kind, p in (dropout or {}).items():
            if p is not None and kind != "classifier":
                for key in DROPOUT_KEYS[kind]:
                    if hasattr(config, key):
                        setattr(config, key, p)
        if pad_token_id is not None and getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = pad_token_id
        config.use_cache = False  # training: no key/value cache (generation turns it on for itself)
        kwargs = {"attn_implementation": attention} if attention else {}
        model = AutoModelForCausalLM.from_pretrained(model_path, config=config, **kwargs)
        model.weitiao_parts = lm_parts(model)
        return model, set()

    def configure_model(self, model, tokenizer, opts, train: Encoded) -> None:
        """The saved model stops where an answer ends (its generation config names EOS and the end-of-turn
        token), and its config says whether prompts are conversations (through the chat template) or text to continue."""
        from weitiao.tasks.common.generation import stop_ids

        model.generation_config.eos_token_id = stop_ids(tokenizer, model, self.end_of_turn(opts, tokenizer))
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.config.weitiao_prompts = "chat" if train.chat else "text"

    def collate(self, encoded: Encoded, index: list[int], pad_id: int, num_labels: int, opts, multiple: int = 1) -> dict:
        from weitiao.tasks.causal_lm.lm_text import collate

        return collate(encoded, index, pad_id, multiple)

    def forward(self, model, batch: dict, labels):
        return target_logits(model, batch, labels)

    def loss(self, out: TargetLogits, labels, opts, label_smoothing: float = 0.0):
        """(cross-entropy summed over the batch's target tokens, their number)."""
        import torch.nn.functional as F

        total = F.cross_entropy(out.logits.float(), out.labels, reduction="sum", label_smoothing=label_smoothing)
        return total, len(out.labels)

    def count_targets(self, batch: dict) -> int:
        return int((batch["labels"][:, 1:] != -100).sum())

    def outputs(self, out: TargetLogits, encoded, index, opts) -> list:
        """Per row: [summed negative log-likelihood, target tokens, correctly predicted tokens]."""
        import torch
        import torch.nn.functional as F

        nll = F.cross_entropy(out.logits.float(), out.labels, reduction="none")
        per_row = torch.zeros((out.batch_size, 3), dtype=torch.float64, device=nll.device)
        per_row[:, 0].index_add_(0, out.rows, nll.double())
        per_row[:, 1].index_add_(0, out.rows, torch.ones_like(nll, dtype=torch.float64))
        per_row[:, 2].index_add_(0, out.rows, (out.logits.argmax(-1) == out.labels).double())
        return list(per_row.cpu().numpy())

    def metrics(self, outputs: list, encoded: Encoded, label_names, opts) -> dict:
        return token_metrics(outputs, encoded.examples)

    def generations(self, model, encoded: Encoded, tokenizer, opts, device) -> tuple[dict, list[dict]]:
        """Answers to the held-out prompts (greedy unless task.generate says otherwise), their scores
        against the references, and the records written to the run folder."""
        from weitiao.tasks.common.generation import Sampling, generate, stop_ids, text_scores

        g = opts.generate
        if not encoded.prompts:
            return {}, []
        sampling = Sampling(g.max_new_tokens, g.temperature, g.top_p)
        stops = stop_ids(tokenizer, model, self.end_of_turn(opts, tokenizer))
        answers = generate(model, tokenizer, encoded.prompts, sampling, stops, device)
        records = [{"prompt": tokenizer.decode(p, skip_special_tokens=False), "reference": r, "generation": a}
                   for p, r, a in zip(encoded.prompts, encoded.references, answers)]
        return text_scores(answers, encoded.references, g.metrics), records

    def end_of_turn(self, opts, tokenizer) -> str | None:
        if opts.template:
            return END_OF_TURN.get(opts.template)
        template = getattr(tokenizer, "chat_template", None) or ""
        return "<|im_end|>" if "<|im_end|>" in template else "<|eot_id|>" if "<|eot_id|>" in template else \
            "<end_of_turn>" if "<end_of_turn>" in template else None

    def answer(self, run, examples: Examples, sampling, batch_size: int | None = None, streamer=None) -> list[dict]:
        """`predict`: the model's answer to each prompt (a conversation's last user turn through the
        chat template; for a model trained on plain text, the text continued). `streamer`: a transformers
        streamer fed the answer's tokens as they are generated (one prompt)."""
        from weitiao.runtime import inference_device
        from weitiao.tasks.causal_lm.lm_text import prompt_text
        from weitiao.tasks.common.generation import generate, stop_ids

        tok, model, device = run.tokenizer, run.model, inference_device()
        chat = getattr(model.config, "weitiao_prompts", "chat") == "chat" and getattr(tok, "chat_template", None)
        texts, refs = [], []
        for conv in examples.text:
            if isinstance(conv, str):
                conv = ((("system", run.opts.system),) if run.opts.system else ()) + (("user", conv),)
            answers = [c for r, c in conv if r == "assistant"]
            refs.append(answers[-1] if answers else None)
            texts.append(prompt_text(tok, conv) if chat else "\n".join(c for r, c in conv if r != "assistant"))
        prompts = [ids[-run.data.max_length:] for ids in tok(texts, add_special_tokens=not chat)["input_ids"]]
        stops = stop_ids(tok, model, self.end_of_turn(run.opts, tok))
        out = generate(model.to(device), tok, prompts, sampling, stops, device, batch_size or 8, streamer=streamer)
        rows = []
        for conv, text, answer, ref in zip(examples.text, texts, out, refs):
            user = [c for r, c in conv if r == "user"] if isinstance(conv, tuple) else [conv]
            rows.append({"prompt": user[-1] if user else text, "generation": answer} | ({"reference": ref} if ref is not None else {}))
        return rows

    def decode(self, outputs: list, encoded, examples: Examples, label_names, opts) -> list[dict]:
        return [{"tokens": int(o[1]), "loss": float(o[0] / o[1]) if o[1] else None} for o in outputs]

    def csv_columns(self, rows: list[dict]):
        keys = list(rows[0]) if rows else ["prompt", "generation"]
        return keys, lambda r: [r.get(k) for k in keys]

    def examples_from_texts(self, texts: list[str], tokenizer, opts) -> Examples:
        convs = [((("system", opts.system),) if opts.system else ()) + (("user", t.strip()),) for t in texts]
        return Examples(convs, None, None, list(range(1, len(texts) + 1)), "--prompt")

    def load(self, model_dir):
        from transformers import AutoModelForCausalLM

        from weitiao.models.heads import load_saved

        model = load_saved(AutoModelForCausalLM, model_dir)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.weitiao_parts = lm_parts(base)
        return model


TASK = register_task(CausalLM())

