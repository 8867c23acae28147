"""Sequence classification, single-label (softmax + cross-entropy) and multi-label (sigmoid + BCE)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from weitiao.data.examples import Examples

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Encoded:
    """Token ids of one split, unpadded; padding happens per batch in `collate`."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list | None

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]

    def __len__(self) -> int:
        return len(self.input_ids)


def build_model(path: str, label_names: list[str], multi_label: bool):
    """A pretrained encoder with a fresh classification head, labels named in its config."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()  # "some weights were newly initialized" is expected: it is the head
    return AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )


def encode(tokenizer, ex: Examples, max_length: int) -> Encoded:
    """Tokenize a whole split once (the fast tokenizer batches internally)."""
    enc = tokenizer(ex.text, ex.pair, truncation=True, max_length=max_length, padding=False)
    types = enc.get("token_type_ids") if ex.pair is not None else None
    return Encoded(enc["input_ids"], types, ex.labels)


def collate(data: Encoded, index: list[int], pad_id: int, num_labels: int, multi_label: bool) -> dict:
    """Pad the chosen examples to the longest among them.

    Returns:
        input_ids, attention_mask (and token_type_ids): [batch, longest]; labels: [batch]
        (long) or [batch, num_labels] (float 0/1 for multi-label).
    """
    longest = max(len(data.input_ids[i]) for i in index)
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


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, multi_label: bool, label_smoothing: float = 0.0) -> torch.Tensor:
    """logits: [batch, num_labels]; mean loss over the batch."""
    if multi_label:
        if label_smoothing:
            labels = labels * (1 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(logits.float(), labels)
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def probabilities(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    return torch.sigmoid(logits.float()) if multi_label else torch.softmax(logits.float(), dim=-1)


@torch.no_grad()
def predict_probs(model, data: Encoded, pad_id: int, num_labels: int, multi_label: bool,
                  batch_size: int, device) -> tuple["np.ndarray", float | None]:
    """Probabilities for every example, in input order, and the mean loss when labels exist.

    Batches are sorted by length (least padding); results are put back in input order.
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
        logits = model(**batch).logits
        probs[index] = probabilities(logits, multi_label).cpu().numpy()
        if labels is not None:
            loss_sum += loss_fn(logits, labels, multi_label).item() * len(index)
    model.train(was_training)
    return probs, (loss_sum / len(data) if data.labels is not None and len(data) else None)


def build_model_from_run(model_dir) -> object:
    """The trained model saved in a run folder (plain transformers, no weitiao needed)."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(model_dir))
