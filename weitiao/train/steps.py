"""What the training loop asks of a run, answered by its task: batches from indices, the loss of a
batch, the metrics of a split (sharded over processes), a generative task's answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

from weitiao.errors import Diverged
from weitiao.rundir import GENERATIONS


class TaskSteps:
    """What the loop asks of a run: batches from indices, the loss of a batch, metrics of a split,
    each answered by the task. With a feature cache, the frozen bottom's output is replayed."""

    def __init__(self, task, opts, encoded: dict, names: list[str], pad_id: int, accelerator, eval_batch: int,
                 label_smoothing: float = 0.0, multiple: int = 1):
        self.task, self.opts, self.encoded, self.names, self.pad_id = task, opts, encoded, names, pad_id
        self.accelerator, self.eval_batch, self.label_smoothing, self.multiple = accelerator, eval_batch, label_smoothing, multiple
        self.cache = None
        self.latest_validation = self.best_validation = None  # full metrics of the last evaluation, and of the saved best model
        self.processor = None  # the tokenizer (generative tasks generate at evaluation)
        self.head_fit: dict | None = None  # how a solver fitted the head before training (metrics.json train.head_fit)
        self.latest_generations: list[dict] = []  # a generative task's answers to held-out prompts at the last evaluation

    def collate(self, split: str, index: list[int], multiple: int = 1) -> dict:
        return self.task.collate(self.encoded[split], index, self.pad_id, len(self.names), self.opts, multiple)

    def make_batch(self, index: list[int]) -> dict:
        batch = self.collate("train", index, self.multiple)
        if self.cache:
            batch["cache_index"] = list(index)  # stays on the host (the loop moves only tensors)
        return batch

    def logits(self, m, batch: dict, split: str = "train", index: list[int] | None = None, labels=None):
        if self.cache is None:
            from weitiao.tasks.common.scoring import task_forward

            return task_forward(self.task, m, batch, labels)
        index = batch.pop("cache_index") if index is None else index
        longest = batch["input_ids"].shape[1] if "input_ids" in batch else 1
        with self.cache.replaying(self.cache.batch(split, index, longest)):
            return m(**batch).logits

    def loss(self, m, batch: dict):
        """The loss summed over the batch's targets (the loop normalizes over the accumulation window)."""
        labels = batch.pop("labels")
        augment = self.task.augment  # optional: a task that transforms training batches on their device
        if augment is not None:
            batch = augment(batch, self.encoded["train"], self.opts)
        return self.task.loss(self.logits(m, batch, labels=labels), labels, self.opts, self.label_smoothing)[0]

    def count_targets(self, batch: dict) -> int:
        return self.task.count_targets(batch)

    def validation_headline(self, m) -> dict:
        self.latest_validation = self.evaluate(m, "validation")
        return self.task.headline(self.latest_validation)

    def evaluate(self, m, split: str, shard: bool = True) -> dict:
        """Every process scores every world-th row; the pieces are gathered (each once).

        With shard=False (the final scores, main process only) this process scores them all.
        """
        from accelerate.utils import gather_object

        from weitiao.tasks.common.scoring import score, task_metrics
        from weitiao.train.memory import release_host_memory

        release_host_memory()  # what the training steps freed, before evaluation allocates its own
        acc, enc = self.accelerator, self.encoded[split]
        world = acc.num_processes
        shard = shard and world > 1
        mine = list(range(acc.process_index, len(enc), world)) if shard else list(range(len(enc)))
        cached = self.cache is not None and split in self.cache.splits
        forward = (lambda model_, batch, idx: self.logits(model_, batch, split, [mine[j] for j in idx])) if cached else None
        scored = score(acc.unwrap_model(m), self.task, enc.subset(mine) if shard else enc, self.pad_id, len(self.names), self.opts,
                       self.eval_batch, acc.device, forward)
        pieces = gather_object([(mine, scored)]) if shard else [(mine, scored)]
        outputs: list = [None] * len(enc)
        for index, part in pieces:
            for i, out in zip(index, part.outputs):
                outputs[i] = out
        loss_sum = sum(part.loss_sum for _, part in pieces)
        if not math.isfinite(loss_sum):  # NaN logits would reach the metrics (ROC-AUC refuses them with a traceback)
            raise Diverged(f"the model's {split} loss is not finite: the weights diverged")
        metrics, records = task_metrics(self.task, acc.unwrap_model(m), enc, outputs, self.names, self.opts, self.processor, acc.device)
        count = sum(part.count for _, part in pieces)
        metrics["loss"] = loss_sum / max(count, 1)
        if split == "validation":
            self.latest_generations = records  # a generative task's answers to held-out prompts (generations.jsonl)
        release_host_memory()  # evaluation batches are larger than training ones: give their buffers back
        return metrics


def write_generations(run_dir: Path, step: int, records: list[dict]) -> None:
    """A generative task's answers to its held-out prompts at one evaluation, beside their references
    (generations.jsonl in the run folder, one line per prompt, each with the step)."""
    if not records:  # a task that does not generate writes no file
        return
    with open(run_dir / GENERATIONS, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({"step": step, **r}, ensure_ascii=False) + "\n")
