"""The parity check: an exported model against the run's own, on the run's evaluation rows.

Both run every batch; parity.json records the largest |delta logit| (over real positions: padding
is left out), how many predictions agree, and the task's metrics from each. A format with a
tolerance (fp32 ONNX and TorchScript 1e-4, hf 1e-5, adapter 1e-4; times the largest |logit| where
that is above 1) that misses it, or changes any prediction, fails the export with those numbers;
int8 is measured and reported.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from weitiao.errors import UserError

INT8_AGREEMENT = 0.96  # what dynamic int8 quantization usually keeps; below it the export says so


class Diff:
    """Running max |delta| and prediction agreement over batches of logits."""

    def __init__(self, multi_label: bool, threshold: float):
        self.multi_label, self.threshold = multi_label, threshold
        self.max_abs, self.scale, self.agree, self.total = 0.0, 0.0, 0, 0

    def add(self, ref: torch.Tensor, got: torch.Tensor, mask: torch.Tensor | None) -> None:
        """ref, got: [batch, labels] or [batch, tokens, labels] logits; mask: [batch, tokens], 1 on real tokens."""
        ref, got = ref.float(), got.float()
        if ref.dim() == 3 and mask is not None:
            keep = mask[:, :ref.shape[1]].bool()
            ref, got = ref[keep], got[keep]
        if not ref.numel():
            return
        self.max_abs = max(self.max_abs, float((ref - got).abs().max()))
        self.scale = max(self.scale, float(ref.abs().max()))
        if self.multi_label:
            same = ((torch.sigmoid(ref) >= self.threshold) == (torch.sigmoid(got) >= self.threshold)).all(dim=-1)
        else:
            same = ref.argmax(-1) == got.argmax(-1)
        self.agree += int(same.sum())
        self.total += same.numel()

    @property
    def agreement(self) -> float:
        return self.agree / self.total if self.total else 1.0


def logits_of(out) -> torch.Tensor:
    return getattr(out, "logits", out)


@torch.no_grad()
def compare(reference, exported, task, enc, names: list[str], opts, pad: int, batch_size: int) -> dict:
    """Run both models over `enc`: max |delta logit|, prediction agreement, and each one's metrics."""
    from weitiao.data.batching import sorted_batches
    from weitiao.tasks.common.scoring import task_forward

    reference.eval()
    diff = Diff(bool(getattr(opts, "multi_label", False)), float(getattr(opts, "threshold", 0.5) or 0.5))
    before, after = [None] * len(enc), [None] * len(enc)
    for index in sorted_batches(enc.lengths, batch_size, getattr(enc, "groups", None)):
        batch = task.collate(enc, index, pad, len(names), opts)
        labels = batch.pop("labels", None)
        ref = task_forward(task, reference, batch, labels)
        got = task_forward(task, exported, batch, labels)
        diff.add(logits_of(ref), logits_of(got), batch.get("attention_mask"))
        for i, a, b in zip(index, task.outputs(ref, enc, index, opts), task.outputs(got, enc, index, opts)):
            before[i], after[i] = a, b
    m_before, m_after = task.metrics(before, enc, names, opts), task.metrics(after, enc, names, opts)
    return {"rows": len(enc), "predictions": diff.total, "max_abs_logit_diff": diff.max_abs, "max_abs_logit": diff.scale, "agreement": diff.agreement,
            "metrics_before": task.headline(m_before), "metrics_after": task.headline(m_after)}


def check(source, form, folder: Path, batch_size: int | None) -> dict:
    """Load the export in `folder`, compare it with the run's model, write parity.json; raise when it fails."""
    from weitiao.formats.loading import load_exported
    from weitiao.tasks.common.scoring import pad_id

    run = source.run
    exported = load_exported(folder, run.task, trust=(form.name,))  # the file this export just wrote
    result = compare(run.model, exported, run.task, source.enc, run.names, run.opts, pad_id(run.tokenizer), batch_size or 32)
    # fp32 rounding grows with the numbers rounded: logits past 1 scale the tolerance (EfficientNet's reach 10 and differ
    # by 1.1e-4 between oneDNN and onnxruntime, 1e-5 of their size; a text classifier's stay near 3 and differ by 1e-6).
    allowed = None if form.tolerance is None else form.tolerance * max(1.0, result["max_abs_logit"])
    result = {"format": form.name, "tolerance": form.tolerance, "allowed": allowed, **result}
    passed = allowed is None or (result["max_abs_logit_diff"] <= allowed and result["agreement"] == 1.0)
    result["passed"] = passed
    (folder / "parity.json").write_text(json.dumps(result, indent=2))
    numbers = (f"max |delta logit| {result['max_abs_logit_diff']:.3g}, agreement {result['agreement']:.2%} "
               f"of {result['predictions']} predictions on {result['rows']} rows")
    if not passed:
        raise UserError("--format", f"the {form.name} export does not reproduce the run's model ({numbers}; needs <= {allowed:.3g} and 100%)",
                        "report this with the run's config; export --format hf meanwhile")
    if form.tolerance is None and result["agreement"] < INT8_AGREEMENT:
        print(f"note: {form.name} keeps {result['agreement']:.2%} of the predictions (usually >= {INT8_AGREEMENT:.0%}); "
              f"metrics {result['metrics_before']} -> {result['metrics_after']}", flush=True)
    print(f"parity: {numbers}; metrics {_short(result['metrics_before'])} -> {_short(result['metrics_after'])}", flush=True)
    return result


def _short(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
