"""One label (softmax) or a set of labels (sigmoid) per example: what the text and the image
classifiers share. The targets, the loss, the probabilities, and the `Labelled` mixin: the task
hooks that depend only on the labels (metrics, decoding, the CSV columns)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from weitiao.tasks import metrics_line, pick_metrics

if TYPE_CHECKING:
    import torch

    from weitiao.data.examples import Examples


def label_tensor(labels: list, num_labels: int, multi_label: bool) -> "torch.Tensor":
    """[batch] label ids (long), or for multi-label [batch, num_labels] float 0/1."""
    import torch

    if not multi_label:
        return torch.tensor(labels, dtype=torch.long)
    target = torch.zeros((len(labels), num_labels))
    for row, ids in enumerate(labels):
        target[row, ids] = 1.0
    return target


def loss_fn(logits: "torch.Tensor", labels: "torch.Tensor", multi_label: bool, label_smoothing: float = 0.0,
            reduction: str = "mean") -> "torch.Tensor":
    """logits: [batch, num_labels]; the loss per example (multi-label: averaged over the labels),
    then its mean or ("sum") its sum over the batch."""
    import torch.nn.functional as F

    if multi_label:
        if label_smoothing:
            labels = labels * (1 - label_smoothing) + 0.5 * label_smoothing
        per_example = F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none").mean(dim=1)
        return per_example.sum() if reduction == "sum" else per_example.mean()
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing, reduction=reduction)


def probabilities(logits: "torch.Tensor", multi_label: bool) -> "torch.Tensor":
    import torch

    return torch.sigmoid(logits.float()) if multi_label else torch.softmax(logits.float(), dim=-1)


class Labelled:
    """The hooks of a task whose examples each carry one label or a label set: options with
    `multi_label` and `threshold`, encoded splits with `labels`, decoded rows keyed by `text`."""

    def metric_names(self, opts) -> tuple[str, ...]:
        from weitiao.tasks.common.label_metrics import MULTI_LABEL, SINGLE_LABEL

        return MULTI_LABEL if opts.multi_label else SINGLE_LABEL

    def default_metric(self, opts) -> str:
        """Single-label: accuracy. Multi-label: micro-F1 (exact-set accuracy is too strict to pick by)."""
        return "f1_micro" if opts.multi_label else "accuracy"

    def headline(self, metrics: dict) -> dict:
        keys = ("accuracy", "f1_macro", "f1_micro", "subset_accuracy", "roc_auc", "loss")
        return pick_metrics(metrics, keys)

    def summary(self, metrics: dict) -> str:
        keys = ("accuracy", "f1_macro", "f1_micro", "subset_accuracy", "roc_auc")
        return metrics_line(metrics, keys)

    def loss(self, logits, labels, opts, label_smoothing: float = 0.0):
        """(sum over the batch's examples, number of examples)."""
        return loss_fn(logits, labels, opts.multi_label, label_smoothing, reduction="sum"), len(labels)

    def count_targets(self, batch: dict) -> int:
        return len(batch["labels"])

    def outputs(self, logits, encoded, index, opts) -> list:
        return list(probabilities(logits, opts.multi_label).cpu().numpy())

    def metrics(self, outputs: list, encoded, label_names: list[str], opts) -> dict:
        import numpy as np

        from weitiao.tasks.common.label_metrics import classification_metrics

        probs = np.stack(outputs) if outputs else np.zeros((0, len(label_names)), dtype=np.float32)
        return classification_metrics(probs, encoded.labels, label_names, opts.multi_label, opts.threshold)

    def decode(self, outputs: list, encoded, examples: "Examples", label_names: list[str], opts) -> list[dict]:
        rows = []
        for text, p in zip(examples.text, outputs):
            if opts.multi_label:  # every label over the threshold, and its probability
                chosen = [i for i in range(len(label_names)) if p[i] >= opts.threshold]
                label, score = [label_names[i] for i in chosen], [round(float(p[i]), 6) for i in chosen]
            else:
                label, score = label_names[int(p.argmax())], round(float(p.max()), 6)
            rows.append({"text": text, "label": label, "score": score, "probabilities": {n: round(float(x), 6) for n, x in zip(label_names, p)}})
        return rows

    def csv_columns(self, rows: list[dict]) -> tuple[list[str], object]:
        """The header of `predict --output x.csv` and a function from one decoded row to its cells."""
        names = list(rows[0]["probabilities"]) if rows else []

        def cells(r: dict) -> list:
            label = ",".join(r["label"]) if isinstance(r["label"], list) else r["label"]
            return [r["text"], label] + [r["probabilities"][n] for n in names]

        return ["text", "label"] + [f"p_{n}" for n in names], cells
