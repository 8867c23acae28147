"""Writing a run's model: the best weights during training (model/ or adapter/), merging the
adapter at the end, and reading the best weights back into the model that trained."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def save_adapter(model, tokenizer, target: Path) -> None:
    """A peft adapter folder (PeftModel.save_pretrained: adapter_config.json + weights, head included)."""
    _atomic_folder(target, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))


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
        _atomic_folder(run_dir / "model", write)
        return peft_model
    merged = peft_model.merge_and_unload()
    # Some methods (LN tuning in peft 0.21) leave the saved head wrapped after merging: unwrap it.
    for name, module in list(merged.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            setattr(merged.get_submodule(parent) if parent else merged, child, module.modules_to_save["default"])
    save_model(merged, tokenizer, run_dir / "model")
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
    _atomic_folder(target, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))


def left_by_dead(target: Path, kind: str) -> list[Path]:
    """`.NAME.KIND-PID` folders beside `target` whose process no longer runs (killed mid-write)."""
    found = []
    for path in target.parent.glob(f".{target.name}.{kind}-*"):
        pid = path.name.rsplit("-", 1)[1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            found.append(path)
        except PermissionError:  # alive, another user's
            pass
    return found


def _atomic_folder(target: Path, write) -> None:
    """Call `write(tmp)` to fill a temporary folder, then swap it in for `target`.

    What a killed writer left is settled first: its half-written `.tmp-PID` is removed; its
    `.old-PID` (the previous version, moved aside just before the swap) is put back if `target` is missing."""
    for stale in left_by_dead(target, "old"):
        if not target.exists():
            os.replace(stale, target)
        else:
            shutil.rmtree(stale, ignore_errors=True)
    for stale in left_by_dead(target, "tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
