"""`weitiao train`: setup -> train -> finish, the way one run goes.

Everything that can fail on the user's input (config, data, model name, run folder) is
checked before the run folder is created, so a mistake writes nothing. The recipe knows no
task by name: it asks the task the config names (weitiao/tasks/) for everything task-shaped.
`train` is the entry point that reads the config; below `prepare`, functions take plain values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from weitiao.config import RunConfig, dump_config, flat_config
from weitiao.errors import UserError
from weitiao.rundir import CHECKPOINTS, CONFIG, METRICS, METRICS_LOG, MODEL
from weitiao.runtime import eval_batch_size, pick_device, quiet_hf, say  # noqa: F401 (pick_device, quiet_hf: part of this module's API)
from weitiao.train.saving import load_best, merge_adapter, save_adapter, save_model, store_in_config  # noqa: F401
from weitiao.train.speedups import auto_batch, build_body_cache, build_feature_cache, enable_checkpointing
from weitiao.train.steps import TaskSteps, write_generations


def train(cfg: RunConfig, name: str, overwrite: bool = False, resume: str | None = None, force: bool = False,
          on_eval: Callable[[dict], None] | None = None) -> Path:
    """Run one fine-tuning as configured, or continue one (`resume`: a run folder or "auto").

    `on_eval(record)`: called after every evaluation with its metrics.jsonl record (a search prunes
    a trial by raising there).

    Returns the run folder.
    """
    from weitiao.rundir.folder import check_run_dir, refuse_if_locked

    checkpoint = None
    if resume:
        run_dir, checkpoint = find_checkpoint(cfg, resume, name, force)
        refuse_if_locked(run_dir)
    else:
        run_dir = check_run_dir(cfg.output.dir, name, overwrite)
    setup = prepare(cfg)  # data, strategy, device, model, probe, parameter groups: all user errors surface here
    return fit(cfg, setup, run_dir, overwrite, setup.cuda, checkpoint, on_eval)


def find_checkpoint(cfg: RunConfig, resume: str, name: str | None, force: bool) -> tuple[Path, Path]:
    """The run folder and its newest intact checkpoint, after checking it is the same run."""
    from weitiao.train.checkpoint import latest_valid
    from weitiao.train.resume import check_same_run, data_fingerprint, resolve_resume

    run_dir = resolve_resume(resume, cfg.output.dir, name)
    if (run_dir / METRICS).is_file():  # resuming would only rewrite its final scores, with the time of no training
        raise UserError("--resume", f"'{run_dir}' has finished (its metrics.json is written): nothing is left to resume",
                        "train a new run (another --name), or start this one again with --overwrite")
    folder, torn = latest_valid(run_dir / CHECKPOINTS)
    for bad in torn:
        say(f"checkpoint {bad} is incomplete or corrupt (checksum mismatch): using an earlier one")
    if folder is None:
        raise UserError("--resume", f"'{run_dir}' has no complete checkpoint", "start the run again (with --overwrite)")
    meta = json.loads((folder / "meta.json").read_text())
    check_same_run(run_dir, cfg.model_dump(mode="json"), data_fingerprint(cfg.data, cfg.task), meta, force)
    if (meta.get("loop") or {}).get("best_step") is not None and not (run_dir / MODEL).is_dir():
        raise UserError("--resume", f"'{run_dir / MODEL}' (the best model so far, from step {meta['loop']['best_step']}) is missing",
                        "put it back, or start the run again with --overwrite")
    say(f"resuming {run_dir} from {folder.name}")
    return run_dir, folder


@dataclass
class Prepared:
    """What `prepare` builds from the config, for `fit` to train."""

    task: object  # the registered Task
    opts: object  # its `task:` section
    data: object  # DataBundle
    tokenizer: object
    encoded: dict  # split -> the task's encoded rows
    selection: object  # strategies.Selection: the model to train and how its trainable set changes
    model_path: str
    cuda: bool
    mixed_precision: str
    new_names: set[str]  # the parameters the task added (its head)
    probe: object | None  # ForgettingProbe
    probe_before: dict | None
    pruned_last_layer: bool
    groups: list[dict]  # optimizer parameter groups
    l2sp: object | None


def prepare(cfg: RunConfig) -> Prepared:
    from weitiao.data import load_task_data
    from weitiao.tasks import get_task

    task, opts = get_task(cfg.task.type), cfg.task
    # The data first: it needs no torch, so a mistake in it is reported at once.
    data = load_task_data(task, cfg.data, opts, cfg.training.seed)

    import torch

    from weitiao.evaluate.forgetting import make_probe
    from weitiao.models import resolve_model
    from weitiao.models.last_layer import prune_last_layer
    from weitiao.strategies import apply_strategy, get_strategy
    from weitiao.strategies.l2sp import l2sp_for
    from weitiao.strategies.lr_groups import build_param_groups

    quiet_hf()
    s, t = cfg.strategy, cfg.training
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    get_strategy(s)  # an unknown method or a misplaced option fails before the model loads
    cuda, mixed_precision = pick_device(t.device, t.mixed_precision)
    from weitiao.train.distill import student_model

    path = student_model(cfg.student, cfg.distill, cfg.model, "model" in cfg.model_fields_set) or resolve_model(cfg.model)  # distillation into fewer layers: the teacher's model, cut
    tokenizer = task.processor(path, cfg.model, cfg.data.max_length)  # checked: a pad token, positions for data.max_length
    names = data.labels.names
    encoded = {split: task.encode(tokenizer, ex, cfg.data.max_length, opts, names)
               for split, ex in (("train", data.train), ("validation", data.validation), ("test", data.test)) if ex is not None}
    torch.manual_seed(t.seed)  # the new head's initial weights
    # auto: the library's choice on a GPU; on a CPU eager (BERT-sized encoders: faster there), or the task's own
    # (a causal LM: SDPA, which keeps no attention matrices for the backward pass)
    attention = t.attention if t.attention != "auto" else (None if cuda else task.cpu_attention)
    data.report["truncated"] = {split: enc.truncated for split, enc in encoded.items()} | {"max_length": cfg.data.max_length}
    dropped = {split: enc.dropped for split, enc in encoded.items() if getattr(enc, "dropped", 0)}
    if dropped:  # examples with nothing left to learn once cut to data.max_length (a response cut away)
        data.report["dropped_no_targets"] = dropped
        say(f"dropped {', '.join(f'{n} {split}' for split, n in dropped.items())} example(s) whose every target token lies past "
            f"data.max_length ({cfg.data.max_length} tokens); raise data.max_length to keep them")
    skipped = {split: getattr(enc, "skipped", []) for split, enc in encoded.items()}
    if any(skipped.values()):  # images that could not be decoded
        data.report["unreadable"] = {split: len(bad) for split, bad in skipped.items()}
        for split, bad in skipped.items():
            for file, reason in bad[:3]:
                say(f"skipped unreadable {split} file '{file}' ({reason})")
    if cfg.distill and cfg.distill.teacher:
        from weitiao.train.distill import with_teacher

        task = with_teacher(task, cfg.distill, cfg.data, opts, data, encoded, names, tokenizer, say)  # training batches carry the teacher's logits
    model, new_names = task.build(path, names, opts, s.dropout.model_dump(), attention, getattr(tokenizer, "pad_token_id", None))
    task.configure_model(model, tokenizer, opts, encoded["train"])  # what the task settles from its processor (a causal LM: where generation stops)
    if t.gradient_checkpointing:
        enable_checkpointing(model)
    # Only where the task reads one position (a sequence classifier): a token classifier needs every output.
    pruned = t.prune_last_layer and task.reads_one_position and prune_last_layer(model)
    probe = before = None
    if s.probe:
        probe = make_probe(s.probe, task, opts, cfg.data, tokenizer, eval_batch_size(t.eval_batch_size, cuda))
        before = probe.score(probe.encoder_state(model), torch.device("cuda" if cuda else "cpu"))  # where `after` is scored
    selection = apply_strategy(model, s, task.peft_task_type)
    groups = build_param_groups(selection.model, selection.all_trainable_later or None, t.lr, t.weight_decay,
                                s.layer_lr_decay, s.head_lr, s.lr_overrides)
    scale = task.head_lr_scale(opts)
    if s.head_lr is None and scale != 1 and any(g["name"] == "head" for g in groups) and any(g["name"] != "head" for g in groups):
        groups = build_param_groups(selection.model, selection.all_trainable_later or None, t.lr, t.weight_decay,
                                    s.layer_lr_decay, t.lr * scale, s.lr_overrides)
        say(f"head LR: {scale:g}x training.lr, this task's default when the body learns too (strategy.head_lr sets it)")
    if not any(g["params"] for g in groups):  # found before the run folder is touched (an --overwrite keeps the old run)
        raise UserError("strategy.exclude" if s.exclude else "strategy", f"{s.method}{' with these include/exclude patterns' if s.include or s.exclude else ''} "
                        "leaves no parameter to train", "loosen strategy.exclude (or widen strategy.include)")
    l2sp = l2sp_for(selection.model, new_names, s.l2sp, s.l2sp_beta, only={id(p) for g in groups for p in g["params"]})
    return Prepared(task, opts, data, tokenizer, encoded, selection, path, cuda, mixed_precision, new_names, probe, before,
                    pruned, groups, l2sp)


def fit(cfg: RunConfig, setup: Prepared, run_dir: Path, overwrite: bool, cuda: bool, checkpoint: Path | None = None,
        on_eval: Callable[[dict], None] | None = None) -> Path:
    """Create (or reopen, to resume) the run folder, lock it, and train into it.

    Under `accelerate launch` only the main process writes the folder; all of them train.
    """
    from accelerate import Accelerator

    from weitiao.rundir.folder import MetricsLog, NewRunFolder, NullLog, RunLock, write_env
    from weitiao.train.resume import truncate_metrics

    t = cfg.training
    trackers = tracking(cfg.output.tracking)
    accelerator = Accelerator(cpu=not cuda, mixed_precision=setup.mixed_precision, log_with=trackers or None,
                              project_dir=str(run_dir) if trackers else None)
    main = accelerator.is_main_process
    lock = folder = None
    try:
        if main:
            if checkpoint is None:
                folder = NewRunFolder(run_dir, overwrite)
                lock = folder.lock
                (run_dir / CONFIG).write_text(dump_config(cfg), encoding="utf-8")
                write_env(run_dir, t.seed, str(accelerator.device), accelerator.num_processes, setup.mixed_precision)
            else:
                lock = RunLock(run_dir)
        accelerator.wait_for_everyone()
        if trackers:
            accelerator.init_trackers("tensorboard" if trackers == ["tensorboard"] else "tracking", config={k: v for k, v in flat_config(cfg.model_dump(mode="json")).items() if isinstance(v, (int, float, str, bool))})
        log = MetricsLog(run_dir / METRICS_LOG, accelerator if trackers else None) if main else NullLog()
        if checkpoint is not None:
            meta = json.loads((checkpoint / "meta.json").read_text())
            if main:
                truncate_metrics(log.path, meta["metrics_lines"])
                log = MetricsLog(log.path, log.tracker)
            log.write({"step": meta["step"], "resumed_from": checkpoint.name})
        else:
            log.write({"data": setup.data.report})
        return _fit(cfg, setup, run_dir, accelerator, log, checkpoint, started=folder.started if folder else lambda: None, on_eval=on_eval)
    except BaseException:
        if lock:
            lock.release()
            lock = None
        if folder:
            folder.abandon()  # only before training started: the old run (with --overwrite) is back
        raise
    finally:
        if trackers:
            accelerator.end_training()
        if lock:
            lock.release()


def tracking(setting) -> list[str]:
    """output.tracking as accelerate's log_with list ([] for none); an unknown or missing tracker is a UserError."""
    names = [setting] if isinstance(setting, str) else list(setting)
    names = [n for n in names if n and n != "none"]
    if not names:
        return []
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise UserError("output.tracking", f"unknown tracker {name!r}", f"use none or some of {', '.join(sorted(LOGGER_TYPE_TO_CLASS))}")
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "mlflow": is_mlflow_available}
    for name in names:
        if name in available and not available[name]():
            raise UserError("output.tracking", f"{name} is not installed", f"pip install {name}, or set output.tracking: tensorboard")
    return names


