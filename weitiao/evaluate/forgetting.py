"""The forgetting probe: how well does the encoder still do an earlier task?

`strategy.probe: runs/A` names a finished run of any task that has a metric. Its head and
its validation data are kept; the encoder under that head is swapped for the current model's encoder, before
training and after. "Fine-tune on B after A" then reports A's accuracy before and after, the
number catastrophic forgetting is about (Kirkpatrick et al. 2017,
https://arxiv.org/abs/1612.00796).
"""

from __future__ import annotations

from pathlib import Path

import torch

from weitiao.errors import UserError
from weitiao.rundir import MODEL


class ForgettingProbe:
    def __init__(self, run_dir: str, batch_size: int):
        from weitiao.models.layers import find_parts
        from weitiao.rundir.opening import open_run, validation_data

        if not (Path(run_dir) / MODEL / "config.json").is_file():
            raise UserError("strategy.probe", f"'{run_dir}' is not a finished run folder", "name a run folder written by `weitiao train` (with model/)")
        self.run = open_run(run_dir)
        self.model, self.task = self.run.model, self.run.task
        self.data = validation_data(self.run, "strategy.probe")
        self.batch_size = batch_size
        self.run_dir = run_dir
        base = self.model.base_model_prefix
        self.head = tuple(p[len(base) + 1 :] for p in find_parts(self.model).head if p.startswith(base + "."))

    def encoder_state(self, model) -> dict:
        """The encoder weights of `model` without its head or the probe run's (a peft model: its frozen
        base weights; score merged models to see what adapters changed). A pooler that only one of the two
        has (a sequence classifier probing a token classifier's run) is a head, not the encoder."""
        from weitiao.models.layers import find_parts, unwrap

        base = unwrap(model)
        prefix = base.base_model_prefix + "."
        heads = self.head + tuple(p[len(prefix):] for p in find_parts(base).head if p.startswith(prefix))
        encoder = getattr(base, base.base_model_prefix)
        return {k: v for k, v in encoder.state_dict().items() if not k.startswith(heads)}

    @torch.no_grad()
    def score(self, encoder_state: dict, device) -> dict:
        """The probe run's headline metrics on its data, over the given encoder weights."""
        from weitiao.tasks.common.scoring import pad_id, score, task_metrics

        encoder = getattr(self.model, self.model.base_model_prefix)
        mine = encoder.state_dict()
        bad = [k for k, v in encoder_state.items() if k not in mine or mine[k].shape != v.shape]
        bad += [k for k in mine if k not in encoder_state and not k.startswith(self.head)]  # a shallower encoder
        if bad:
            raise UserError("strategy.probe", f"the encoder of '{self.run_dir}' differs from this run's ({bad[0]})", "probe with a run of the same base model")
        encoder.load_state_dict(encoder_state, strict=False)
        run = self.run
        scored = score(self.model.to(device), self.task, self.data, pad_id(run.tokenizer), len(run.names), run.opts, self.batch_size, device)
        metrics = task_metrics(self.task, self.model, self.data, scored.outputs, run.names, run.opts, run.tokenizer, device)[0]
        return self.task.headline(metrics) | {"loss": scored.loss}


class TextProbe:
    """A language model's forgetting probe: its perplexity on reference text (`strategy.probe` names
    a file: .txt paragraphs, or records the run's data format reads), before training and after.
    What fine-tuning on instructions costs the model's grip on ordinary text."""

    def __init__(self, path: str, task, opts, data, tokenizer, batch_size: int):
        from weitiao.data import replace_section

        if not Path(path).is_file():
            raise UserError("strategy.probe", f"'{path}' is neither a run folder nor a file",
                            "name a finished run folder, or (causal LM) a file of reference text")
        self.task, self.opts, self.tokenizer, self.batch_size = task, opts, tokenizer, batch_size
        self.run_dir = path
        reader = task.reader(replace_section(data, format="auto"), opts)
        ex = reader.read_inputs(path, "strategy.probe")
        texts = [t if isinstance(t, str) else "\n".join(c for _, c in t) for t in ex.text if t]
        if not texts:
            raise UserError("strategy.probe", f"'{path}' has no text", "give a file of reference text")
        from weitiao.tasks.causal_lm.lm_text import encode_documents

        self.data = encode_documents(tokenizer, texts, data.max_length, 0)

    def encoder_state(self, model):
        return model  # the whole model is scored as it is

    @torch.no_grad()
    def score(self, model, device) -> dict:
        from weitiao.tasks.common.scoring import pad_id, score

        scored = score(model.to(device), self.task, self.data, pad_id(self.tokenizer), 0, self.opts, self.batch_size, device)
        metrics = self.task.metrics(scored.outputs, self.data, [], self.opts)
        return {"perplexity": metrics["perplexity"], "loss": scored.loss}


def make_probe(path: str, task, opts, data, tokenizer, batch_size: int):
    """The probe `strategy.probe` names: a run folder (any task), or for a causal LM a file of reference text."""
    if Path(path).is_file() and task.probe_text_file:
        return TextProbe(path, task, opts, data, tokenizer, batch_size)
    return ForgettingProbe(path, batch_size)
