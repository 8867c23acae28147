"""Sequence classification, single-label (softmax + cross-entropy) and multi-label (sigmoid + BCE)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from weitiao.data.examples import Examples
from weitiao.errors import UserError

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Encoded:
    """Token ids of one split, unpadded; padding happens per batch in `collate`."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list | None
    truncated: int = 0  # texts longer than max_length, cut to it

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]

    def __len__(self) -> int:
        return len(self.input_ids)

    def subset(self, index: list[int]) -> "Encoded":
        pick = lambda xs: None if xs is None else [xs[i] for i in index]  # noqa: E731
        return Encoded(pick(self.input_ids), pick(self.token_type_ids), pick(self.labels))


# Config attributes that hold each kind of dropout, across the common architectures.
DROPOUT_KEYS = {
    "hidden": ("hidden_dropout_prob", "hidden_dropout", "dropout", "resid_pdrop"),
    "attention": ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop"),
    "classifier": ("classifier_dropout", "seq_classif_dropout", "summary_first_dropout"),
}


def ensure_pad_token(tokenizer) -> int:
    """The id batches are padded with, the same one the model is told (decoder classifiers pool the
    last token that is not padding, so the two must agree). Tokenizers without a pad token
    (GPT-2, Llama) pad with their end-of-sequence token, as transformers' examples do."""
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise UserError("model", "its tokenizer has no pad, end-of-sequence or unknown token to pad batches with",
                            "save the tokenizer with a pad_token set")
        tokenizer.pad_token = fallback
    return tokenizer.pad_token_id