def _fit(cfg: RunConfig, setup: Prepared, run_dir: Path, accelerator, log, checkpoint: Path | None, started, on_eval=None) -> Path:
    import torch

    from weitiao.data.batching import length_grouped_batches, padding_fraction
    from weitiao.strategies.lr_groups import lr_table
    from weitiao.strategies.report import parameter_table
    from weitiao.tasks.common.scoring import pad_id
    from weitiao.train.feature_cache import frozen_body, frozen_bottom, frozen_modules
    from weitiao.train.loop import train_loop
    from weitiao.train.resume import config_hash, data_fingerprint

    task, opts, encoded, selection, tokenizer = setup.task, setup.opts, setup.encoded, setup.selection, setup.tokenizer
    model, t, s = selection.model, cfg.training, cfg.strategy
    names = setup.data.labels.names
    main, world = accelerator.is_main_process, accelerator.num_processes
    tell = say if main else (lambda msg="": None)

    tell(f"run folder: {run_dir}")
    tell(f"data: {json.dumps(setup.data.report)}")
    tell(f"task: {task.describe(opts)}; strategy: {strategy_line(s)}; model: {cfg.model}; device: {accelerator.device}"
         + (f" x {world} processes" if world > 1 else ""))
    tell(parameter_table(model))
    if main and checkpoint is None:  # for the report: the table as data
        from weitiao.strategies.report import parameter_rows

        log.write({"parameters": [{"module": n, "trainable": tr, "total": tot} for n, tr, tot in parameter_rows(model)]})
    if setup.pruned_last_layer:
        tell("last layer: the head reads only the first token, so that layer computes only its output "
             "(keys and values still from every token; training.prune_last_layer: false turns this off)")
    tell("learning rates:\n" + lr_table(setup.groups))

    # On a GPU a step costs little compute but every new sequence length costs kernel selection and
    # allocations: lengths rounded up to 8 keep the shapes few (measured in docs/benchmarks.md).
    multiple = t.pad_to_multiple_of or (8 if accelerator.device.type == "cuda" else 1)
    steps = TaskSteps(task, opts, encoded, names, pad_id(tokenizer), accelerator, eval_batch_size(t.eval_batch_size, accelerator.device.type == "cuda"),
                      s.label_smoothing, multiple)
    steps.processor = tokenizer
    lengths = encoded["train"].lengths
    if t.auto_batch_size:
        t = auto_batch(model, steps, lengths, t, accelerator, tell)
    if task.train_batches is not None:  # a task that decides what goes into a batch (multi-task: one task per batch)
        epoch_batches = lambda epoch: task.train_batches(encoded["train"], t.batch_size, t.seed, epoch, opts, t.group_by_length)  # noqa: E731
    else:
        epoch_batches = lambda epoch: length_grouped_batches(lengths, t.batch_size, t.seed, epoch, group=t.group_by_length)  # noqa: E731
    tell(f"padding in training batches: {100 * padding_fraction(lengths, epoch_batches(0)):.1f}%")

    k = frozen_bottom(model) if selection.on_progress is None else 0
    body = frozen_body(model) if selection.on_progress is None else None
    augment = getattr(opts, "augment", None)
    if body and t.feature_cache and augment and augment.active():
        tell(f"feature cache: off, task.augment ({', '.join(augment.active())}) changes the images every epoch: "
             "the frozen backbone runs on each augmented batch")
    elif body and t.feature_cache:  # a model adapter's whole body is frozen (head_only): cache the head's input
        steps.cache = build_body_cache(model, body, steps, t, accelerator.device, log, tell)
        if s.head_fit == "solver" and checkpoint is None:
            steps.head_fit = solver_head(model, steps, task, opts, len(names), t.metric, log, tell)
    elif k and t.feature_cache and task.feature_cache:
        steps.cache = build_feature_cache(model, k, steps, task.reads_one_position, t, accelerator.device, run_dir, log, tell)
    # A frozen bottom (or body) is a feature extractor: eval mode (no dropout in it), cached or not.
    frozen = [model.get_submodule(body)] if body else frozen_modules(model, k) if k else []

    # Batch norms whose weights are frozen keep their pretrained statistics (eval mode), wherever they are.
    frozen += [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
               and not any(p.requires_grad for p in m.parameters())]

    def train_mode(m):
        m.train()
        for module in frozen:  # a frozen bottom is a feature extractor: no dropout in it, cached or not
            module.eval()

    def save_best(m):
        if selection.peft:
            save_adapter(m, tokenizer, run_dir / "adapter")
        else:
            save_model(m, tokenizer, run_dir / MODEL)
            steps.best_validation = steps.latest_validation  # exactly this model's scores: finish need not score it again

    started()  # the old run folder (replaced with --overwrite) goes now, not before
    result = train_loop(model, accelerator, param_groups=setup.groups, epoch_batches=epoch_batches, make_batch=steps.make_batch,
                        compute_loss=steps.loss, count_targets=steps.count_targets, penalty=setup.l2sp.penalty if setup.l2sp else None,
                        evaluate=steps.validation_headline, save_best=save_best,
                        run_dir=run_dir, log=log, opts=t, on_progress=selection.on_progress, resume=checkpoint,
                        checkpoint_meta={"config_hash": config_hash(cfg.model_dump(mode="json")), "data": data_fingerprint(cfg.data, cfg.task)}, train_mode=train_mode,
                        after_eval=lambda record: (write_generations(run_dir, record["step"], steps.latest_generations),
                                                   on_eval and on_eval(record)), eval_at_start=bool(steps.head_fit))
    if main:
        finish(setup, run_dir, accelerator, log, steps, result, t.metric, s.probe)
        from weitiao.evaluate.report import enabled, write_report

        if enabled(cfg.output.report):
            try:
                say(f"report: {write_report(run_dir)}")
            except Exception as e:  # noqa: BLE001  (the model and metrics are written; `weitiao report RUN` can try again)
                say(f"report: not written ({type(e).__name__}: {e}); `weitiao report {run_dir}` tries again")
    return run_dir


