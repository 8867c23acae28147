"""`--format hf`: the run's model/ folder (merged weights in safetensors, config with the label
names, tokenizer or image processor) with a model card: what transformers' Auto classes load."""

from __future__ import annotations

import shutil
from pathlib import Path

from weitiao.formats import Format, register_format


def write(source, folder: Path) -> None:
    shutil.copytree(source.model_dir, folder, dirs_exist_ok=True)


def load(folder: Path, task, manifest: dict):
    return task.load(folder)


FORMAT = register_format(Format("hf", "merged safetensors folder that transformers loads", write, load, tolerance=1e-5, graph=False))
