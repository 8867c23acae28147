"""`weitiao train`: setup -> train -> finish, the way one run goes.

Everything that can fail on the user's input (config, data, model name, run folder) is
checked before the run folder is created, so a mistake writes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from weitiao.config import RunConfig, dump_config
from weitiao.errors import UserError


def say(msg: str = "") -> None:
    print(msg, flush=True)


def pick_device(device: str, mixed_precision: str | None) -> tuple[bool, str]:
    """Whether to use CUDA, and the mixed precision to train with.

    An unset `training.mixed_precision` takes `accelerate launch`'s (its config file sets
    ACCELERATE_MIXED_PRECISION), else "no"; the YAML wins when it names one. Mixed precision is
    refused on CPU, where it would only slow things down.
    """
    import torch

    cuda = torch.cuda.is_available() and device != "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("training.device", "'cuda' was asked for but no CUDA GPU is visible", "set training.device: auto or cpu")
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION") if mixed_precision is None else None
    effective = mixed_precision or launched or "no"
    if effective != "no" and not cuda:
        if launched:
            raise UserError("accelerate launch mixed_precision", f"'{launched}' on CPU: half-precision matmuls are ~200x slower than fp32 on CPUs",
                            "set mixed_precision: 'no' in the accelerate config, or training.mixed_precision: no in the YAML")
        raise UserError("training.mixed_precision", f"'{mixed_precision}' on CPU: half-precision matmuls are ~200x slower than fp32 on CPUs",
                        "set training.mixed_precision: no (it is only used on GPUs)")
    return cuda, effective


def train(cfg: RunConfig, name: str, overwrite: bool = False, resume: str | None = None, force: bool = False) -> Path:
    """Run one fine-tuning as configured, or continue one (`resume`: a run folder or "auto").

    Returns the run folder.
    """
    from weitiao.train.run_folder import check_run_dir, refuse_if_locked

    checkpoint = None
    if resume:
        run_dir, checkpoint = find_checkpoint(cfg, resume, name, force)
        refuse_if_locked(run_dir)
    else:
        run_dir = check_run_dir(cfg.output.dir, name, overwrite)
    setup = prepare(cfg)  # data, strategy, device, model, probe, parameter groups: all user errors surface here
    return fit(cfg, setup, run_dir, overwrite, setup["cuda"], checkpoint)


def find_checkpoint(cfg: RunConfig, resume: str, name: str | None, force: bool) -> tuple[Path, Path]:
    """The run folder and its newest intact checkpoint, after checking it is the same run."""
    from weitiao.train.checkpoint import latest_valid
    from weitiao.train.resume import check_same_run, resolve_resume

    run_dir = resolve_resume(resume, cfg.output.dir, name)
    folder, torn = latest_valid(run_dir / "checkpoints")
    for bad in torn:
        say(f"checkpoint {bad} is incomplete or corrupt (checksum mismatch): using an earlier one")
    if folder is None:
        raise UserError("--resume", f"'{run_dir}' has no complete checkpoint", "start the run again (with --overwrite)")
    check_same_run(run_dir, cfg, json.loads((folder / "meta.json").read_text()), force)
    say(f"resuming {run_dir} from {folder.name}")
    return run_dir, folder


def quiet_hf() -> None:
    """Silence the per-file progress bars of loading and saving; weitiao prints its own."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging

    import warnings

    disable_progress_bars()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices between libraries