def finish(setup: Prepared, run_dir: Path, accelerator, log, steps: TaskSteps, result, metric: str, probe_run: str | None) -> None:
    """Main process, after training: the best model into model/, its final scores, metrics.json."""
    from weitiao.train.memory import release_host_memory

    task = setup.task
    accelerator.free_memory()  # the optimizer state goes before the final scoring
    release_host_memory()
    model = accelerator.unwrap_model(setup.selection.model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    best = merge_adapter(model, run_dir, setup.tokenizer) if setup.selection.peft else load_best(model, run_dir / MODEL, task.load)
    best.eval()
    # The saved best model of a full or partial run was scored on the validation split when it was picked
    # (the same weights); a merged adapter differs from what trained by float error, so it is scored again.
    final = {"validation": steps.best_validation if steps.best_validation is not None else steps.evaluate(best, "validation", shard=False)}
    settled = task.calibrate(steps.opts, final["validation"])  # e.g. the multi-label threshold validation chose
    if settled:
        store_in_config(best, run_dir / MODEL, settled)
        steps.opts = task.calibrated(steps.opts, settled)
    if "test" in steps.encoded:  # scored as the saved model will be used
        final["test"] = steps.evaluate(best, "test", shard=False)
    final["train"] = train_report(result, metric, steps.cache, trainable, setup.pruned_last_layer)
    if steps.head_fit:
        final["train"]["head_fit"] = {**steps.head_fit, "kept": "solver" if result.best_step == 0 else "gradient"}
        say(f"head: {'the solver' if result.best_step == 0 else 'gradient training'}'s was better on validation and is the saved model")
    probe = setup.probe
    if probe:
        before, after = setup.probe_before, probe.score(probe.encoder_state(best), accelerator.device)
        final["probe"] = {"run": probe_run, "before": before, "after": after}
        say(f"forgetting probe ({probe_run}): " + ", ".join(f"{k} {before[k]:.4f} -> {after[k]:.4f}" for k in after if k != "loss" and after[k] is not None))
    final["truncated"] = setup.data.report["truncated"]
    from weitiao.files import write_text

    write_text(run_dir / METRICS, json.dumps(final, indent=2))  # whole or not at all: a reader never sees half a file
    log.write({"final": {k: task.headline(v) if k in ("validation", "test") else v for k, v in final.items()}})
    summarize(task, final, run_dir, {split: len(getattr(setup.data, split)) for split in steps.encoded})


def train_report(result, metric: str, cache, trainable: int, pruned_last_layer: bool) -> dict:
    """The `train` section of metrics.json."""
    return {"steps": result.steps, "epochs": round(result.epochs_run, 3), "seconds": round(result.seconds, 2),
            "samples_per_s": round(result.samples / result.seconds, 2), "tokens_per_s": round(result.tokens / result.seconds, 1),
            "targets_per_s": round(result.targets / result.seconds, 1),  # examples, or target tokens (token tasks, language models)
            "best_step": result.best_step, "best_" + metric: result.best_metric, "stopped_early": result.stopped_early,
            "skipped_steps": result.skipped_steps, "feature_cache": cache.report if cache else None,
            "trainable_params": trainable, "pruned_last_layer": pruned_last_layer}


def strategy_line(s) -> str:
    """The strategy section in one line: the method and every option set beside it."""
    options = {k: getattr(s, k) for k in sorted(s.model_fields_set - {"method"})}
    return s.method + (" (" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")" if options else "")


def summarize(task, final: dict, run_dir: Path, sizes: dict[str, int]) -> None:
    v, tr, cut = final["validation"], final["train"], final["truncated"]
    say("")
    say(f"validation: {task.summary(v)} (n={v['n']})")
    if "test" in final:
        say(f"test: {task.summary(final['test'])}")
    say(f"time: {tr['seconds']:.1f}s for {tr['steps']} steps ({tr['samples_per_s']:.1f} samples/s)")
    if any(cut.get(split) for split in sizes):
        say(f"{task.too_long.format(n=cut['max_length'])}: " + ", ".join(f"{cut[s]} of {n} {s} inputs" for s, n in sizes.items())
            + f" ({task.too_long_fix})")
    say(f"run folder: {run_dir}  (model in {run_dir / 'model'})")


def solver_head(model, steps: TaskSteps, task, opts, num_labels: int, metric: str, log, say) -> dict | None:
    """head_only on a cached body: the head fitted by L-BFGS (train/head_fit.py) before the loop, when
    it is one linear layer and the task's targets suit a logistic regression; None otherwise."""
    from weitiao.train.head_fit import fit_head, linear_head
    from weitiao.train.loop import higher_is_better

    head, targets = linear_head(model), task.head_targets(steps.encoded["train"], num_labels, opts)
    if head is None or targets is None or "train" not in steps.cache.splits:
        return None
    report = fit_head(head, steps.cache.splits["train"][0], targets, lambda: steps.evaluate(model, "validation", shard=False),
                      metric, higher_is_better(metric))
    if report:
        log.write({"head_fit": report})
        say(f"head: fitted by L-BFGS logistic regression on the cached features, C={report['C']} chosen on validation "
            f"({metric} {report[f'validation_{metric}']:.4f}); gradient training goes on from it and the better on validation is kept "
            "(strategy.head_fit: gradient skips the solver)")
    return report or None

