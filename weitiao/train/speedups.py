"""The speed mechanisms the recipe turns on before training: activation checkpointing, the frozen
bottom's (or body's) feature cache built once, and the largest batch that fits a GPU."""

from __future__ import annotations

import time
from pathlib import Path

from weitiao.errors import UserError
from weitiao.train.steps import TaskSteps


def enable_checkpointing(model) -> None:
    """Activation checkpointing per layer (non-reentrant: correct when the layer inputs need no grad)."""
    if not model.supports_gradient_checkpointing:
        raise UserError("training.gradient_checkpointing", f"{type(model).__name__} does not support it",
                        "set training.gradient_checkpointing: false")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def build_feature_cache(model, k: int, steps: TaskSteps, one_position: bool, t, device, run_dir: Path, log, say):
    """Compute the frozen bottom's output for the training and validation examples, once."""
    from weitiao.train.feature_cache import FeatureCache
    from weitiao.train.memory import release_host_memory

    cache = FeatureCache(model.to(device), k, one_position)
    seconds = _fill_cache(cache, steps, t.batch_size, device, run_dir, int(t.feature_cache_memory_gb * 2**30))
    layers = len(cache.stack)
    # Without the cache every epoch after the first runs the same frozen forward pass again (about what
    # building the training split took), and so does every evaluation of the validation split.
    n_train = len(steps.encoded["train"])
    epochs = t.max_steps * t.batch_size * t.grad_accum / max(n_train, 1) if t.max_steps else t.epochs
    evals = (epochs * n_train / (t.batch_size * t.grad_accum) / t.eval_every) if t.eval_every else epochs
    saved = max(0.0, epochs - 1) * seconds["train"] + max(0.0, evals - 1) * seconds["validation"]
    cache.report = {"frozen_layers": k, "of_layers": layers, "megabytes": round(cache.bytes / 2**20, 1), "first_token_only": cache.first_token_only,
                    "memory_mapped": cache.bytes > t.feature_cache_memory_gb * 2**30,
                    "build_seconds": round(sum(seconds.values()), 2), "build_seconds_train": seconds["train"],
                    "saved_seconds_estimate": round(saved, 1)}
    log.write({"feature_cache": cache.report})
    release_host_memory()
    say(f"feature cache: embeddings and layers 0-{k - 1} of {layers} run once ({cache.report['megabytes']} MB, "
        f"{cache.report['build_seconds']} s{'; the head reads only the first token, so only it is kept' if cache.first_token_only else ''}); "
        f"each step now runs {layers - k} of {layers} layers; saves about {saved:.0f} s of frozen forward passes over this run")
    return cache


def _fill_cache(cache, steps: TaskSteps, batch_size: int, device, folder: Path | None, max_bytes: int) -> dict[str, float]:
    """Run the frozen part over the training and validation splits into `cache`; seconds per split.

    Training-size batches: the pass keeps no activations, so it never needs more memory than a training step."""
    from weitiao.data.batching import sorted_batches

    seconds = {}
    for split in ("train", "validation"):
        start = time.perf_counter()
        enc = steps.encoded[split]
        cache.build(split, sorted_batches(enc.lengths, batch_size), lambda idx, split=split: steps.collate(split, idx), enc.lengths,
                    device, folder, max_bytes)
        seconds[split] = round(time.perf_counter() - start, 2)
    return seconds


def build_body_cache(model, body: str, steps: TaskSteps, t, device, log, say):
    """Compute the frozen body's output (the head's input) for the training and validation examples, once."""
    from weitiao.train.feature_cache import BodyCache

    cache = BodyCache(model.to(device), body)
    seconds = round(sum(_fill_cache(cache, steps, t.batch_size, device, None, 0).values()), 2)
    cache.report = {"frozen_body": body, "megabytes": round(cache.bytes / 2**20, 1), "build_seconds": seconds, "first_token_only": True}
    log.write({"feature_cache": cache.report})
    say(f"feature cache: the frozen body ({body}) ran once over the training and validation data ({cache.report['megabytes']} MB, "
        f"{seconds} s); each step now runs only the head")
    return cache


def auto_batch(model, steps: TaskSteps, lengths: list[int], t, accelerator, say):
    """training.auto_batch_size: on a GPU, the largest batch of the longest inputs that fits."""
    import torch

    from weitiao.train.memory import fit_batch_size

    if accelerator.device.type != "cuda":
        say("auto_batch_size: not on a GPU, keeping training.batch_size")
        return t
    longest = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    model.to(accelerator.device)

    def try_batch(size: int) -> None:
        batch = {k: v.to(accelerator.device) if isinstance(v, torch.Tensor) else v for k, v in steps.collate("train", longest[:size]).items()}
        with accelerator.autocast():
            steps.loss(model, batch).backward()
        model.zero_grad(set_to_none=True)

    size, accum = fit_batch_size(try_batch, t.batch_size, t.grad_accum)
    torch.cuda.empty_cache()
    if size != t.batch_size:
        say(f"auto_batch_size: batch {t.batch_size} does not fit; using {size} x {accum} accumulation steps")
    return t.model_copy(update={"batch_size": size, "grad_accum": accum})
