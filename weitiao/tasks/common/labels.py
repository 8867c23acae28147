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
    """logits: [batch, num_labels]; the loss per example (multi-label: averaged over the labels, as
    transformers' BCEWithLogitsLoss; summed over them instead measured the same, micro-F1 0.413 vs 0.409 on
    4,000 GoEmotions rows: AdamW does not see the loss's scale), then its mean or ("sum") its sum over the batch."""
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


def set_prior_bias(model, labels: list[list[int]]) -> None:
    """The output layer's biases set to each label's log-odds among `labels` (label-id lists; a label
    never or always seen is clipped to one example's worth of doubt)."""
    import numpy as np
    import torch

    from weitiao.models.heads import output_layer
    from weitiao.tasks.common.label_metrics import multi_hot, prior_log_odds

    num_labels = model.config.num_labels
    layer = output_layer(model, num_labels)
    if layer is None or layer.bias is None:
        return
    bound = np.log((1 - 1e-4) / 1e-4)  # a probability kept within [1e-4, 1 - 1e-4]
    bias = prior_log_odds(multi_hot(labels, num_labels).sum(axis=0), len(labels)).clip(-bound, bound)
    with torch.no_grad():
        layer.bias.copy_(torch.from_numpy(bias).to(layer.bias.dtype))


THRESHOLD_KEY = "weitiao_threshold"  # the tuned multi-label threshold, in the saved model's config.json


def decision_threshold(opts) -> float:
    """The multi-label decision threshold: as configured, or tuned on validation and stored with the
    model (`calibrated`); 0.5 for a model that stored none."""
    return 0.5 if opts.threshold == "auto" else float(opts.threshold)


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
        rows, threshold = [], decision_threshold(opts)
        for text, p in zip(examples.text, outputs):
            if opts.multi_label:  # every label over the threshold, and its probability
                chosen = [i for i in range(len(label_names)) if p[i] >= threshold]
                label, score = [label_names[i] for i in chosen], [round(float(p[i]), 6) for i in chosen]
            else:
                label, score = label_names[int(p.argmax())], round(float(p.max()), 6)
            rows.append({"text": text, "label": label, "score": score, "probabilities": {n: round(float(x), 6) for n, x in zip(label_names, p)}})
        return rows

    def configure_model(self, model, tokenizer, opts, train) -> None:
        """Multi-label: the new head starts at the training data's label frequencies (the bias of label j is
        log(p_j / (1 - p_j))), so the first steps learn which texts carry a label rather than how rare
        labels are (from zero the loss spends hundreds of steps pushing every logit down first)."""
        if opts.multi_label and opts.bias_init == "prior" and train.labels:
            set_prior_bias(model, train.labels)

    def head_targets(self, encoded, num_labels: int, opts):
        import numpy as np

        from weitiao.tasks.common.label_metrics import multi_hot

        if not opts.multi_label:
            return "single", np.asarray(encoded.labels, dtype=np.int64)
        return "multi", multi_hot(encoded.labels, num_labels)

    def head_lr_scale(self, opts) -> float:
        """Multi-label: a new head learns at 10x the body's LR unless strategy.head_lr says otherwise (on
        GoEmotions, 4,000 rows, 1 epoch: micro-F1 0.41 -> 0.48, ROC-AUC 0.73 -> 0.81)."""
        return 10.0 if opts.multi_label else 1.0

    def calibrate(self, opts, validation: dict) -> dict:
        if opts.multi_label and opts.threshold == "auto" and validation.get("threshold") is not None:
            return {THRESHOLD_KEY: validation["threshold"]}
        return {}

    def calibrated(self, opts, model_config: dict):
        if opts.threshold != "auto":
            return opts
        stored = model_config.get(THRESHOLD_KEY)  # none: single-label, or a run saved before thresholds were tuned
        return opts.model_copy(update={"threshold": float(stored) if stored is not None else 0.5})

    def csv_columns(self, rows: list[dict]) -> tuple[list[str], object]:
        """The header of `predict --output x.csv` and a function from one decoded row to its cells."""
        names = list(rows[0]["probabilities"]) if rows else []

        def cells(r: dict) -> list:
            label = ",".join(r["label"]) if isinstance(r["label"], list) else r["label"]
            return [r["text"], label] + [r["probabilities"][n] for n in names]

        return ["text", "label"] + [f"p_{n}" for n in names], cells
