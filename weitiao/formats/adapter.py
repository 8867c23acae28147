"""`--format adapter`: the PEFT adapter folder of a LoRA / DoRA / IA3 / prompt-learning run (adapter_config.json
and its weights, head included), with the label names' config.json: `PeftModel.from_pretrained` on the base model."""

from __future__ import annotations

import shutil
from pathlib import Path

from weitiao.errors import UserError
from weitiao.formats import Format, register_format


def write(source, folder: Path) -> None:
    adapter = source.run_dir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        method = source.run.settings["strategy"]["method"]
        raise UserError("--format", f"adapter: this run's strategy ({method}) trained no PEFT adapter (no adapter/ folder)",
                        "export --format hf (the whole model), or train with a PEFT strategy such as lora")
    shutil.copytree(adapter, folder, dirs_exist_ok=True)


def load(folder: Path, task, manifest: dict):
    return task.load(folder)  # text.load_saved: the base model named in adapter_config.json, then the adapter


FORMAT = register_format(Format("adapter", "PEFT adapter folder (the base model is loaded from its path)", write, load, tolerance=1e-4, graph=False))
