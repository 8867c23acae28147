"""A pretrained body with a new head, its dropout settings, and reloading a run's saved model
(plain, peft adapter, or with bottleneck adapters)."""

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

    from weitiao.models.multitask import is_multitask_folder

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

        from weitiao.models.adapters import insert_adapters

        model = auto_class.from_config(config)
        insert_adapters(model, adapter["size"], adapter["type"])
        result = model.load_state_dict(_current_names(model, load_file(str(model_dir / "model.safetensors"))), strict=False)
        missing = set(result.missing_keys) - tied_names(model)  # a tied output layer is saved once, under the input embeddings' name
        if missing or result.unexpected_keys:
            raise RuntimeError(f"'{model_dir}' does not match its config: missing {sorted(missing)[:3]}, unexpected {result.unexpected_keys[:3]}")
        return model
    model, info = auto_class.from_pretrained(str(model_dir), output_loading_info=True)
    missing = set(info.get("missing_keys", ())) - tied_names(model)
    if missing:  # another model in the folder: its head would be made up, and every prediction with it
        raise RuntimeError(f"its weights lack {len(missing)} of the model's own ({sorted(missing)[0]}, ...): not the model this run trained")
    return model


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


def output_layer(model, num_labels: int):
    """The layer that writes the logits: the last linear layer with one output per label (a BERT
    classifier's `classifier`, EfficientNet's), or None."""
    import torch.nn as nn

    found = None
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.out_features == num_labels:
            found = module
    return found