def build_model(path: str, label_names: list[str], multi_label: bool, dropout: dict | None = None,
                attention: str | None = None, pad_token_id: int | None = None):
    """A pretrained encoder with a fresh classification head, labels named in its config.

    Args:
        dropout: {"hidden" | "attention" | "classifier": p} overrides (None entries ignored).
        attention: attn_implementation while training ("eager", "sdpa"); None: the library's choice.
        pad_token_id: the id batches are padded with (`ensure_pad_token`); None: the config's own, else its EOS.

    Returns:
        (model, names of the newly initialised parameters: the head).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(
        path,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )
    for kind, p in (dropout or {}).items():
        if p is not None:
            for key in DROPOUT_KEYS[kind]:
                if hasattr(config, key) or kind == "classifier":
                    setattr(config, key, p)
    if pad_token_id is not None:
        config.pad_token_id = pad_token_id  # decoder classifiers find the last token by it
    elif getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = getattr(config, "eos_token_id", None) or 0
    # A model fine-tuned before (runs/a/model) brings a head of another shape: it is replaced.
    extra = {"attn_implementation": attention} if attention else {}
    model, info = AutoModelForSequenceClassification.from_pretrained(path, config=config, output_loading_info=True,
                                                                     ignore_mismatched_sizes=True, **extra)
    return model, set(info["missing_keys"]) | {m[0] if isinstance(m, tuple) else m for m in info.get("mismatched_keys", [])}


def encode(tokenizer, ex: Examples, max_length: int) -> Encoded:
    """Tokenize a whole split once (the fast tokenizer batches internally), counting the texts
    that were longer than `max_length` and cut (only texts that reach it are tokenized again)."""
    enc = tokenizer(ex.text, ex.pair, truncation=True, max_length=max_length, padding=False)
    types = enc.get("token_type_ids") if ex.pair is not None else None
    full = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) >= max_length]
    truncated = 0
    if full:
        pick = lambda xs: None if xs is None else [xs[i] for i in full]  # noqa: E731
        whole = tokenizer(pick(ex.text), pick(ex.pair), truncation=False, padding=False)["input_ids"]
        truncated = sum(len(ids) > max_length for ids in whole)
    return Encoded(enc["input_ids"], types, ex.labels, truncated)


def collate(data: Encoded, index: list[int], pad_id: int, num_labels: int, multi_label: bool, multiple: int = 1) -> dict:
    """Pad the chosen examples to the longest among them (rounded up to `multiple`).

    Returns:
        input_ids, attention_mask (and token_type_ids): [batch, longest]; labels: [batch]
        (long) or [batch, num_labels] (float 0/1 for multi-label).
    """
    longest = max(len(data.input_ids[i]) for i in index)
    longest = -(-longest // multiple) * multiple
    ids = torch.full((len(index), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(index), longest), dtype=torch.long)
    types = torch.zeros((len(index), longest), dtype=torch.long) if data.token_type_ids is not None else None
    for row, i in enumerate(index):
        n = len(data.input_ids[i])
        ids[row, :n] = torch.tensor(data.input_ids[i])
        mask[row, :n] = 1
        if types is not None:
            types[row, :n] = torch.tensor(data.token_type_ids[i])
    batch = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = types
    if data.labels is not None:
        batch["labels"] = label_tensor([data.labels[i] for i in index], num_labels, multi_label)
    return batch


def label_tensor(labels: list, num_labels: int, multi_label: bool) -> torch.Tensor:
    if not multi_label:
        return torch.tensor(labels, dtype=torch.long)
    target = torch.zeros((len(labels), num_labels))
    for row, ids in enumerate(labels):
        target[row, ids] = 1.0
    return target


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, multi_label: bool, label_smoothing: float = 0.0,
            reduction: str = "mean") -> torch.Tensor:
    """logits: [batch, num_labels]; the loss per example (multi-label: averaged over the labels),
    then its mean or ("sum") its sum over the batch."""
    if multi_label:
        if label_smoothing:
            labels = labels * (1 - label_smoothing) + 0.5 * label_smoothing
        per_example = F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none").mean(dim=1)
        return per_example.sum() if reduction == "sum" else per_example.mean()
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing, reduction=reduction)


def probabilities(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    return torch.sigmoid(logits.float()) if multi_label else torch.softmax(logits.float(), dim=-1)


@torch.no_grad()
def predict_probs(model, data: Encoded, pad_id: int, num_labels: int, multi_label: bool,
                  batch_size: int, device, forward=None) -> tuple["np.ndarray", float | None]:
    """Probabilities for every example, in input order, and the mean loss when labels exist.

    Batches are sorted by length (least padding); results are put back in input order.
    `forward(model, inputs, index) -> logits` replaces the plain call (the feature cache uses it).
    """
    import numpy as np

    from weitiao.data.batching import sorted_batches

    was_training = model.training
    model.eval()
    probs = np.zeros((len(data), num_labels), dtype=np.float32)
    loss_sum = 0.0
    for index in sorted_batches(data.lengths, batch_size):
        batch = {k: v.to(device) for k, v in collate(data, index, pad_id, num_labels, multi_label).items()}
        labels = batch.pop("labels", None)
        logits = forward(model, batch, index) if forward else model(**batch).logits
        probs[index] = probabilities(logits, multi_label).cpu().numpy()
        if labels is not None:
            loss_sum += loss_fn(logits, labels, multi_label).item() * len(index)
    model.train(was_training)
    return probs, (loss_sum / len(data) if data.labels is not None and len(data) else None)


def build_model_from_run(model_dir) -> object:
    """The trained model saved in a run folder.

    A plain transformers folder for full, partial and merged-peft runs; a peft adapter folder
    for prompt-learning methods (virtual tokens cannot be merged); a folder with bottleneck
    adapters (weights under `*.proj` / `*.adapter`) rebuilt with weitiao's adapter modules.
    """
    from pathlib import Path

    from transformers import AutoConfig, AutoModelForSequenceClassification

    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(str(model_dir))
    if (model_dir / "adapter_config.json").is_file():
        import json

        from peft import PeftModel

        base_path = json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        base = AutoModelForSequenceClassification.from_pretrained(base_path, config=config, ignore_mismatched_sizes=True)
        return PeftModel.from_pretrained(base, str(model_dir))
    adapter = getattr(config, "weitiao_adapter", None)
    if adapter:
        from safetensors.torch import load_file

        from weitiao.strategies.adapter import insert_adapters

        model = AutoModelForSequenceClassification.from_config(config)
        insert_adapters(model, adapter["size"], adapter["type"])
        model.load_state_dict(load_file(str(model_dir / "model.safetensors")), strict=True)
        return model
    return AutoModelForSequenceClassification.from_pretrained(str(model_dir))