def prepare(cfg: RunConfig) -> dict:
    from weitiao.data import load_data

    # The data first: it needs no torch, so a mistake in it is reported at once.
    multi = cfg.task.multi_label
    data = load_data(cfg.data, multi, cfg.training.seed)

    import torch
    from transformers import AutoTokenizer

    from weitiao.evaluate.forgetting import ForgettingProbe
    from weitiao.models import resolve_model
    from weitiao.strategies import apply_strategy, get_strategy
    from weitiao.strategies.l2sp import l2sp_for
    from weitiao.strategies.lr_groups import build_param_groups
    from weitiao.tasks import classification as task
    from weitiao.train.last_layer import prune_last_layer

    quiet_hf()
    if cfg.training.num_threads:
        torch.set_num_threads(cfg.training.num_threads)
    get_strategy(cfg.strategy)  # an unknown method or a misplaced option fails before the model loads
    cuda, mixed_precision = pick_device(cfg.training.device, cfg.training.mixed_precision)
    path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    pad_id = task.ensure_pad_token(tokenizer)
    check_max_length(path, cfg.model, cfg.data.max_length, tokenizer.model_max_length)
    encoded = {split: task.encode(tokenizer, ex, cfg.data.max_length)
               for split, ex in (("train", data.train), ("validation", data.validation), ("test", data.test)) if ex is not None}
    torch.manual_seed(cfg.training.seed)  # the new head's initial weights
    attention = cfg.training.attention if cfg.training.attention != "auto" else (None if cuda else "eager")
    data.report["truncated"] = {split: enc.truncated for split, enc in encoded.items()} | {"max_length": cfg.data.max_length}
    model, new_names = task.build_model(path, data.labels.names, multi, cfg.strategy.dropout.model_dump(), attention, pad_id)
    if cfg.training.gradient_checkpointing:
        enable_checkpointing(model)
    pruned = cfg.training.prune_last_layer and prune_last_layer(model)
    probe = before = None
    if cfg.strategy.probe:
        probe = ForgettingProbe(cfg.strategy.probe, eval_batch_size(cfg.training.eval_batch_size, cuda))
        before = probe.score(probe.encoder_state(model), torch.device("cuda" if cuda else "cpu"))  # where `after` is scored
    selection = apply_strategy(model, cfg.strategy)
    s, t = cfg.strategy, cfg.training
    groups = build_param_groups(selection.model, selection.all_trainable_later or None, t.lr, t.weight_decay,
                                s.layer_lr_decay, s.head_lr, s.lr_overrides)
    l2sp = l2sp_for(selection.model, new_names, s.l2sp, s.l2sp_beta, only={id(p) for g in groups for p in g["params"]})
    return {"data": data, "tokenizer": tokenizer, "encoded": encoded, "selection": selection, "model_path": path, "cuda": cuda,
            "mixed_precision": mixed_precision, "new_names": new_names, "probe": probe, "probe_before": before,
            "pruned_last_layer": pruned, "groups": groups, "l2sp": l2sp}


def eval_batch_size(configured: int | None, cuda: bool) -> int:
    """training.eval_batch_size, else 128 on a GPU and 32 on a CPU (where larger batches score
    slower: MiniLM on SST-2 dev, 2.7 s at 32 against 3.2 s at 128, measured with 2 threads)."""
    return configured or (128 if cuda else 32)


def check_max_length(path: str, name: str, max_length: int, usable: int | None) -> None:
    """Refuse a data.max_length past the positions the model has (an IndexError mid-training otherwise).

    `usable`: the tokenizer's model_max_length (RoBERTa-style models keep 2 of their positions
    for padding, and their tokenizer says how many are left; a huge number means unset).
    """
    from transformers import AutoConfig

    positions = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)
    limits = [n for n in (positions, usable) if isinstance(n, int) and 0 < n < 1_000_000]
    if limits and max_length > min(limits):
        raise UserError("data.max_length", f"{max_length} tokens is more than model '{name}' can read ({min(limits)} positions)",
                        f"set data.max_length to {min(limits)} or less")


