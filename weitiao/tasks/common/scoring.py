"""Score encoded rows with a model: the task's outputs for every row, in input order, and the loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Scored:
    outputs: list  # one per encoded row, as the task's `outputs` makes them
    loss_sum: float  # summed over `count` targets; 0.0 without labels
    count: int

    @property
    def loss(self) -> float | None:
        return self.loss_sum / self.count if self.count else None


def pad_id(processor) -> int:
    """The id a processor pads batches with (a tokenizer's pad token; 0 where nothing is padded: images)."""
    return getattr(processor, "pad_token_id", None) or 0


def task_forward(task, model, batch: dict, labels=None):
    """The model's output on a batch, as the task's `loss` and `outputs` read it: the logits, or what
    the task's own `forward` makes (a causal LM runs its output layer on target positions only)."""
    return task.forward(model, batch, labels) if task.forward is not None else model(**batch).logits


@torch.no_grad()
def score(model, task, enc, pad_id: int, num_labels: int, opts, batch_size: int, device, forward=None) -> Scored:
    """Run `model` over every row of `enc` (batches sorted by length: least padding).

    `forward(model, inputs, index) -> logits` replaces the plain call (the feature cache uses it).
    """
    from weitiao.data.batching import sorted_batches

    was_training = model.training
    model.eval()
    outputs: list = [None] * len(enc)
    loss_sum, count = 0.0, 0
    for index in sorted_batches(enc.lengths, batch_size, getattr(enc, "groups", None)):
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in task.collate(enc, index, pad_id, num_labels, opts).items()}
        labels = batch.pop("labels", None)
        logits = forward(model, batch, index) if forward else task_forward(task, model, batch, labels)
        for i, out in zip(index, task.outputs(logits, enc, index, opts)):
            outputs[i] = out
        if labels is not None:
            total, n = task.loss(logits, labels, opts, 0.0)
            loss_sum, count = loss_sum + total.item(), count + n
    model.train(was_training)
    return Scored(outputs, loss_sum, count)


def task_metrics(task, model, enc, outputs: list, names: list[str], opts, processor, device) -> tuple[dict, list[dict]]:
    """The task's metrics of scored rows; a generative task (`generations`) also generates its outputs
    with `model` and scores them (BLEU, ROUGE-L, ...). Returns (metrics, the generation records)."""
    metrics = task.metrics(outputs, enc, names, opts)
    if not task.generates:
        return metrics, []
    scores, records = task.generations(model, enc, processor, opts, device)
    return metrics | scores, records
