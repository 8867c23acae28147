"""Distillation on real data: MiniLM (6 layers) fine-tuned on SST-2 as the teacher; 3-layer students
cut from it (layers 2, 4, 6), trained on the labels alone, on the teacher's soft labels, and on the
soft labels of more (unlabelled) sentences. Accuracy on SST-2 dev, size, and inference speed.

Every student starts from the same weights (the teacher's kept layers) and trains the same epochs
at the same learning rate; only the loss differs (alpha 0 = labels alone). The unlabelled side
adds the next --unlabelled sentences of SST-2 train, their labels dropped (some may overlap the
seeded labelled subset). Inference: `weitiao eval` timings of the 872 dev sentences, batch 32,
2 threads. One run per side, one after another on the same machine.

    .venv/bin/python benchmarks/distill.py                # ~12 min on 2 cores
    .venv/bin/python benchmarks/distill.py --rows 1000 --unlabelled 1000 --out /tmp/d   # a quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from provenance import commit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"


def run(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "weitiao", *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def write(path: Path, cfg: dict) -> str:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def measure(run_dir: Path, repeats: int = 3) -> dict:
    """Validation accuracy, parameters, model file size and dev sentences/s (best of `repeats`, model loaded once)."""
    import torch

    from weitiao.rundir.opening import open_run, scored, validation_data

    torch.set_num_threads(2)
    loaded = open_run(str(run_dir))
    enc = validation_data(loaded, "--data")
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        scored(loaded, enc, 32)
        best = min(best, time.perf_counter() - start)
    metrics = json.loads((run_dir / "metrics.json").read_text())["validation"]
    params = sum(p.numel() for p in loaded.model.parameters())
    return {"accuracy": metrics["accuracy"], "params_m": round(params / 1e6, 2),
            "size_mb": round((run_dir / "model" / "model.safetensors").stat().st_size / 2**20, 1),
            "sentences_per_s": round(len(enc) / best, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=6000, help="labelled training rows (a seeded subset of SST-2 train)")
    ap.add_argument("--unlabelled", type=int, default=12000, help="unlabelled sentences for the last student")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2, help="student epochs (the teacher trains 1)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/distill"))
    a = ap.parse_args()
    work = ROOT / "benchmarks/results/work/distill"
    work.mkdir(parents=True, exist_ok=True)
    data = {"train": str(SST2 / "train.tsv"), "validation": str(SST2 / "dev.tsv"), "text_column": "sentence", "label_column": "label",
            "max_length": 64, "train_limit": a.rows}
    base = {"version": 1, "data": data, "strategy": "full", "output": {"dir": str(work / "runs")}}
    teacher_cfg = {**base, "model": "minilm", "training": {"epochs": 1, "batch_size": 32, "lr": 5e-5, "progress": False, "seed": 42}}
    seconds = {"teacher": run(["train", write(work / "teacher.yaml", teacher_cfg), "--name", "teacher", "--overwrite"])}
    teacher = work / "runs" / "teacher"

    lines = SST2.joinpath("train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    extra = work / "unlabelled.txt"
    extra.write_text("\n".join(line.split("\t")[0] for line in lines[-a.unlabelled:]) + "\n", encoding="utf-8")
    training = {"epochs": a.epochs, "batch_size": 32, "lr": 1e-4, "progress": False, "seed": 42}
    students = {"labels alone": {"alpha": 0.0}, "distilled": {"alpha": 0.5, "temperature": 2.0},
                f"distilled + {a.unlabelled} unlabelled": {"alpha": 0.5, "temperature": 2.0, "unlabelled": str(extra)}}
    for name, distill in students.items():
        cfg = {**base, "student": {"layers": a.layers}, "distill": distill, "training": training}
        seconds[name] = run(["distill", str(teacher), write(work / "student.yaml", cfg), "--name", name.split()[0] + str(len(distill)), "--overwrite"])

    rows = [{"model": "teacher (MiniLM, 6 layers)", **measure(teacher), "train_s": round(seconds["teacher"], 1)}]
    for name, distill in students.items():
        rows.append({"model": f"student ({a.layers} layers), {name}", **measure(work / "runs" / (name.split()[0] + str(len(distill)))),
                     "train_s": round(seconds[name], 1)})
    result = {"commit": commit("distill"), "command": " ".join(["benchmarks/distill.py"] + sys.argv[1:]), "rows": a.rows, "unlabelled": a.unlabelled,
              "student_epochs": a.epochs, "results": rows}
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    t = rows[0]
    table = [f"# Distillation: MiniLM 6 -> {a.layers} layers on SST-2 ({a.rows} labelled rows)", "",
             f"`.venv/bin/python {result['command']}` (one run per side, 2-core CPU; weitiao {result['commit']})", "",
             "| model | dev accuracy | parameters | model file | dev sentences/s | vs teacher | training (s) |", "|---|---|---|---|---|---|---|"]
    table += [f"| {r['model']} | {r['accuracy']:.4f} | {r['params_m']}M | {r['size_mb']} MB | {r['sentences_per_s']} | "
              f"{r['sentences_per_s'] / t['sentences_per_s']:.2f}x | {r['train_s']} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
