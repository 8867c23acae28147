"""The training loop: one function that reads top to bottom.

It knows nothing about tasks: the caller hands it the batches of each epoch, a function that
turns indices into a batch, a loss function and an evaluation function. Everything the loop
changes lives in `LoopState`, which a checkpoint saves whole, so a resumed run continues
exactly where the last checkpoint was taken (same batches, same random numbers).
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from weitiao.errors import Diverged, TrainingStopped
from weitiao.rundir import CHECKPOINTS
from weitiao.train.checkpoint import PendingCheckpoint, load_checkpoint
from weitiao.train.optim import build_optimizer, build_scheduler, warmup_steps

CRASH_AT = os.environ.get("WEITIAO_CRASH_AT", "")  # tests: "step:N" SIGKILLs right after step N


@dataclass
class LoopState:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch in progress
    next_batch: int = 0  # the next micro-batch of that epoch
    samples: int = 0
    tokens: int = 0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped: bool = False
    nonfinite_in_row: int = 0
    skipped_steps: int = 0
    grad_norm_ema: float | None = None
    last_checkpoint: str | None = None
    targets: int = 0  # target tokens (or examples) trained on, over all processes


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
    skipped_steps: int
    history: list[dict] = field(default_factory=list)
    targets: int = 0


def higher_is_better(metric: str) -> bool:
    return "loss" not in metric and "perplexity" not in metric


def train_loop(model, accelerator, *, param_groups: list[dict], epoch_batches: Callable[[int], list[list[int]]],
               make_batch: Callable[[list[int]], dict], compute_loss: Callable, evaluate: Callable[[object], dict],
               save_best: Callable[[object], None], run_dir: Path, log, opts,
               count_targets: Callable[[dict], int] | None = None, penalty: Callable[[], torch.Tensor] | None = None,
               on_progress: Callable[[int, int], bool] | None = None, resume: Path | None = None,
               checkpoint_meta: dict | None = None, train_mode: Callable[[object], None] | None = None,
               after_eval: Callable[[dict], None] | None = None, eval_at_start: bool = False) -> LoopResult:
    """Train `model` as `opts` (the training section) says.

    Args:
        param_groups: optimizer groups, each with its own "lr" (see strategies/lr_groups.py).
        epoch_batches: epoch number -> list of batches (index lists) for that epoch; the same
            on every process (each process takes its share of every batch).
        make_batch: indices -> dict of CPU tensors (inputs and "labels").
        compute_loss: (model, batch on device) -> the loss summed over the batch's targets. The
            loop divides by the targets of the whole accumulation window (on every process), so
            k micro-batches of any sizes give the gradient of one batch of their union.
        count_targets: CPU batch -> the number of targets its loss sums over (default: its rows;
            a token-level task counts the labelled tokens).
        penalty: () -> a regularizer added once per optimizer step (L2-SP), or None.
        evaluate: model -> metrics dict (with the metric named by opts.metric); called on
            every process.
        save_best: called (main process only) with the model when the metric improves.
        log: a MetricsLog (written by the main process only).
        on_progress: (epoch, step) -> bool, called before every optimizer step; True means
            the trainable set changed (gradual unfreezing).
        resume: a checkpoint folder to continue from.
        checkpoint_meta: JSON-able facts stored with every checkpoint (config hash, data
            fingerprint) for the resume checks.
        train_mode: puts the model in training mode (default `model.train()`); a frozen
            bottom stays in eval mode.
        eval_at_start: evaluate (and keep as the best so far) the model as it starts, before the
            first step: a head a solver fitted is then kept unless training beats it.

    Raises:
        TrainingStopped: non-finite losses `opts.max_bad_steps` times in a row, out of memory.
    """
    steps_per_epoch = math.ceil(len(epoch_batches(0)) / opts.grad_accum)
    total = opts.max_steps or math.ceil(opts.epochs * steps_per_epoch)  # max_steps wins, as in HF Trainer
    optimizer = build_optimizer(param_groups, opts.lr)
    scheduler = build_scheduler(optimizer, opts.scheduler, warmup_steps(total, opts.warmup_ratio, opts.warmup_steps), total, opts.num_cycles)
    model, optimizer = accelerator.prepare(model, optimizer)
    device, main = accelerator.device, accelerator.is_main_process
    rank, world = accelerator.process_index, accelerator.num_processes
    set_train = train_mode or (lambda m: m.train())
    st = LoopState()
    if resume is not None:
        st = _restore(resume, accelerator.unwrap_model(model), optimizer, scheduler)
    history: list[dict] = []
    bar = _progress(total, opts.progress and main, initial=st.step)
    window_log = {"loss": 0.0, "n": 0, "samples": 0, "targets": 0, "t": time.perf_counter()}
    start = time.perf_counter()

    def write(record: dict) -> None:
        if main:
            log.write(record)

    def run_eval(epoch: float) -> bool:
        """Evaluate, keep the best model, and say whether to stop early."""
        try:
            metrics = evaluate(model)
        except Diverged as e:
            bar.close()
            raise TrainingStopped(f"{e} at step {st.step}; last good checkpoint: {st.last_checkpoint or 'none yet'}; "
                                  "lower training.lr or set training.max_grad_norm") from None
        value = metrics.get(opts.metric)
        improved = value is not None and (st.best is None or (value > st.best if higher_is_better(opts.metric) else value < st.best))
        if improved or st.best_step is None:  # the first evaluation always saves a model, even without a value (AUC of one class)
            st.best, st.best_step, st.bad_evals = value if improved else st.best, st.step, 0
            if main:
                save_best(accelerator.unwrap_model(model))
        else:
            st.bad_evals += 1
        record = {"step": st.step, "epoch": round(epoch, 4), "eval": metrics, "best": st.best}
        write(record)
        if main and after_eval is not None:
            after_eval(record)
        history.append(record)
        if main:
            bar.write(f"eval step {st.step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        set_train(model)
        accelerator.wait_for_everyone()
        return opts.patience is not None and st.bad_evals >= opts.patience

    def begin_checkpoint() -> PendingCheckpoint | None:
        """Start writing the tensors of a checkpoint on a thread (main process)."""
        if not main:
            return None
        state = {"model": accelerator.unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "rng": _rng_state()}
        return PendingCheckpoint(run_dir / CHECKPOINTS, st.step, state)

    def checkpoint(pending: PendingCheckpoint | None = None) -> None:
        """Finish a checkpoint; the loop state goes into its meta.json as it is now."""
        pending = pending or begin_checkpoint()
        if main:
            meta = {"step": st.step, "epoch": st.epoch, "metrics_lines": log.lines, "loop": asdict(st), **(checkpoint_meta or {})}
            st.last_checkpoint = str(pending.finish(meta, opts.keep_checkpoints))
        accelerator.wait_for_everyone()

    if eval_at_start and resume is None:  # a model that starts somewhere worth keeping (a head fitted by a solver)
        run_eval(0.0)
    set_train(model)
    learning = [p for p in model.parameters() if p.requires_grad]  # walked every step: only these can hold gradients
    count = count_targets or (lambda b: len(next(iter(b.values()))))
    while st.step < total and not st.stopped:
        batches = epoch_batches(st.epoch)
        for first in range(st.next_batch, len(batches), opts.grad_accum):
            window = batches[first:first + opts.grad_accum]  # the micro-batches of one optimizer step (the last may be short)
            if on_progress and on_progress(st.epoch, st.step):
                learning = [p for p in model.parameters() if p.requires_grad]
                trainable = sum(p.numel() for p in learning)
                write({"step": st.step, "epoch": st.epoch, "trainable_params": trainable})
                if main:
                    bar.write(f"step {st.step}: trainable parameters now {trainable:,}")
            cpu_batches = [make_batch(index[rank::world] or index[:1]) for index in window]  # this process's share of each
            local_targets = sum(count(b) for b in cpu_batches)
            targets = _window_targets(local_targets, accelerator)
            step_loss = None  # the sum of the window's losses, on the device
            for i, (index, cpu_batch) in enumerate(zip(window, cpu_batches)):
                # Counted on the CPU copy: nothing in a step waits for the GPU but the one read below.
                st.tokens += int(cpu_batch["attention_mask"].sum()) * world if "attention_mask" in cpu_batch else 0
                batch = {k: _to_device(v, device) if isinstance(v, torch.Tensor) else v for k, v in cpu_batch.items()}
                try:
                    with accelerator.autocast():
                        loss_sum = compute_loss(model, batch)
                        # DDP averages gradients over the processes: world / targets makes it the global mean.
                        loss = loss_sum * (world / targets)
                        if penalty is not None and i == len(window) - 1:
                            loss = loss + penalty()  # once per optimizer step
                    accelerator.backward(loss)
                except torch.cuda.OutOfMemoryError:
                    raise TrainingStopped(_oom_message(opts, batch, st)) from None
                step_loss = loss_sum.detach().float() if step_loss is None else step_loss + loss_sum.detach().float()
                st.samples += len(index)
                window_log["samples"] += len(index)
            micro = first + len(window) - 1
            st.next_batch = micro + 1

            # One optimizer step, unless the gradients are not finite.
            params = [p for p in learning if p.grad is not None]
            norm = accelerator.clip_grad_norm_(params, opts.max_grad_norm or float("inf"))
            norm = torch.zeros((), device=step_loss.device) if norm is None else norm.detach().float().to(step_loss.device)
            norm, loss_sum = torch.stack([norm, step_loss]).tolist()  # the step's one host-device sync
            window_log["loss"] += loss_sum
            window_log["n"] += local_targets  # the logged loss is this process's mean per target
            window_log["targets"] += targets
            st.targets += targets
            if not math.isfinite(norm) or not math.isfinite(loss_sum):
                optimizer.zero_grad(set_to_none=True)
                st.nonfinite_in_row += 1
                st.skipped_steps += 1
                write({"step": st.step, "skipped": "non-finite loss or gradient", "in_a_row": st.nonfinite_in_row})
                window_log.update(loss=0.0, n=0)
                if st.nonfinite_in_row >= opts.max_bad_steps:
                    bar.close()
                    where = st.last_checkpoint or "none yet"
                    raise TrainingStopped(f"loss or gradients were not finite for {st.nonfinite_in_row} steps in a row at step {st.step}; "
                                          f"last good checkpoint: {where}; lower training.lr or set training.max_grad_norm")
                continue
            st.nonfinite_in_row = 0
            _watch_spikes(st, norm, write)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            st.step += 1
            bar.update(1)
            epoch_pos = st.epoch + (micro + 1) / len(batches)
            if st.step % opts.log_every == 0 or st.step == total:
                _log_window(write, bar, window_log, st.step, epoch_pos, scheduler)
            last_of_epoch = micro + 1 == len(batches) or st.step >= total
            if opts.eval_every and st.step % opts.eval_every == 0 and not last_of_epoch:
                st.stopped = run_eval(epoch_pos)
            if opts.checkpoint_every and st.step % opts.checkpoint_every == 0 and not last_of_epoch and not st.stopped:
                checkpoint()  # the end of an epoch has its own checkpoint below
            if CRASH_AT == f"step:{st.step}":
                os.kill(os.getpid(), signal.SIGKILL)
            if st.step >= total or st.stopped:
                break
        # Every epoch (and the run) ends with a checkpoint. Its tensors, which the evaluation does not
        # change, are written on a thread while the evaluation runs; the loop state after it.
        pending = begin_checkpoint()
        try:
            if not st.stopped:
                st.stopped = run_eval(float(st.epoch + 1)) and st.step < total
        except BaseException:
            if pending:
                pending.abandon()
            raise
        st.epoch, st.next_batch = st.epoch + 1, 0
        checkpoint(pending)
    bar.close()
    seconds = time.perf_counter() - start
    return LoopResult(st.step, st.step / steps_per_epoch, st.best, st.best_step, st.stopped, seconds, st.samples, st.tokens,
                      st.skipped_steps, history, st.targets)


def _window_targets(local: int, accelerator) -> int:
    """The targets of one accumulation window over all processes (one all-reduce, only under DDP)."""
    if accelerator.num_processes == 1:
        return max(local, 1)
    total = accelerator.reduce(torch.tensor(float(local), device=accelerator.device), reduction="sum")
    return max(int(total.item()), 1)


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """CPU -> GPU through pinned memory, so the copy does not block the host; CPU stays as is."""
    if device.type != "cuda":
        return x
    return x.pin_memory().to(device, non_blocking=True)


def _watch_spikes(st: LoopState, norm: float, write) -> None:
    """Log gradient norms far above their running average (a spike often precedes divergence)."""
    if st.grad_norm_ema is not None and st.step >= 10 and norm > 10 * st.grad_norm_ema:
        write({"step": st.step, "grad_spike": norm, "typical": st.grad_norm_ema})
    st.grad_norm_ema = norm if st.grad_norm_ema is None else 0.9 * st.grad_norm_ema + 0.1 * norm


def _oom_message(opts, batch: dict, st: LoopState) -> str:
    size, longest = batch["input_ids"].shape if "input_ids" in batch else (opts.batch_size, 0)
    where = (f"out of GPU memory at step {st.step} with training.batch_size {opts.batch_size} "
             f"(this batch: {size} x {longest} tokens)")
    if opts.batch_size > 1:
        return (f"{where}; try training.batch_size: {max(1, opts.batch_size // 2)} with training.grad_accum: {opts.grad_accum * 2}, "
                f"training.auto_batch_size: true, or a shorter data.max_length")
    # One example does not fit: a smaller batch cannot help.
    return (f"{where}: even one example does not fit; try a shorter data.max_length (now {longest} tokens in this batch), "
            f"training.gradient_checkpointing: true, a parameter-efficient strategy (lora), or a GPU with more memory")


def _rng_state() -> dict:
    """Every random state, as tensors and plain values only (checkpoints load with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python": random.getstate(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}


def _set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    random.setstate(rng["python"])
    kind, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def _restore(folder: Path, model, optimizer, scheduler) -> LoopState:
    state, meta = load_checkpoint(folder)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    st = LoopState(**meta["loop"])
    st.last_checkpoint = str(folder)
    return st


def _log_window(write, bar, window: dict, step: int, epoch: float, scheduler) -> None:
    now = time.perf_counter()
    rate = window["samples"] / max(now - window["t"], 1e-9)
    loss = window["loss"] / max(window["n"], 1)
    lrs = scheduler.get_last_lr()
    lr = lrs[0]
    by_group = {g.get("name", str(i)): v for i, (g, v) in enumerate(zip(scheduler.optimizer.param_groups, lrs))}  # decay / no-decay share a name
    targets_rate = window["targets"] / max(now - window["t"], 1e-9)
    write({"step": step, "epoch": round(epoch, 4), "loss": loss, "lr": lr, "lrs": by_group, "samples_per_s": rate, "targets_per_s": targets_rate})
    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", samples_s=f"{rate:.1f}")
    window.update(loss=0.0, n=0, samples=0, targets=0, t=now)


def _progress(total: int, enabled: bool, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", disable=not enabled, dynamic_ncols=True)