def fit(cfg: RunConfig, setup: dict, run_dir: Path, overwrite: bool, cuda: bool, checkpoint: Path | None = None) -> Path:
    """Create (or reopen, to resume) the run folder, lock it, and train into it.

    Under `accelerate launch` only the main process writes the folder; all of them train.
    """
    from accelerate import Accelerator

    from weitiao.train.resume import truncate_metrics
    from weitiao.train.run_folder import MetricsLog, NewRunFolder, NullLog, RunLock, write_env

    t = cfg.training
    accelerator = Accelerator(cpu=not cuda, mixed_precision=setup["mixed_precision"])
    main = accelerator.is_main_process
    lock = folder = None
    try:
        if main:
            if checkpoint is None:
                folder = NewRunFolder(run_dir, overwrite)
                (run_dir / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
                write_env(run_dir, t.seed, str(accelerator.device), accelerator.num_processes, setup["mixed_precision"])
            lock = RunLock(run_dir)
        accelerator.wait_for_everyone()
        log = MetricsLog(run_dir / "metrics.jsonl") if main else NullLog()
        if checkpoint is not None:
            meta = json.loads((checkpoint / "meta.json").read_text())
            if main:
                truncate_metrics(log.path, meta["metrics_lines"])
                log = MetricsLog(log.path)
            log.write({"step": meta["step"], "resumed_from": checkpoint.name})
        else:
            log.write({"data": setup["data"].report})
        return _fit(cfg, setup, run_dir, accelerator, log, checkpoint, started=folder.started if folder else lambda: None)
    except BaseException:
        if lock:
            lock.release()
            lock = None
        if folder:
            folder.abandon()  # only before training started: the old run (with --overwrite) is back
        raise
    finally:
        if lock:
            lock.release()


def _fit(cfg: RunConfig, setup: dict, run_dir: Path, accelerator, log, checkpoint: Path | None, started) -> Path:
    from weitiao.data.batching import length_grouped_batches, padding_fraction
    from weitiao.strategies.lr_groups import lr_table
    from weitiao.strategies.report import parameter_table
    from weitiao.train.feature_cache import frozen_bottom, frozen_modules
    from weitiao.train.loop import train_loop
    from weitiao.train.resume import config_hash, data_fingerprint

    data, tokenizer, encoded, selection = setup["data"], setup["tokenizer"], setup["encoded"], setup["selection"]
    model, t, s = selection.model, cfg.training, cfg.strategy
    names, multi, pad_id = data.labels.names, cfg.task.multi_label, tokenizer.pad_token_id
    main, world = accelerator.is_main_process, accelerator.num_processes
    tell = say if main else (lambda msg="": None)

    groups, l2sp = setup["groups"], setup["l2sp"]

    tell(f"run folder: {run_dir}")
    tell(f"data: {json.dumps(data.report)}")
    tell(f"strategy: {strategy_line(cfg)}; model: {cfg.model}; device: {accelerator.device}" + (f" x {world} processes" if world > 1 else ""))
    tell(parameter_table(model))
    if setup["pruned_last_layer"]:
        tell("last layer: the head reads only the first token, so that layer computes only its output "
             "(keys and values still from every token; training.prune_last_layer: false turns this off)")
    tell("learning rates:\n" + lr_table(groups))

    lengths = encoded["train"].lengths
    if t.auto_batch_size:
        t = auto_batch(model, encoded["train"], lengths, t, pad_id, len(names), multi, accelerator, tell)
    epoch_batches = lambda epoch: length_grouped_batches(lengths, t.batch_size, t.seed, epoch, group=t.group_by_length)  # noqa: E731
    tell(f"padding in training batches: {100 * padding_fraction(lengths, epoch_batches(0)):.1f}%")

    cache, k = None, (frozen_bottom(model) if selection.on_progress is None else 0)
    if k and t.feature_cache:
        cache = build_feature_cache(model, k, encoded, pad_id, len(names), multi, t, accelerator.device, run_dir, log, tell)
    frozen = frozen_modules(model, k) if k else []

    def train_mode(m):
        m.train()
        for module in frozen:  # a frozen bottom is a feature extractor: no dropout in it, cached or not
            module.eval()

    def save_best(m):
        if selection.peft:
            save_adapter(m, tokenizer, run_dir / "adapter")
        else:
            save_model(m, tokenizer, run_dir / "model")
            steps.best_validation = steps.latest_validation  # exactly this model's scores: finish need not score it again

    steps = ClassifierSteps(cfg, encoded, names, pad_id, cache, accelerator)
    started()  # the old run folder (replaced with --overwrite) goes now, not before
    result = train_loop(model, accelerator, param_groups=groups, epoch_batches=epoch_batches, make_batch=steps.make_batch,
                        compute_loss=steps.loss, count_targets=steps.count_targets, penalty=l2sp.penalty if l2sp else None,
                        evaluate=steps.validation_headline, save_best=save_best,
                        run_dir=run_dir, log=log, opts=t, on_progress=selection.on_progress, resume=checkpoint,
                        checkpoint_meta={"config_hash": config_hash(cfg), "data": data_fingerprint(cfg.data)}, train_mode=train_mode)
    if main:
        finish(cfg, setup, run_dir, accelerator, log, steps, result, cache)
    return run_dir


class ClassifierSteps:
    """What the loop asks of a classification run: batches from indices, the loss of a batch,
    metrics of a split. With a feature cache, the frozen bottom's output is replayed."""

    def __init__(self, cfg: RunConfig, encoded: dict, names: list[str], pad_id: int, cache, accelerator):
        self.cfg, self.encoded, self.names, self.pad_id = cfg, encoded, names, pad_id
        self.multi = cfg.task.multi_label
        self.cache, self.accelerator = cache, accelerator
        self.latest_validation = self.best_validation = None  # full metrics of the last evaluation, and of the saved best model
        # On a GPU a step costs little compute but every new sequence length costs kernel selection and
        # allocations: lengths rounded up to 8 keep the shapes few (measured in docs/benchmarks.md).
        self.multiple = cfg.training.pad_to_multiple_of or (8 if accelerator.device.type == "cuda" else 1)

    def make_batch(self, index: list[int]) -> dict:
        from weitiao.tasks import classification as task

        batch = task.collate(self.encoded["train"], index, self.pad_id, len(self.names), self.multi, self.multiple)
        if self.cache:
            batch["cache_index"] = list(index)  # stays on the host (the loop moves only tensors)
        return batch

    def logits(self, m, batch: dict, split: str = "train", index: list[int] | None = None):
        if self.cache is None:
            return m(**batch).logits
        index = batch.pop("cache_index") if index is None else index
        with self.cache.replaying(self.cache.batch(split, index, batch["input_ids"].shape[1])):
            return m(**batch).logits

    def loss(self, m, batch: dict):
        """The loss summed over the batch's examples (the loop normalizes over the accumulation window)."""
        from weitiao.tasks import classification as task

        labels = batch.pop("labels")
        return task.loss_fn(self.logits(m, batch), labels, self.multi, self.cfg.strategy.label_smoothing, reduction="sum")

    @staticmethod
    def count_targets(batch: dict) -> int:
        return len(batch["labels"])

    def validation_headline(self, m) -> dict:
        from weitiao.evaluate.metrics import headline

        self.latest_validation = self.evaluate(m, "validation")
        return headline(self.latest_validation)

    def evaluate(self, m, split: str, shard: bool = True) -> dict:
        """Every process scores every world-th example; the pieces are gathered (each once).

        With shard=False (the final scores, main process only) this process scores them all.
        """
        import numpy as np
        from accelerate.utils import gather_object

        from weitiao.evaluate.metrics import classification_metrics
        from weitiao.tasks import classification as task
        from weitiao.train.memory import release_host_memory

        release_host_memory()  # what the training steps freed, before evaluation allocates its own
        acc, enc = self.accelerator, self.encoded[split]
        world = acc.num_processes
        shard = shard and world > 1
        mine = list(range(acc.process_index, len(enc), world)) if shard else list(range(len(enc)))
        cached = self.cache is not None and split in self.cache.splits
        forward = (lambda model_, batch, idx: self.logits(model_, batch, split, [mine[j] for j in idx])) if cached else None
        probs_mine, loss_mine = task.predict_probs(acc.unwrap_model(m), enc.subset(mine), self.pad_id, len(self.names), self.multi,
                                                   eval_batch_size(self.cfg.training.eval_batch_size, acc.device.type == "cuda"), acc.device, forward)
        piece = (mine, probs_mine, (loss_mine or 0.0) * len(mine))
        pieces = gather_object([piece]) if shard else [piece]
        probs = np.zeros((len(enc), len(self.names)), dtype=np.float32)
        for index, p, _ in pieces:
            probs[index] = p
        metrics = classification_metrics(probs, enc.labels, self.names, self.multi, self.cfg.task.threshold)
        metrics["loss"] = sum(piece[2] for piece in pieces) / max(len(enc), 1)
        release_host_memory()  # evaluation batches are larger than training ones: give their buffers back
        return metrics


def finish(cfg: RunConfig, setup: dict, run_dir: Path, accelerator, log, steps: ClassifierSteps, result, cache) -> None:
    """Main process, after training: the best model into model/, its final scores, metrics.json."""
    from weitiao.evaluate.metrics import headline
    from weitiao.train.memory import release_host_memory

    accelerator.free_memory()  # the optimizer state goes before the final scoring
    release_host_memory()
    model = accelerator.unwrap_model(setup["selection"].model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    best = merge_adapter(model, run_dir, setup["tokenizer"]) if setup["selection"].peft else load_best(model, run_dir / "model")
    best.eval()
    # The saved best model of a full or partial run was scored on the validation split when it was picked
    # (the same weights); a merged adapter differs from what trained by float error, so it is scored again.
    final = {split: steps.best_validation if split == "validation" and steps.best_validation is not None else steps.evaluate(best, split, shard=False)
             for split in ("validation", "test") if split in steps.encoded}
    final["train"] = train_report(result, cfg.training.metric, cache, trainable, setup["pruned_last_layer"])
    probe = setup["probe"]
    if probe:
        before, after = setup["probe_before"], probe.score(probe.encoder_state(best), accelerator.device)
        final["probe"] = {"run": cfg.strategy.probe, "before": before, "after": after}
        say(f"forgetting probe ({cfg.strategy.probe}): " + ", ".join(f"{k} {before[k]:.4f} -> {after[k]:.4f}" for k in after if k in ("accuracy", "f1_micro")))
    final["truncated"] = setup["data"].report["truncated"]
    (run_dir / "metrics.json").write_text(json.dumps(final, indent=2))
    log.write({"final": {k: headline(v) if k in ("validation", "test") else v for k, v in final.items()}})
    summarize(final, run_dir, {split: len(enc) for split, enc in steps.encoded.items()})


def enable_checkpointing(model) -> None:
    """Activation checkpointing per layer (non-reentrant: correct when the layer inputs need no grad)."""
    if not model.supports_gradient_checkpointing:
        raise UserError("training.gradient_checkpointing", f"{type(model).__name__} does not support it",
                        "set training.gradient_checkpointing: false")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def train_report(result, metric: str, cache, trainable: int, pruned_last_layer: bool) -> dict:
    """The `train` section of metrics.json."""
    return {"steps": result.steps, "epochs": round(result.epochs_run, 3), "seconds": round(result.seconds, 2),
            "samples_per_s": round(result.samples / result.seconds, 2), "tokens_per_s": round(result.tokens / result.seconds, 1),
            "best_step": result.best_step, "best_" + metric: result.best_metric, "stopped_early": result.stopped_early,
            "skipped_steps": result.skipped_steps, "feature_cache": cache.report if cache else None,
            "trainable_params": trainable, "pruned_last_layer": pruned_last_layer}


def build_feature_cache(model, k: int, encoded: dict, pad_id: int, num_labels: int, multi: bool, t, device, run_dir: Path, log, say):
    """Compute the frozen bottom's output for the training and validation examples, once."""
    import time

    from weitiao.data.batching import sorted_batches
    from weitiao.tasks import classification as task
    from weitiao.train.feature_cache import FeatureCache
    from weitiao.train.memory import release_host_memory

    cache = FeatureCache(model.to(device), k)
    seconds = {}
    for split in ("train", "validation"):
        start = time.perf_counter()
        enc = encoded[split]
        # Training-size batches: the pass keeps no activations, so this never needs more memory than a training step
        cache.build(split, sorted_batches(enc.lengths, t.batch_size), lambda idx, enc=enc: task.collate(enc, idx, pad_id, num_labels, multi),
                    enc.lengths, device, run_dir, int(t.feature_cache_memory_gb * 2**30))
        seconds[split] = round(time.perf_counter() - start, 2)
    layers = len(cache.stack)
    # Without the cache every epoch after the first runs the same frozen forward pass again (about what
    # building the training split took), and so does every evaluation of the validation split.
    n_train = len(encoded["train"])
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


def auto_batch(model, train_enc, lengths, t, pad_id: int, num_labels: int, multi: bool, accelerator, say):
    """training.auto_batch_size: on a GPU, the largest batch of the longest texts that fits."""
    import torch

    from weitiao.tasks import classification as task
    from weitiao.train.memory import fit_batch_size

    if accelerator.device.type != "cuda":
        say("auto_batch_size: not on a GPU, keeping training.batch_size")
        return t
    longest = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    model.to(accelerator.device)

    def try_batch(size: int) -> None:
        batch = {k: v.to(accelerator.device) for k, v in task.collate(train_enc, longest[:size], pad_id, num_labels, multi).items()}
        labels = batch.pop("labels")
        with accelerator.autocast():
            task.loss_fn(model(**batch).logits, labels, multi).backward()
        model.zero_grad(set_to_none=True)

    size, accum = fit_batch_size(try_batch, t.batch_size, t.grad_accum)
    torch.cuda.empty_cache()
    if size != t.batch_size:
        say(f"auto_batch_size: batch {t.batch_size} does not fit; using {size} x {accum} accumulation steps")
    return t.model_copy(update={"batch_size": size, "grad_accum": accum})


def strategy_line(cfg: RunConfig) -> str:
    """The strategy in one line: the method and every option set beside it."""
    s = cfg.strategy
    options = {k: getattr(s, k) for k in sorted(s.model_fields_set - {"method"})}
    return s.method + (" (" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")" if options else "")


def save_adapter(model, tokenizer, target: Path) -> None:
    """A peft adapter folder (PeftModel.save_pretrained: adapter_config.json + weights, head included)."""
    _atomic_folder(target, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))


def merge_adapter(peft_model, run_dir: Path, tokenizer):
    """Load the best adapter (adapter/) into the trained peft model, merge it in place, write model/.

    Merging into the model that trained (not a fresh copy of the base) keeps one model in
    memory. Prompt-learning methods (prefix, prompt, P-tuning) add virtual tokens that no
    weight can absorb: their model/ is the adapter beside the base model's config (with the
    label names), loaded by `build_model_from_run` (peft needed).

    Returns:
        The model that model/ holds, ready to score.
    """
    from peft import set_peft_model_state_dict
    from peft.utils import ModulesToSaveWrapper
    from safetensors.torch import load_file

    adapter = run_dir / "adapter"
    set_peft_model_state_dict(peft_model, load_file(str(adapter / "adapter_model.safetensors")))
    if peft_model.peft_config["default"].is_prompt_learning:
        def write(tmp: Path) -> None:
            shutil.copytree(adapter, tmp)
            peft_model.get_base_model().config.save_pretrained(tmp)
        _atomic_folder(run_dir / "model", write)
        return peft_model
    merged = peft_model.merge_and_unload()
    # Some methods (LN tuning in peft 0.21) leave the saved head wrapped after merging: unwrap it.
    for name, module in list(merged.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            setattr(merged.get_submodule(parent) if parent else merged, child, module.modules_to_save["default"])
    save_model(merged, tokenizer, run_dir / "model")
    return merged


def load_best(model, model_dir: Path):
    """The best weights (model/) into the model that trained, so that no second copy is built.

    Tensor by tensor from the file, skipping the frozen parameters (bitwise what is in memory
    already): the peak grows by one tensor, not by a second model.
    """
    import torch
    from safetensors import safe_open

    weights = model_dir / "model.safetensors"
    own = model.state_dict()
    if weights.is_file():
        with safe_open(str(weights), "pt") as f:
            keys = list(f.keys())
            if set(keys) <= own.keys():  # tied weights may be absent from the file
                frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
                with torch.no_grad():
                    for key in keys:
                        if key not in frozen:
                            own[key].copy_(f.get_tensor(key))
                return model
    from weitiao.tasks.classification import build_model_from_run  # a sharded save, or keys it does not know

    return build_model_from_run(model_dir)


def save_model(model, tokenizer, target: Path) -> None:
    """Write a Hugging Face model folder atomically (temp folder, then rename)."""
    _atomic_folder(target, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))


def _atomic_folder(target: Path, write) -> None:
    """Call `write(tmp)` to fill a temporary folder, then swap it in for `target`."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def summarize(final: dict, run_dir: Path, sizes: dict[str, int]) -> None:
    v, tr, cut = final["validation"], final["train"], final["truncated"]
    parts = [f"{k}={v[k]:.4f}" for k in ("accuracy", "f1_macro", "f1_micro", "subset_accuracy", "roc_auc") if v.get(k) is not None]
    say("")
    say(f"validation: {', '.join(parts)} (n={v['n']})")
    if "test" in final:
        te = final["test"]
        say("test: " + ", ".join(f"{k}={te[k]:.4f}" for k in ("accuracy", "f1_macro", "f1_micro", "subset_accuracy") if te.get(k) is not None))
    say(f"time: {tr['seconds']:.1f}s for {tr['steps']} steps ({tr['samples_per_s']:.1f} samples/s)")
    if any(cut.get(split) for split in sizes):
        say(f"cut to data.max_length ({cut['max_length']} tokens): " + ", ".join(f"{cut[s]} of {n} {s} texts" for s, n in sizes.items())
            + " (raise data.max_length to keep more of them)")
    say(f"run folder: {run_dir}  (model in {run_dir / 'model'})")
