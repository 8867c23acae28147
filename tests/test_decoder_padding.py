"""Decoder models (Llama-style) as classifiers: the head reads the last token that is not padding,
so batches must be padded with the id the model is told. A text scores the same alone and
beside a longer one."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import write_config, write_rows

WORDS = "the a film movie good bad great awful plot acting was is and but very not".split()


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A random 2-layer Llama with a word-level tokenizer that has BOS/EOS but no pad token (as Llama's)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("llama") / "model"
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>"] + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    assert tokenizer.pad_token is None
    torch.manual_seed(0)
    LlamaModel(LlamaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                           intermediate_size=64, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_text_scores_the_same_alone_and_beside_a_longer_one(tiny_llama):
    from transformers import AutoTokenizer

    from weitiao.data.examples import Examples
    from weitiao.tasks.classification import build_model, encode, ensure_pad_token, predict_probs

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    pad = ensure_pad_token(tokenizer)
    model, _ = build_model(str(tiny_llama), ["neg", "pos"], False, None, "eager", pad)
    assert model.config.pad_token_id == pad == tokenizer.pad_token_id

    def probs(texts):
        enc = encode(tokenizer, Examples(texts, None, None, list(range(len(texts))), "t"), 32)
        return predict_probs(model, enc, pad, 2, False, 8, torch.device("cpu"))[0]

    short = "good film"
    alone = probs([short])[0]
    beside = probs([short, "the acting was very bad but the plot is not awful and the movie is great"])[0]
    assert abs(float(alone[0]) - 0.5) > 1e-4  # a real score, not a constant
    assert alone.tolist() == pytest.approx(beside.tolist(), abs=1e-5)


def test_a_decoder_run_predicts_the_same_alone_and_in_a_batch(tiny_llama, tmp_path, capsys):
    """Through the CLI: the saved run pads the way it trained."""
    from weitiao.cli import main

    rows = [f"{a} {b}\t{int(a in ('good', 'great'))}" for a in ("good", "bad", "great", "awful") for b in WORDS]
    train = write_rows(tmp_path / "train.tsv", "sentence\tlabel", rows)
    cfg = write_config(tmp_path / "c.yaml", {
        "version": 1, "model": str(tiny_llama),
        "data": {"train": str(train), "validation": str(train), "text_column": "sentence", "max_length": 32},
        "training": {"max_steps": 4, "batch_size": 8, "lr": 1e-3, "progress": False}, "output": {"dir": str(tmp_path / "runs")}})
    assert main(["train", str(cfg), "--name", "llama"]) == 0
    run = str(tmp_path / "runs" / "llama")
    capsys.readouterr()
    assert main(["predict", run, "--text", "good film"]) == 0
    alone = json.loads(capsys.readouterr().out.splitlines()[0])["probabilities"]
    assert main(["predict", run, "--text", "good film", "the acting was very bad but the plot is not awful and the movie is great"]) == 0
    beside = json.loads(capsys.readouterr().out.splitlines()[0])["probabilities"]
    assert alone == pytest.approx(beside, abs=1e-5)
