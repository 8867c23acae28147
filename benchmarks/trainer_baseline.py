"""The usual stack, for benchmarks/compare_trainer.py: fine-tune with transformers' `Trainer`.

One variant per process (the caller measures its wall time and peak RSS). Data come from a
TSV with a header (`sentence`, `label`), read without quoting, as weitiao reads TSV. Writes the
raw numbers of the run as JSON (`--result`).

Padding variants:
  max_length  the tokenizer pads every text to --max-length (what most tutorials do)
  dynamic     DataCollatorWithPadding: pad to the longest text of each random batch
  grouped     dynamic padding + train_sampling_strategy="group_by_length" (transformers 5's
              name for the `group_by_length=True` of 4.x): LengthGroupedSampler

Methods: full, lora (peft, LoRA on BERT's default query/value), head_only and train_top
(requires_grad=False on the frozen parameters).

Only instrumentation is added to a plain Trainer run: counts of the real tokens and padded
positions of the batches its training steps receive, a timer around evaluation (so
time-to-accuracy excludes it), and a callback that stops at a target accuracy or a time budget.

    .venv/bin/python benchmarks/trainer_baseline.py --train T.tsv --dev D.tsv --model PATH \
        --padding grouped --method full --result out.json
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path


def read_tsv(path: str, text_column: str = "sentence", label_column: str = "label") -> tuple[list[str], list[int]]:
    """Texts (stripped, as weitiao strips them) and integer labels of a headed, unquoted TSV."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    head, body = rows[0], [r for r in rows[1:] if r]
    t, y = head.index(text_column), head.index(label_column)
    return [r[t].strip() for r in body], [int(r[y]) for r in body]


def freeze(model, method: str, top_layers: int) -> None:
    """head_only: only bert.pooler and classifier learn; train_top: also the top `top_layers` layers."""
    layers = model.config.num_hidden_layers
    trainable = ["bert.pooler.", "classifier."]
    if method == "train_top":
        trainable += [f"bert.encoder.layer.{i}." for i in range(layers - top_layers, layers)]
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(tuple(trainable))


def build_model(path: str, method: str, top_layers: int, seed: int, attention: str | None = None):
    """The model as the method wants it, and the parameter count of the plain model."""
    from transformers import AutoModelForSequenceClassification, set_seed

    set_seed(seed)  # the new head's initial weights
    extra = {"attn_implementation": attention} if attention else {}
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, **extra)
    attention_used = model.config._attn_implementation
    total = sum(p.numel() for p in model.parameters())
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        # weitiao saves (and trains) BERT's pooler with the classifier; peft's SEQ_CLS default
        # would train only the classifier. Named here so both runs train the same parameters.
        config = LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.05,
                            modules_to_save=["bert.pooler.dense", "classifier"])
        model = get_peft_model(model, config)
    elif method in ("head_only", "train_top"):
        freeze(model, method, top_layers)
    return model, total, attention_used


def tokenized(tokenizer, texts: list[str], labels: list[int], max_length: int, pad_to_max: bool):
    """A `datasets.Dataset`, tokenized with `map`, as the tutorials do (a plain list of dicts where
    `datasets` is not installed, as on the GPU machine; Trainer takes either)."""
    pad = "max_length" if pad_to_max else False
    try:
        from datasets import Dataset
    except ImportError:
        enc = tokenizer(texts, truncation=True, max_length=max_length, padding=pad)
        return [{**{k: v[i] for k, v in enc.items()}, "label": labels[i]} for i in range(len(texts))]
    ds = Dataset.from_dict({"sentence": texts, "label": labels})
    return ds.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=max_length, padding=pad),
                  batched=True, remove_columns=["sentence"])


def make_trainer_class():
    from transformers import Trainer

    class CountingTrainer(Trainer):
        """Trainer that counts what its training steps see and times its evaluations.

        Counts come from the inputs of `training_step` (not from the collator: accelerate's
        dataloader collates one batch ahead). attention_mask [batch, longest]: its sum is the
        real tokens, its size the positions computed, so 1 - real/positions is the padding
        share of the batches actually trained on.
        """

        samples = real_tokens = positions = batches = 0
        eval_seconds = 0.0

        def training_step(self, model, inputs, num_items_in_batch=None):
            mask = inputs["attention_mask"]
            self.samples += mask.shape[0]
            self.real_tokens += int(mask.sum())
            self.positions += mask.numel()
            self.batches += 1
            return super().training_step(model, inputs, num_items_in_batch)

        def evaluate(self, *args, **kwargs):
            start = self.eval_start = time.perf_counter()
            try:
                return super().evaluate(*args, **kwargs)
            finally:
                self.eval_seconds += time.perf_counter() - start

    return CountingTrainer


