"""weitiao's cache folder (converted bundled models, distillation students) and whether the hub is off."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(name: str) -> Path:
    """A folder in weitiao's cache ($XDG_CACHE_HOME/weitiao, default ~/.cache/weitiao): converted models, distillation students."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "weitiao" / name


def is_offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
