"""What text tasks share: the pad token, the tokenizer checked against data.max_length, padded batches.
(The model side, a pretrained body with a new head and reloading a run's model: weitiao/models/heads.py.)"""

from __future__ import annotations

from weitiao.errors import UserError


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
