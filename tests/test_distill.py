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
    from weitiao.distill import kept_layers

    assert kept_layers(6, 3) == [1, 3, 5]
    assert kept_layers(12, 4) == [2, 5, 8, 11]
    assert kept_layers(6, 1) == [5]


def test_the_loss_mixes_kl_at_a_temperature_with_cross_entropy():
    from weitiao.distill import Distilled
    from weitiao.tasks import get_task

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


def _student(tmp_path, teacher, name: str, data_from=None, **extra) -> tuple[int, object]:
    """`weitiao distill TEACHER student.yaml` on the teacher's own data (or `data_from`'s): (exit code, run folder)."""
    import yaml

    from weitiao.cli import main

    tcfg = yaml.safe_load(((data_from or teacher) / "config.yaml").read_text())
    cfg = {"version": 1, "task": extra.pop("task", "classification"), "data": tcfg["data"], "strategy": "full",
           "training": {"epochs": 2, "batch_size": 16, "lr": 1e-3, "progress": False, "warmup_ratio": 0.0},
           "output": {"dir": str(tmp_path / "runs")}, **extra}
    code = main(["distill", str(teacher), str(write_config(tmp_path / f"{name}.yaml", cfg)), "--name", name])
    return code, tmp_path / "runs" / name


def test_the_student_starts_as_the_teachers_kept_layers(teacher, tmp_path):
    from weitiao.distill import shrink
    from weitiao.predict import open_run

    shrink(teacher / "model", 1, tmp_path / "s")
    big, small = open_run(str(teacher), prune=False).model, open_run(str(teacher), prune=False).task.load(tmp_path / "s")
    assert len(small.bert.encoder.layer) == 1
    for (name, p), (_, q) in zip(small.bert.encoder.layer[0].named_parameters(), big.bert.encoder.layer[1].named_parameters()):
        assert torch.equal(p, q), name
    assert torch.equal(small.classifier.weight, big.classifier.weight)


def test_a_student_with_fewer_layers_is_a_normal_run(teacher, tmp_path):
    from weitiao.predict import evaluate_file, open_run

    text = (tmp_path / "more.txt")
    text.write_text("\n".join(f"we saw {w} things" for w in ("great", "awful", "lovely", "dull", "")) + "\n")
    code, run = _student(tmp_path, teacher, "small", student={"layers": 1}, distill={"temperature": 2.0, "alpha": 0.5, "unlabelled": str(text)})
    assert code == 0
    model = open_run(str(run)).model
    assert model.config.num_hidden_layers == 1 and model.config.weitiao_student_of["layers"] == [1]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r and "step" in r]
    assert losses and all(loss == loss for loss in losses)
    assert evaluate_file(str(run))["n"] == 40


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
    code, run = _student(tmp_path, teacher, "tok", student={"layers": 1}, task="token_classification")
    assert code == 0 and yaml.safe_load((run / "config.yaml").read_text())["task"]["type"] == "token_classification"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "f1" in json.loads((run / "metrics.json").read_text())["validation"] and tcfg["data"]["train"]
    assert [r["loss"] for r in records if "loss" in r and "step" in r]
