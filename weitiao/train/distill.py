"""Distillation inside training: the student cut from the teacher's model, the teacher's logits
riding along in each batch, and the loss (Hinton et al. 2015, https://arxiv.org/abs/1503.02531).
The command and the config it reads: weitiao/distill.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

from weitiao.errors import UserError
from weitiao.rundir import MODEL


def student_model(student, distill, model: str, model_given: bool) -> str | None:
    """With `student.layers`: a folder holding the teacher's model cut to that many layers (made once, cached).

    `student`, `distill`: the config's sections (or None); `model`: its model, `model_given`: whether the config set it."""
    if student is None or student.layers is None:
        return None
    if distill is None or not distill.teacher:
        raise UserError("student.layers", "needs a teacher to take the layers from", "run `weitiao distill TEACHER_RUN student.yaml`")
    source = Path(distill.teacher) / MODEL
    if model_given and Path(model) != source:
        raise UserError("model", f"{model!r} is set beside student.layers, which builds the student from the teacher's model",
                        "leave out model, or leave out student.layers to distill into that model")
    stamp = hashlib.sha256((source / "model.safetensors").read_bytes()).hexdigest()[:16] if (source / "model.safetensors").is_file() else "x"
    from weitiao.models.cache import cache_dir

    out = cache_dir("students") / f"{stamp}-{student.layers}"
    if not (out / "config.json").is_file():
        shrink(source, student.layers, out)
    return str(out)


def kept_layers(total: int, keep: int) -> list[int]:
    """Evenly spaced layers, the top one included (6 -> 3: [1, 3, 5]; 12 -> 4: [2, 5, 8, 11])."""
    return [(i + 1) * total // keep - 1 for i in range(keep)]


def shrink(model_dir: Path, layers: int, out: Path) -> None:
    """Save the model of `model_dir` with only `kept_layers` of its layer stack (and its tokenizer) into `out`."""
    from torch import nn
    from transformers import AutoTokenizer

    from weitiao.files import atomic_folder
    from weitiao.models.layers import find_layer_stack
    from weitiao.rundir.opening import open_run

    run = open_run(str(model_dir.parent), prune=False)
    model = run.model
    prefix, stack = find_layer_stack(model)
    if not 1 <= layers < len(stack):
        raise UserError("student.layers", f"{layers} is not fewer than the teacher's {len(stack)} layers", f"give 1 to {len(stack) - 1}")
    keep = kept_layers(len(stack), layers)
    parent, _, child = prefix.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, nn.ModuleList([stack[i] for i in keep]))
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if hasattr(model.config, key):
            setattr(model.config, key, layers)
    model.config.weitiao_student_of = {"teacher": str(model_dir), "layers": keep}
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir)) if (model_dir / "tokenizer_config.json").is_file() else run.tokenizer
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_folder(out, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))


def with_teacher(task, distill, data_section, opts, data, encoded: dict, names: list[str], tokenizer, say):
    """The task, wrapped so that training batches carry the teacher's logits and the loss distils them.

    Scores the training rows (and those of distill.unlabelled, appended to them) with the teacher.
    `distill`, `data_section`, `opts`: the config's distill, data and task sections; `data`: the read DataBundle.
    """
    import torch

    from weitiao.rundir.opening import open_run

    d = distill
    if not task.distillable:
        from weitiao.tasks import load_all

        raise UserError("distill", f"a {task.name} run cannot be distilled here",
                        f"distil {', '.join(sorted(n for n, t in load_all().items() if t.distillable))} runs")
    teacher = open_run(d.teacher)
    if teacher.opts.type != task.name:
        raise UserError("distill.teacher", f"'{d.teacher}' is a {teacher.opts.type} run; the student is {task.name}", "give a teacher of the same task")
    if teacher.names != names:
        raise UserError("distill.teacher", f"the teacher's labels {teacher.names[:6]} differ from the student's data labels {names[:6]}",
                        "train the student on data with the teacher's label set")
    say(f"distilling from {d.teacher}: scoring {len(encoded['train'])} training rows with the teacher (temperature {d.temperature}, alpha {d.alpha})")
    examples = data.train
    if d.unlabelled:
        examples = with_unlabelled(task, d.unlabelled, data_section, opts, examples, say)
        encoded["train"] = task.encode(tokenizer, examples, data_section.max_length, opts, names)
    rows = teacher.task.encode(teacher.tokenizer, examples, teacher.data.max_length, teacher.opts, names)
    if task.distill_same_tokens and (len(rows) != len(encoded["train"]) or rows.input_ids != encoded["train"].input_ids):
        raise UserError("distill.teacher", "the teacher reads these sentences as other tokens than the student",
                        "distil token classification into a student with the teacher's tokenizer and data.max_length (student.layers does)")
    if len(rows) != len(encoded["train"]):
        raise UserError("distill.teacher", f"the teacher keeps {len(rows)} of the training rows, the student {len(encoded['train'])}",
                        "give both the same data")
    encoded["train"].teacher = teacher_logits(teacher, rows)
    del teacher
    torch.set_grad_enabled(True)
    return Distilled(task, d.temperature, d.alpha)


