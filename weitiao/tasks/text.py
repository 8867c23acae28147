"""What text tasks share: the pad token, dropout settings, a pretrained body with a new head,
and reloading a run's saved model (plain, peft adapter, or with bottleneck adapters)."""

from __future__ import annotations

import json
from pathlib import Path

from weitiao.errors import UserError

# Config attributes that hold each kind of dropout, across the common architectures.
DROPOUT_KEYS = {
    "hidden": ("hidden_dropout_prob", "hidden_dropout", "dropout", "resid_pdrop"),
    "attention": ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop"),
    "classifier": ("classifier_dropout", "seq_classif_dropout", "summary_first_dropout"),
}


def ensure_pad_token(tokenizer) -> int:
    """The id batches are padded with, the same one the model is told (decoder classifiers pool the
    last token that is not padding, so the two must agree). Tokenizers without a pad token
    (GPT-2, Llama) pad with their end-of-sequence token, as transformers' examples do."""
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise UserError("model", "its tokenizer has no pad, end-of-sequence or unknown token to pad batches with",
                            "save the tokenizer with a pad_token set")
        tokenizer.pad_token = fallback
    return tokenizer.pad_token_id


def with_head(auto_class, path: str, label_names: list[str], dropout: dict | None, attention: str | None,
              pad_token_id: int | None, **config_kwargs):
    """A pretrained body from `path` with a fresh head for `label_names`, built by `auto_class`
    (AutoModelForSequenceClassification, AutoModelForTokenClassification).

    Args:
        dropout: {"hidden" | "attention" | "classifier": p} overrides (None entries ignored).
        attention: attn_implementation while training ("eager", "sdpa"); None: the library's choice.
        pad_token_id: the id batches are padded with (`ensure_pad_token`); None: the config's own, else its EOS.

    Returns:
        (model, names of the newly initialised parameters: the head).
    """
    from transformers import AutoConfig

    from weitiao.tasks.multitask_model import is_multitask_folder

    if is_multitask_folder(path):
        raise UserError("model", f"'{path}' is a multi-task run's model (an encoder with a head per task)",
                        "write one task's model with `weitiao export RUN --task NAME --out DIR` and name that folder")
    config = AutoConfig.from_pretrained(path, **label_config(label_names), **config_kwargs)
    for kind, p in (dropout or {}).items():
        if p is not None:
            for key in DROPOUT_KEYS[kind]:
                if hasattr(config, key) or kind == "classifier":
                    setattr(config, key, p)
    if pad_token_id is not None:
        config.pad_token_id = pad_token_id  # decoder classifiers find the last token by it
    elif getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = getattr(config, "eos_token_id", None) or 0
    return with_new_head(auto_class, path, config, **({"attn_implementation": attention} if attention else {}))


def label_config(label_names: list[str]) -> dict:
    """The config entries that name a classifier's labels."""
    return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}


def with_new_head(auto_class, path: str, config, **kwargs):
    """`auto_class.from_pretrained(path, config=config)`, and the names of the parameters it had to
    initialise (the head). A model fine-tuned before (runs/a/model) brings a head of another shape: it is replaced."""
    model, info = auto_class.from_pretrained(path, config=config, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
    return model, set(info["missing_keys"]) | {m[0] if isinstance(m, tuple) else m for m in info.get("mismatched_keys", [])}


def load_saved(auto_class, model_dir):
    """The trained model saved in a run folder.

    A plain transformers folder for full, partial and merged-peft runs; a peft adapter folder
    for prompt-learning methods (virtual tokens cannot be merged); a folder with bottleneck
    adapters (weights under `*.proj` / `*.adapter`) rebuilt with weitiao's adapter modules.
    """
    from transformers import AutoConfig

    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(str(model_dir))
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base_path = json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        base = auto_class.from_pretrained(base_path, config=config, ignore_mismatched_sizes=True)
        return PeftModel.from_pretrained(base, str(model_dir))
    adapter = getattr(config, "weitiao_adapter", None)
    if adapter:
        from safetensors.torch import load_file

        from weitiao.strategies.adapter import insert_adapters

        model = auto_class.from_config(config)
        insert_adapters(model, adapter["size"], adapter["type"])
        result = model.load_state_dict(_current_names(model, load_file(str(model_dir / "model.safetensors"))), strict=False)
        missing = set(result.missing_keys) - tied_names(model)  # a tied output layer is saved once, under the input embeddings' name
        if missing or result.unexpected_keys:
            raise RuntimeError(f"'{model_dir}' does not match its config: missing {sorted(missing)[:3]}, unexpected {result.unexpected_keys[:3]}")
        return model
    return auto_class.from_pretrained(str(model_dir))


def tied_names(model) -> set[str]:
    """Names of parameters that share their tensor with an earlier-named one (a tied output layer)."""
    seen, tied = set(), set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.add(name)
        seen.add(id(p))
    return tied


def _current_names(model, state: dict) -> dict:
    """A saved state dict under the parameter names `model` has now. transformers 5 renames some
    architectures' modules (ViT: encoder.layer.N.attention.attention.query -> layers.N.attention.q_proj)
    and saves the old names; its loader renames them back, which a state dict loaded by hand needs too."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, rename_source_key
    except ImportError:  # transformers 4: no renamings
        return state
    renamings = [t for t in get_model_conversion_mapping(model) if isinstance(t, WeightRenaming)]
    return {rename_source_key(key, renamings, [])[0]: value for key, value in state.items()} if renamings else state


def load_tokenizer(path: str, name: str | None = None, max_length: int | None = None, need_fast: bool = False, **kwargs):
    """The model's tokenizer with a pad token (`ensure_pad_token`), checked against data.max_length
    (`check_max_length`, when given); `need_fast`: word ids of sub-words are needed (token tasks)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if need_fast and not tokenizer.is_fast:
        raise UserError("model", f"'{path}' has no fast tokenizer (tokenizer.json), which token classification needs to align tags with sub-words",
                        "use a model with a fast tokenizer, or save one with AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(folder)")
    ensure_pad_token(tokenizer)
    if max_length is not None:
        check_max_length(path, name or path, max_length, tokenizer.model_max_length)
    return tokenizer


def check_max_length(path: str, name: str, max_length: int, usable: int | None) -> None:
    """Refuse a data.max_length past the positions the model has (an IndexError mid-training otherwise).

    `usable`: the tokenizer's model_max_length (RoBERTa-style models keep 2 of their positions
    for padding, and their tokenizer says how many are left; a huge number means unset).
    """
    from transformers import AutoConfig

    positions = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)
    limits = [n for n in (positions, usable) if isinstance(n, int) and 0 < n < 1_000_000]
    if limits and max_length > min(limits):
        raise UserError("data.max_length", f"{max_length} tokens is more than model '{name}' can read ({min(limits)} positions)",
                        f"set data.max_length to {min(limits)} or less")



def pad_rows(rows: list[list[int]], index: list[int], fill: int, multiple: int = 1):
    """The chosen rows padded with `fill` to the longest among them (rounded up to `multiple`).

    Returns:
        ([batch, longest] long tensor, [batch, longest] attention mask: 1 on real tokens).
    """
    import torch

    longest = -(-max(len(rows[i]) for i in index) // multiple) * multiple
    out = torch.full((len(index), longest), fill, dtype=torch.long)
    mask = torch.zeros((len(index), longest), dtype=torch.long)
    for row, i in enumerate(index):
        out[row, :len(rows[i])] = torch.tensor(rows[i])
        mask[row, :len(rows[i])] = 1
    return out, mask
