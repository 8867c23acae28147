"""The training loop: one function that reads top to bottom.

It knows nothing about tasks: the caller hands it the batches of each epoch, a function that
turns indices into a batch, a loss function and an evaluation function.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from weitiao.train.checkpoint import save_checkpoint
from weitiao.train.optim import build_optimizer, build_scheduler, warmup_steps


@dataclass
class LoopResult:
    steps: int
    epochs_run: float
    best_metric: float | None
    best_step: int | None
    stopped_early: bool
    seconds: float
    samples: int
    tokens: int
    history: list[dict] = field(default_factory=list)


def higher_is_better(metric: str) -> bool:
    return "loss" not in metric and "perplexity" not in metric


def train_loop(model, accelerator, *, param_groups: list[dict], epoch_batches: Callable[[int], list[list[int]]],
               make_batch: Callable[[list[int]], dict], compute_loss: Callable, evaluate: Callable[[object], dict],
               save_best: Callable[[object], None], run_dir: Path, log, opts,
               on_progress: Callable[[int, int], bool] | None = None) -> LoopResult:
    """Train `model` as `opts` (the training section) says.

    Args:
        param_groups: optimizer groups, each with its own "lr" (see strategies/lr_groups.py).
        epoch_batches: epoch number -> list of batches (index lists) for that epoch.
        make_batch: indices -> dict of CPU tensors (inputs and "labels").
        compute_loss: (model, batch on device) -> scalar loss.
        evaluate: model -> metrics dict (with the metric named by opts.metric).
        save_best: called with the model whenever the validation metric improves.
        log: a MetricsLog.
        on_progress: (epoch, step) -> bool, called before every optimizer step; True means
            the trainable set changed (gradual unfreezing).
    """
    steps_per_epoch = math.ceil(len(epoch_batches(0)) / opts.grad_accum)
    total = opts.max_steps or math.ceil(opts.epochs * steps_per_epoch)  # max_steps wins, as in HF Trainer
    optimizer = build_optimizer(param_groups, opts.lr)
    scheduler = build_scheduler(optimizer, opts.scheduler, warmup_steps(total, opts.warmup_ratio, opts.warmup_steps), total, opts.num_cycles)
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device

    best, best_step, bad_evals, stopped, saved_at = None, None, 0, False, -1
    step, samples, tokens, start = 0, 0, 0, time.perf_counter()
    window = {"loss": 0.0, "n": 0, "samples": 0, "t": start}
    history: list[dict] = []
    bar = _progress(total, opts.progress)

    def run_eval(epoch: float) -> bool:
        """Evaluate, keep the best model, and say whether to stop early."""
        nonlocal best, best_step, bad_evals
        metrics = evaluate(model)
        value = metrics.get(opts.metric)
        improved = value is not None and (best is None or (value > best if higher_is_better(opts.metric) else value < best))
        if improved:
            best, best_step, bad_evals = value, step, 0
            save_best(accelerator.unwrap_model(model))
        else:
            bad_evals += 1
        record = {"step": step, "epoch": round(epoch, 4), "eval": metrics, "best": best}
        log.write(record)
        history.append(record)
        bar.write(f"eval step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        model.train()
        return opts.patience is not None and bad_evals >= opts.patience

    model.train()
    epoch = 0
    while step < total and not stopped:
        batches = epoch_batches(epoch)
        for micro, index in enumerate(batches):
            if on_progress and micro % opts.grad_accum == 0 and on_progress(epoch, step):
                trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
                log.write({"step": step, "epoch": epoch, "trainable_params": trainable})
                bar.write(f"step {step}: trainable parameters now {trainable:,}")
            batch = {k: v.to(device, non_blocking=True) for k, v in make_batch(index).items()}
            with accelerator.autocast():
                loss = compute_loss(model, batch)
            accelerator.backward(loss / opts.grad_accum)
            window["loss"] += loss.item()
            window["n"] += 1
            samples += len(index)
            window["samples"] += len(index)
            tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0
            if (micro + 1) % opts.grad_accum and micro + 1 < len(batches):
                continue
            if opts.max_grad_norm:
                accelerator.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], opts.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            if step % opts.log_every == 0 or step == total:
                _log_window(log, bar, window, step, epoch + (micro + 1) / len(batches), scheduler)
            if opts.eval_every and step % opts.eval_every == 0 and step < total:
                stopped = run_eval(epoch + (micro + 1) / len(batches))
            if opts.checkpoint_every and step % opts.checkpoint_every == 0:
                _checkpoint(run_dir, step, epoch, model, optimizer, scheduler, accelerator, opts)
                saved_at = step
            if step >= total or stopped:
                break
        epoch += 1
        if not stopped:
            stopped = run_eval(float(epoch)) and step < total
        if saved_at != step:  # every epoch ends with a checkpoint
            _checkpoint(run_dir, step, epoch, model, optimizer, scheduler, accelerator, opts)
            saved_at = step
    bar.close()
    seconds = time.perf_counter() - start
    return LoopResult(step, step / steps_per_epoch, best, best_step, stopped, seconds, samples, tokens, history)


def _log_window(log, bar, window: dict, step: int, epoch: float, scheduler) -> None:
    now = time.perf_counter()
    rate = window["samples"] / max(now - window["t"], 1e-9)
    loss = window["loss"] / max(window["n"], 1)
    lr = scheduler.get_last_lr()[0]
    log.write({"step": step, "epoch": round(epoch, 4), "loss": loss, "lr": lr, "samples_per_s": rate})
    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", samples_s=f"{rate:.1f}")
    window.update(loss=0.0, n=0, samples=0, t=now)


def _checkpoint(run_dir: Path, step: int, epoch: int, model, optimizer, scheduler, accelerator, opts) -> None:
    state = {
        "model": accelerator.unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    save_checkpoint(run_dir / "checkpoints", step, state, {"step": step, "epoch": epoch}, opts.keep_checkpoints)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="train", unit="step", disable=not enabled, dynamic_ncols=True)