def with_unlabelled(task, path: str, data_section, opts, examples, say):
    """The training examples and, after them, the texts of `path` (distill.unlabelled) with no label (-100)."""
    from weitiao.data.clean import clean_split
    from weitiao.data.examples import Examples

    if not task.distill_unlabelled or getattr(opts, "multi_label", False) or examples.pair is not None:
        raise UserError("distill.unlabelled", "unlabelled data is read for single-label text classification without text pairs",
                        "leave out distill.unlabelled")
    if not Path(path).is_file():
        raise UserError("distill.unlabelled", f"file '{path}' does not exist", "give a .txt file (a text a line) or a table with the text column")
    if Path(path).suffix.lower() == ".txt":
        texts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
        extra = Examples(texts, None, None, list(range(1, len(texts) + 1)), path)
    else:
        extra = task.reader(data_section, opts).read_inputs(path, "distill.unlabelled")
    extra, counts = clean_split(extra, drop_duplicates=False)
    if not len(extra):
        raise UserError("distill.unlabelled", f"'{path}' has no texts", "give a file with one text a line")
    say(f"unlabelled: {len(extra)} texts from {path}, labelled by the teacher alone ({counts['empty_dropped']} empty skipped)")
    return Examples(list(examples.text) + list(extra.text), None, list(examples.labels) + [-100] * len(extra),
                    list(examples.lines) + list(extra.lines), examples.source)


def teacher_logits(teacher, rows):
    """The teacher's logits for every row, in order: a [rows, labels] tensor, or (token tasks) a list of [tokens, labels]."""
    import torch

    from weitiao.data.batching import sorted_batches
    from weitiao.tasks.common.scoring import pad_id, task_forward

    model = teacher.model.eval()
    out: list = [None] * len(rows)
    with torch.no_grad():
        for index in sorted_batches(rows.lengths, 64):
            batch = teacher.task.collate(rows, index, pad_id(teacher.tokenizer), len(teacher.names), teacher.opts)
            batch.pop("labels", None)
            logits = task_forward(teacher.task, model, batch).float()
            for row, i in enumerate(index):
                out[i] = logits[row, :rows.lengths[i]].clone() if logits.dim() == 3 else logits[row]
    return out if out[0].dim() == 2 else torch.stack(out)  # tokens: rows of different lengths


class Distilled:
    """A task whose training batches carry the teacher's logits packed beside the labels (so they
    travel to the device with them), and whose loss mixes the distillation term in. Everything
    else is the task's own: evaluation batches have no teacher and score as usual."""

    def __init__(self, task, temperature: float, alpha: float):
        self._task, self.temperature, self.alpha = task, temperature, alpha

    def __getattr__(self, name):
        return getattr(self._task, name)

    def collate(self, encoded, index, pad_id, num_labels, opts, multiple: int = 1) -> dict:
        import torch

        batch = self._task.collate(encoded, index, pad_id, num_labels, opts, multiple)
        teacher = getattr(encoded, "teacher", None)
        if teacher is None or "labels" not in batch:
            return batch
        labels = batch["labels"]
        if labels.dim() == 2 and labels.dtype == torch.long:  # tokens: [batch, tokens] tags -> [batch, tokens, labels + 1]
            soft = torch.zeros((*labels.shape, num_labels))
            for row, i in enumerate(index):
                n = min(len(teacher[i]), labels.shape[1])
                soft[row, :n] = teacher[i][:n]
            batch["labels"] = torch.cat([soft, labels.unsqueeze(-1).float()], dim=-1)
        else:  # examples: [batch] ids or [batch, labels] 0/1 -> [batch, labels + 1] or [batch, 2 * labels]
            hard = labels.unsqueeze(-1).float() if labels.dim() == 1 else labels
            batch["labels"] = torch.cat([teacher[index], hard], dim=-1)
        return batch

    def loss(self, logits, labels, opts, label_smoothing: float = 0.0):
        """(alpha * T^2 * KL(teacher || student) + (1 - alpha) * cross-entropy, summed; the rows or tokens counted).
        Rows without a label (distill.unlabelled, marked -100) add only the first term."""
        import torch
        import torch.nn.functional as F

        n = logits.shape[-1]
        multi = bool(getattr(opts, "multi_label", False))
        if labels.dtype != torch.float or labels.shape[-1] != (2 * n if multi else n + 1) or (multi and labels.dim() != 2):
            return self._task.loss(logits, labels, opts, label_smoothing)  # an evaluation batch: no teacher
        t, a = self.temperature, self.alpha
        soft, logits = labels[..., :n], logits.float()
        if multi:  # each label its own sigmoid: the teacher's probabilities are soft targets for binary cross-entropy
            kd = F.binary_cross_entropy_with_logits(logits / t, torch.sigmoid(soft / t), reduction="none").mean(-1).sum()
            ce = F.binary_cross_entropy_with_logits(logits, labels[..., n:], reduction="none").mean(-1).sum()
            return a * t * t * kd + (1 - a) * ce, len(logits)
        hard = labels[..., n].long()
        if logits.dim() == 3:  # tokens: the labelled ones (each word's first piece)
            keep = hard != -100
            logits, soft, hard = logits[keep], soft[keep], hard[keep]
        kd = F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(soft / t, -1), log_target=True, reduction="sum")
        ce = F.cross_entropy(logits, hard, ignore_index=-100, label_smoothing=label_smoothing, reduction="sum") if (hard != -100).any() \
            else logits.sum() * 0
        return a * t * t * kd + (1 - a) * ce, len(logits)

    def count_targets(self, batch: dict) -> int:
        labels = batch["labels"]
        if labels.dim() == 3:
            return int((labels[..., -1] != -100).sum())
        return len(labels)

