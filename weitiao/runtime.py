"""Where and how a process runs: the device, mixed precision, batch sizes for scoring, quiet
library logs. Shared by training, `eval`/`predict` and the forgetting probe (which is why it
is not in the recipe: predict importing the recipe made an import cycle)."""

from __future__ import annotations

import os
import sys

from weitiao.errors import UserError


def say(msg: str = "") -> None:
    print(msg, flush=True)


def note(msg: str) -> None:
    """A remark on stderr, beside the results on stdout."""
    print(f"note: {msg}", file=sys.stderr)


def pick_device(device: str, mixed_precision: str | None) -> tuple[bool, str]:
    """Whether to use CUDA, and the mixed precision to train with.

    An unset `training.mixed_precision` takes `accelerate launch`'s (its config file sets
    ACCELERATE_MIXED_PRECISION), else "no"; the YAML wins when it names one. Mixed precision is
    refused on CPU, where it would only slow things down.
    """
    import torch

    cuda = torch.cuda.is_available() and device != "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("training.device", "'cuda' was asked for but no CUDA GPU is visible", "set training.device: auto or cpu")
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION") if mixed_precision is None else None
    effective = mixed_precision or launched or "no"
    if effective != "no" and not cuda:
        if launched:
            raise UserError("accelerate launch mixed_precision", f"'{launched}' on CPU: half-precision matmuls are ~200x slower than fp32 on CPUs",
                            "set mixed_precision: 'no' in the accelerate config, or training.mixed_precision: no in the YAML")
        raise UserError("training.mixed_precision", f"'{mixed_precision}' on CPU: half-precision matmuls are ~200x slower than fp32 on CPUs",
                        "set training.mixed_precision: no (it is only used on GPUs)")
    return cuda, effective


def quiet_hf() -> None:
    """Silence the per-file progress bars of loading and saving; weitiao prints its own."""
    import warnings

    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging

    disable_progress_bars()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices between libraries


def eval_batch_size(configured: int | None, cuda: bool) -> int:
    """training.eval_batch_size, else 128 on a GPU and 32 on a CPU (where larger batches score
    slower: MiniLM on SST-2 dev, 2.7 s at 32 against 3.2 s at 128, measured with 2 threads)."""
    return configured or (128 if cuda else 32)


def inference_device():
    """Where predictions run: the GPU when there is one, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
