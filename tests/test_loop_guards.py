"""The loop's guards: non-finite steps skipped and counted, a stop after N in a row, spikes logged, OOM advice."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from weitiao.config import TrainingConfig
from weitiao.errors import TrainingStopped
from weitiao.rundir.folder import MetricsLog
from weitiao.train.loop import train_loop
from weitiao.train.memory import fit_batch_size

X = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0])


def run(tmp_path, loss_at, **opts):
    """Train a linear regression for 2 epochs of 8 batches; `loss_at(step, loss)` may corrupt the loss."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    seen = {"micro": 0}
    snapshots = []

    def compute_loss(m, batch):
        loss = ((m(batch["x"]).squeeze(-1) - batch["y"]) ** 2).sum()  # the loop divides by the targets
        seen["micro"] += 1
        snapshots.append(m.weight.detach().clone())
        return loss_at(seen["micro"] - 1, loss)

    options = TrainingConfig(**{"epochs": 2, "batch_size": 8, "lr": 0.3, "scheduler": "constant", "progress": False, "warmup_ratio": 0.0, **opts})
    log = MetricsLog(tmp_path / "metrics.jsonl")
    result = train_loop(model, Accelerator(cpu=True), param_groups=[{"params": list(model.parameters()), "lr": 0.3}],
                        epoch_batches=lambda e: [list(range(i, i + 8)) for i in range(0, 64, 8)],
                        make_batch=lambda idx: {"x": X[idx], "y": Y[idx]}, compute_loss=compute_loss,
                        evaluate=lambda m: {"loss": float(((m(X).squeeze(-1) - Y) ** 2).mean())}, save_best=lambda m: None,
                        run_dir=tmp_path, log=log, opts=options)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return result, records, snapshots


def test_non_finite_steps_are_skipped_and_counted(tmp_path):
    bad = {3, 4, 9}
    result, records, snapshots = run(tmp_path, lambda i, loss: loss * float("nan") if i in bad else loss)
    assert result.skipped_steps == 3 and result.steps == 16  # skipped steps do not count: the run goes on into a third epoch
    assert records[-1]["epoch"] == 3.0
    assert [r["step"] for r in records if "skipped" in r] == [3, 3, 7]
    assert torch.equal(snapshots[4], snapshots[3]) and torch.equal(snapshots[5], snapshots[4])  # no update from a NaN step
    start = float((Y**2).mean())  # the loss of the zero function, about where training starts
    assert records[-1]["eval"]["loss"] < 0.05 * start  # and training still converged (13.4 -> 0.43)


def test_a_run_of_non_finite_steps_stops_with_the_step_and_last_checkpoint(tmp_path):
    with pytest.raises(TrainingStopped, match=r"not finite for 3 steps in a row at step 8; last good checkpoint: .*step-00000008"):
        run(tmp_path, lambda i, loss: loss * float("inf") if i >= 8 else loss, max_bad_steps=3)


def test_gradient_spikes_are_logged(tmp_path):
    _, records, _ = run(tmp_path, lambda i, loss: loss * 1e4 if i == 12 else loss)
    spikes = [r for r in records if "grad_spike" in r]
    assert len(spikes) == 1 and spikes[0]["step"] == 12 and spikes[0]["grad_spike"] > 10 * spikes[0]["typical"]


def test_out_of_memory_names_the_batch_size_and_what_to_try(tmp_path):
    def oom(i, loss):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(TrainingStopped) as e:
        run(tmp_path, oom)
    assert "training.batch_size 8" in str(e.value) and "training.batch_size: 4 with training.grad_accum: 2" in str(e.value)
    assert "auto_batch_size" in str(e.value)


def test_auto_batch_size_halves_until_it_fits_and_keeps_the_effective_batch():
    tried = []

    def try_batch(size):
        tried.append(size)
        if size > 12:
            raise torch.OutOfMemoryError("CUDA out of memory")

    assert fit_batch_size(try_batch, 64, 1) == (8, 8) and tried == [64, 32, 16, 8]
    assert fit_batch_size(lambda size: None, 32, 2) == (32, 2)
    with pytest.raises(torch.OutOfMemoryError):
        fit_batch_size(lambda size: (_ for _ in ()).throw(torch.OutOfMemoryError("no")), 4, 1)


def test_out_of_memory_at_batch_size_1_does_not_suggest_a_smaller_batch(tmp_path):
    def oom(i, loss):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(TrainingStopped) as e:
        run(tmp_path, oom, batch_size=1)
    message = str(e.value)
    assert "even one example does not fit" in message and "gradient_checkpointing: true" in message
    assert "training.batch_size: 1 with" not in message and "auto_batch_size" not in message


def test_a_diverging_run_stops_with_exit_3_naming_its_last_checkpoint(tmp_path, capsys):
    """training.lr: 1e10 on a real (tiny) classifier: the weights blow up after a step, the logits the validation
    scores are NaN. It used to reach ROC-AUC and crash (exit 1, a traceback, no model); now it stops as a divergence."""
    import random

    from helpers import tiny_bert, write_config
    from test_tasks import TASK_DATA

    from weitiao.cli import main

    cfg = TASK_DATA["classification"](tmp_path, random.Random(0))
    cfg.pop("lr_scale", None)
    cfg = {"version": 1, "model": str(tiny_bert(tmp_path / "tiny")), **cfg, "strategy": "full",
           "training": {"epochs": 2, "batch_size": 8, "lr": 1e10, "max_grad_norm": None, "progress": False, "warmup_ratio": 0.0,
                        "eval_every": 2, "max_bad_steps": 1000},
           "output": {"dir": str(tmp_path / "runs")}}
    capsys.readouterr()
    assert main(["train", str(write_config(tmp_path / "diverge.yaml", cfg)), "--name", "diverge"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and "stopped: the model's validation loss is not finite" in err, err[-2000:]
    assert "last good checkpoint:" in err
