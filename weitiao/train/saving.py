"""Writing a run's model: the best weights during training (model/ or adapter/), merging the
adapter at the end, and reading the best weights back into the model that trained."""

from __future__ import annotations

import shutil
from pathlib import Path

from weitiao.files import atomic_folder
from weitiao.rundir import MODEL


def save_adapter(model, tokenizer, target: Path) -> None:
    """A peft adapter folder (PeftModel.save_pretrained: adapter_config.json + weights, head included)."""
    atomic_folder(target, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))


def merge_adapter(peft_model, run_dir: Path, tokenizer):
    """Load the best adapter (adapter/) into the trained peft model, merge it in place, write model/.

    Merging into the model that trained (not a fresh copy of the base) keeps one model in
    memory. Prompt-learning methods (prefix, prompt, P-tuning) add virtual tokens that no
    weight can absorb: their model/ is the adapter beside the base model's config (with the
    label names), loaded by the task's `load` (peft needed).

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
        atomic_folder(run_dir / MODEL, write)
        return peft_model
    merged = peft_model.merge_and_unload()
    # Some methods (LN tuning in peft 0.21) leave the saved head wrapped after merging: unwrap it.
    for name, module in list(merged.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            setattr(merged.get_submodule(parent) if parent else merged, child, module.modules_to_save["default"])
    save_model(merged, tokenizer, run_dir / MODEL)
    return merged


def load_best(model, model_dir: Path, load):
    """The best weights (model/) into the model that trained, so that no second copy is built.

    Tensor by tensor from the file, skipping the frozen parameters (bitwise what is in memory
    already): the peak grows by one tensor, not by a second model. `load(model_dir)`: the
    task's loader, for a folder that cannot be read tensor by tensor.
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
    return load(model_dir)  # a sharded save, or keys it does not know: the task's loader


def save_model(model, tokenizer, target: Path) -> None:
    """Write a Hugging Face model folder atomically (temp folder, then rename)."""
    atomic_folder(target, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))


def store_in_config(model, model_dir: Path, entries: dict) -> None:
    """Entries a task settled after training (`Task.calibrate`) into the saved model's config.json,
    written whole, and onto the model in memory; any tool reading the folder sees them."""
    import json

    from weitiao.files import write_text

    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    write_text(path, json.dumps({**config, **entries}, indent=2, sort_keys=True) + "\n")
    for key, value in entries.items():
        setattr(model.config, key, value)