def make_callback(trainer_box: dict, target: float | None, budget_s: float | None, history: list, outcome: dict):
    from transformers import TrainerCallback

    class TargetCallback(TrainerCallback):
        """Stops at `target` dev accuracy or after `budget_s` of training (evaluation excluded)."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def training_seconds(self, until: float | None = None) -> float:
            """Seconds since training began, evaluations excluded (eval_seconds holds the finished ones)."""
            return (until or time.perf_counter()) - self.start - trainer_box["trainer"].eval_seconds

        def on_step_end(self, args, state, control, **kwargs):
            if budget_s is not None and self.training_seconds() > budget_s:
                outcome["budget_exhausted"] = True
                control.should_training_stop = True

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            acc = (metrics or {}).get("eval_accuracy")
            # Called from inside evaluate(): training stopped when this evaluation started.
            train_s = self.training_seconds(until=trainer_box["trainer"].eval_start)
            history.append({"step": state.global_step, "train_s": round(train_s, 2), "accuracy": acc})
            if target is not None and acc is not None and acc >= target and "time_to_target_s" not in outcome:
                outcome["time_to_target_s"] = history[-1]["train_s"]
                outcome["step_at_target"] = state.global_step
                control.should_training_stop = True

    return TargetCallback()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--padding", choices=["max_length", "dynamic", "grouped"], default="grouped")
    ap.add_argument("--method", choices=["full", "lora", "head_only", "train_top"], default="full")
    ap.add_argument("--top-layers", type=int, default=2, help="train_top: layers trained at the top")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-batch-size", type=int, default=128)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--warmup-ratio", type=float, default=0.06)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--optim", default=None, help="TrainingArguments.optim (default: transformers' own default)")
    ap.add_argument("--attention", default=None, help="attn_implementation (default: transformers' own, sdpa)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU)")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--eval-every", type=int, default=None, help="evaluate every N steps during training (time to accuracy)")
    ap.add_argument("--target", type=float, default=None, help="stop when dev accuracy reaches this")
    ap.add_argument("--budget-min", type=float, default=None, help="stop after this many minutes of training (evaluation excluded)")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--result", required=True, help="JSON file for the raw numbers")
    args = ap.parse_args()

    import numpy as np
    import torch
    from transformers import AutoTokenizer, DataCollatorWithPadding, TrainingArguments
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    pad_to_max = args.padding == "max_length"
    train_ds = tokenized(tokenizer, *read_tsv(args.train), args.max_length, pad_to_max)
    dev_ds = tokenized(tokenizer, *read_tsv(args.dev), args.max_length, pad_to_max)
    model, total_params, attention = build_model(args.model, args.method, args.top_layers, args.seed, args.attention)

    optim = {"optim": args.optim} if args.optim else {}
    training_args = TrainingArguments(
        output_dir=args.output_dir, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.eval_batch_size,
        learning_rate=args.lr, weight_decay=args.weight_decay, lr_scheduler_type="linear",
        warmup_steps=args.warmup_ratio,  # transformers 5: a float below 1 is a ratio (warmup_ratio is gone)
        num_train_epochs=args.epochs, max_steps=args.max_steps, seed=args.seed, report_to="none", save_strategy="no",
        eval_strategy="steps" if args.eval_every else "no", eval_steps=args.eval_every,
        logging_strategy="steps", logging_steps=50, disable_tqdm=True, dataloader_num_workers=0, use_cpu=args.device == "cpu",
        bf16=args.bf16, gradient_checkpointing=args.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if args.padding == "grouped" else "random", **optim)

    history: list[dict] = []
    outcome: dict = {}
    box: dict = {}
    budget_s = args.budget_min * 60 if args.budget_min else None
    trainer = make_trainer_class()(
        model=model, args=training_args, train_dataset=train_ds, eval_dataset=dev_ds if args.eval_every else None,
        processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=lambda p: {"accuracy": float((np.argmax(p.predictions, axis=-1) == p.label_ids).mean())},
        callbacks=[make_callback(box, args.target, budget_s, history, outcome)])
    box["trainer"] = trainer

    wall, monotonic = time.time(), time.perf_counter()
    train_metrics = trainer.train().metrics
    # Trainer's train_runtime is time.time() arithmetic: a step of the system clock during training (seen on this VM:
    # train_runtime 55 s in a 44 s process) lands in it. Take the step out; weitiao's side uses perf_counter.
    clock_step = (time.time() - wall) - (time.perf_counter() - monotonic)
    clock_step = clock_step if abs(clock_step) > 0.05 else 0.0
    runtime = train_metrics["train_runtime"]
    result = {
        "train_runtime": runtime, "clock_step_s": round(clock_step, 3),
        "train_seconds": runtime - clock_step - trainer.eval_seconds, "eval_seconds_in_train": trainer.eval_seconds,
        "steps": trainer.state.global_step, "samples": trainer.samples, "batches": trainer.batches,
        "real_tokens": trainer.real_tokens, "positions": trainer.positions,
        "padding": 1 - trainer.real_tokens / trainer.positions if trainer.positions else None,
        "total_params": total_params, "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "optim": str(training_args.optim.value if hasattr(training_args.optim, "value") else training_args.optim),
        "attention": attention, "train_loss": train_metrics.get("train_loss"), "history": history, **outcome,
    }
    if torch.cuda.is_available():
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if args.eval_every:
        result["best_accuracy"] = max((h["accuracy"] for h in history if h["accuracy"] is not None), default=None)
    else:
        pred = trainer.predict(dev_ds)
        result["accuracy"] = float((np.argmax(pred.predictions, axis=-1) == pred.label_ids).mean())
        result["dev_n"] = len(dev_ds)
    Path(args.result).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))


if __name__ == "__main__":
    main()
