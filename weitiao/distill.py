"""`weitiao distill TEACHER_RUN student.yaml`: train a smaller student on a fine-tuned teacher's
soft labels (Hinton et al. 2015, https://arxiv.org/abs/1503.02531).

The student config is a normal config with two more sections:

    student: {layers: 3}       # the teacher's own model with 3 of its layers (evenly spaced, the top one
                               # kept: 6 -> layers 2, 4, 6); leave it out to train `model` (any model of the task)
    distill:
      temperature: 2.0         # both sides' logits are divided by it before the softmax
      alpha: 0.5               # loss = alpha * T^2 * KL(teacher || student) + (1 - alpha) * cross-entropy on the labels
      unlabelled: more.txt     # optional: texts with no label (one a line, or a table with the text column): teacher only

The teacher scores every training row once before training (its logits ride along in each batch
beside the labels); the student's run folder is a normal run (eval, predict, export, serve).
Tasks: classification (single- and multi-label), image classification, token classification
(the student must read the teacher's tokens: the same tokenizer).
"""

from __future__ import annotations

from pathlib import Path

from weitiao.errors import UserError
from weitiao.rundir import MODEL, has_model


def distill_command(teacher: str, config: str, overrides: list[str], name: str | None, overwrite: bool) -> Path:
    """The CLI's `distill`: the student config with distill.teacher set, trained as any run."""
    import time

    from weitiao.config import load_config
    from weitiao.train.recipe import train

    if not has_model(teacher):
        raise UserError("teacher", f"'{teacher}' is not a finished run folder (no model/)", "give a run folder written by `weitiao train`")
    cfg = load_config(config, [*overrides, f"distill.teacher={teacher}"])
    if cfg.student is not None and cfg.student.layers is not None and "model" not in cfg.model_fields_set:
        cfg = cfg.model_copy(update={"model": str(Path(teacher) / MODEL)})  # what the student is cut from, in its config.yaml
    return train(cfg, name or f"{Path(config).stem}-{time.strftime('%Y%m%d-%H%M%S')}", overwrite)
