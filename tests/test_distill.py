"""`weitiao distill`: the loss, the student cut from the teacher, and runs on tiny models.

Whether distillation beats training on the labels alone is measured on real data (MiniLM 6 -> 3
layers on SST-2) by benchmarks/distill.py (docs/benchmarks.md)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import write_config


def test_kept_layers_are_evenly_spaced_with_the_top_one():
    from weitiao.train.distill import kept_layers

    assert kept_layers(6, 3) == [1, 3, 5]
    assert kept_layers(12, 4) == [2, 5, 8, 11]
    assert kept_layers(6, 1) == [5]


def test_the_loss_mixes_kl_at_a_temperature_with_cross_entropy():
    from weitiao.tasks import get_task
    from weitiao.train.distill import Distilled

    task = get_task("classification")
    opts = task.Options()
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 3), torch.randn(5, 3)
    hard = torch.tensor([0, 2, 1, -100, 2])  # row 3: unlabelled (distill.unlabelled)
    packed = torch.cat([teacher, hard.unsqueeze(-1).float()], -1)
    t, a = 2.0, 0.3
    total, count = Distilled(task, t, a).loss(student, packed, opts)
    kl = sum(float((F.softmax(teacher[i] / t, -1) * (F.log_softmax(teacher[i] / t, -1) - F.log_softmax(student[i] / t, -1))).sum()) for i in range(5))
    ce = sum(float(F.cross_entropy(student[i:i + 1], hard[i:i + 1])) for i in (0, 1, 2, 4))
    assert count == 5 and float(total) == pytest.approx(a * t * t * kl + (1 - a) * ce, rel=1e-5)
    # an evaluation batch (labels only) scores as the task does
    assert float(Distilled(task, t, a).loss(student, hard.clamp(min=0), opts)[0]) == pytest.approx(float(task.loss(student, hard.clamp(min=0), opts)[0]))


@pytest.fixture(scope="module")
def teacher(tiny_runs):
    return tiny_runs["classification"]


@pytest.fixture(scope="module")
def confident_teacher(teacher, tmp_path_factory):
    """The tiny classifier's base model fully fine-tuned at a higher learning rate: a teacher whose logits are far
    apart (the barely trained one answers about 50/50 everywhere, where the temperature and the KL term hardly show)."""
    import yaml

    from weitiao.cli import main

    tmp = tmp_path_factory.mktemp("confident")
    cfg = yaml.safe_load((teacher / "config.yaml").read_text())
    cfg["strategy"], cfg["output"] = "full", {"dir": str(tmp)}
    cfg["training"] |= {"lr": 1e-2, "epochs": 3, "log_every": 10}  # validation accuracy 1.0
    assert main(["train", str(write_config(tmp / "c.yaml", cfg)), "--name", "teacher"]) == 0
    return tmp / "teacher"


def _student(tmp_path, teacher, name: str, data_from=None, training: dict | None = None, **extra) -> tuple[int, object]:
    """`weitiao distill TEACHER student.yaml` on the teacher's own data (or `data_from`'s): (exit code, run folder)."""
    import yaml

    from weitiao.cli import main

    tcfg = yaml.safe_load(((data_from or teacher) / "config.yaml").read_text())
    cfg = {"version": 1, "task": extra.pop("task", "classification"), "data": tcfg["data"], "strategy": "full",
           "training": {"epochs": 2, "batch_size": 16, "lr": 1e-3, "progress": False, "warmup_ratio": 0.0, "log_every": 1,
                        **(training or {})},
           "output": {"dir": str(tmp_path / "runs")}, **extra}
    code = main(["distill", str(teacher), str(write_config(tmp_path / f"{name}.yaml", cfg)), "--name", name])
    return code, tmp_path / "runs" / name


def test_the_student_starts_as_the_teachers_kept_layers(teacher, tmp_path):
    from weitiao.rundir.opening import open_run
    from weitiao.train.distill import shrink

    shrink(teacher / "model", 1, tmp_path / "s")
    big, small = open_run(str(teacher), prune=False).model, open_run(str(teacher), prune=False).task.load(tmp_path / "s")
    assert len(small.bert.encoder.layer) == 1
    for (name, p), (_, q) in zip(small.bert.encoder.layer[0].named_parameters(), big.bert.encoder.layer[1].named_parameters()):
        assert torch.equal(p, q), name
    assert torch.equal(small.classifier.weight, big.classifier.weight)


NO_DROPOUT = {"method": "full", "dropout": {"hidden": 0.0, "attention": 0.0, "classifier": 0.0}}  # train mode computes what eval mode does


def _first_step_by_hand(run) -> dict:
    """The loss the run logged at step 1 beside the same loss computed here: the student as training
    began (the teacher's kept layers) and the teacher itself, both run on the first batch of the
    first epoch; alpha * T^2 * KL(teacher || student) + (1 - alpha) * cross-entropy on the labelled
    targets, summed and divided by the batch's targets (every row; token tasks: the labelled tokens)."""
    from weitiao.config import load_config
    from weitiao.data.batching import length_grouped_batches
    from weitiao.rundir.opening import open_run
    from weitiao.tasks import get_task
    from weitiao.tasks.common.scoring import pad_id
    from weitiao.train.recipe import prepare

    cfg = load_config(run / "config.yaml")
    setup = prepare(cfg)  # the student as it was before its first step (and the data as it was read)
    enc, t = setup.encoded["train"], cfg.training
    plain = get_task(cfg.task.type)  # its collate gives the hard labels alone (the distilling one packs the teacher's logits in)
    index = length_grouped_batches(enc.lengths, t.batch_size, t.seed, 0, group=t.group_by_length)[0]
    batch = plain.collate(enc, index, pad_id(setup.tokenizer), len(setup.data.labels.names), setup.opts)
    hard = batch.pop("labels")
    teacher = open_run(cfg.distill.teacher).model.eval()
    student = setup.selection.model.eval()
    with torch.no_grad():
        s, te = student(**batch).logits.double(), teacher(**batch).logits.double()
    if s.dim() == 3:  # tokens: the labelled ones (each word's first piece)
        keep = hard != -100
        s, te, hard = s[keep], te[keep], hard[keep]
    temp, alpha = cfg.distill.temperature, cfg.distill.alpha
    p = F.softmax(te / temp, -1)
    kl = (p * (torch.log(p) - F.log_softmax(s / temp, -1))).sum(-1)  # per row, every row (labelled or not)
    labelled = hard != -100
    ce = -F.log_softmax(s, -1)[labelled].gather(1, hard[labelled].unsqueeze(1)).squeeze(1)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = next(r["loss"] for r in records if r.get("step") == 1 and "loss" in r)
    return {"logged": logged, "by_hand": float(alpha * temp * temp * kl.sum() + (1 - alpha) * ce.sum()) / len(s),
            "targets": len(s), "unlabelled": int((~labelled).sum()), "rows": len(enc), "labelled_rows": len(setup.data.train),
            "steps": json.loads((run / "metrics.json").read_text())["train"]["steps"]}


def test_a_student_with_fewer_layers_is_a_normal_run(confident_teacher, tmp_path):
    from weitiao.predict import evaluate_file
    from weitiao.rundir.opening import open_run

    text = (tmp_path / "more.txt")
    words = ("great", "awful", "lovely", "dull", "superb", "bad", "fine", "grim")
    text.write_text("\n".join([f"we saw {w} things" for w in words] + [""]) + "\n")  # 8 texts and an empty line
    teacher = confident_teacher
    code, run = _student(tmp_path, teacher, "small", student={"layers": 1}, strategy=NO_DROPOUT,
                         training={"group_by_length": False, "seed": 23},  # plain shuffled batches; this seed's first holds 2 unlabelled rows
                         distill={"temperature": 2.0, "alpha": 0.5, "unlabelled": str(text)})
    assert code == 0
    model = open_run(str(run)).model
    assert model.config.num_hidden_layers == 1 and model.config.weitiao_student_of["layers"] == [1]
    step = _first_step_by_hand(run)
    # the unlabelled texts (the empty line skipped) are trained on after the labelled rows, and counted in the loss's mean
    assert step["rows"] == step["labelled_rows"] + 8 and step["steps"] == 2 * -(-step["rows"] // 16), step
    assert step["unlabelled"] == 2 and step["targets"] == 16, step  # they add the KL term alone, and count in the mean
    assert step["logged"] == pytest.approx(step["by_hand"], rel=1e-4), step
    # the student (one layer of two) is about as accurate as its teacher (1.0 here), and its validation loss is about the
    # teacher's or below (0.31 against 0.43; the student as it starts, cut from the teacher, is at 0.53)
    assert evaluate_file(str(run))["n"] == 40
    student, teacher_run = ({k: v for k, v in json.loads((r / "metrics.json").read_text())["validation"].items() if isinstance(v, float)}
                            for r in (run, teacher))
    assert student["accuracy"] >= teacher_run["accuracy"] - 0.1, (student, teacher_run)
    assert student["loss"] <= teacher_run["loss"] + 0.05, (student, teacher_run)


def test_distillation_mistakes_are_one_line_errors(teacher, tmp_path, tiny_runs, capsys):
    code, run = _student(tmp_path, teacher, "a", student={"layers": 2})
    assert code == 2 and "student.layers" in capsys.readouterr().err and not run.exists()
    code, run = _student(tmp_path, tiny_runs["token_classification"], "b", data_from=teacher)
    assert code == 2 and "distill.teacher" in capsys.readouterr().err and not run.exists()
    code, run = _student(tmp_path, teacher, "c", distill={"unlabelled": str(tmp_path / "missing.txt")})
    assert code == 2 and "distill.unlabelled" in capsys.readouterr().err and not run.exists()


def test_a_token_classifier_distils_into_fewer_layers(tiny_runs, tmp_path):
    import yaml

    teacher = tiny_runs["token_classification"]
    tcfg = yaml.safe_load((teacher / "config.yaml").read_text())
    code, run = _student(tmp_path, teacher, "tok", student={"layers": 1}, task="token_classification", strategy=NO_DROPOUT)
    assert code == 0 and yaml.safe_load((run / "config.yaml").read_text())["task"]["type"] == "token_classification"
    assert tcfg["data"]["train"]
    step = _first_step_by_hand(run)
    # the mean over the labelled tokens of the first batch (the first piece of each word), not over its rows
    assert step["unlabelled"] == 0 and step["targets"] > 16, step
    assert step["logged"] == pytest.approx(step["by_hand"], rel=1e-4), step
    # the tiny teacher tags every word O (entity F1 0, token accuracy that of O): its validation loss is what it knows.
    # The student, which learns from the labels too, ends below it (it starts at the teacher's 1.44; after training 1.22)
    student, teacher_run = ({k: v for k, v in json.loads((r / "metrics.json").read_text())["validation"].items() if isinstance(v, float)}
                            for r in (run, teacher))
    assert student["token_accuracy"] >= teacher_run["token_accuracy"] - 0.02, (student, teacher_run)
    assert student["loss"] <= teacher_run["loss"] - 0.1, (student, teacher_run)
