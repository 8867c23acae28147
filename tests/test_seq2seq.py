"""Sequence to sequence on a tiny BART built from a config: it learns to spell digits as words, and BLEU
rises far above its start; layer-aware strategies see the encoder and the decoder stack."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import tiny_bart, write_config

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digit_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        digits = [rng.randrange(10) for _ in range(rng.randint(2, 5))]
        rows.append({"source": " ".join(map(str, digits)), "target": " ".join(WORDS[d] for d in digits)})
    return rows


@pytest.fixture(scope="module")
def bart(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bart")
    texts = [" ".join(map(str, range(10))), " ".join(WORDS)] * 20
    return tiny_bart(folder / "model", texts)


def data_files(folder: Path, n: int = 400) -> dict:
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, k in (("train", n), ("dev", 40)):
        (folder / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in digit_rows(rng, k)) + "\n")
    return {"train": str(folder / "train.jsonl"), "validation": str(folder / "dev.jsonl"), "max_length": 32}


def test_bart_learns_digits_to_words_and_bleu_rises(bart, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from weitiao.cli import main
    from weitiao.predict import evaluate_file, predict

    cfg = {"version": 1, "model": str(bart), "task": {"type": "seq2seq", "generate": {"samples": 3, "max_new_tokens": 24}},
           "data": data_files(tmp_path / "d"), "strategy": "full",
           "training": {"epochs": 12, "batch_size": 32, "lr": 3e-3, "progress": False, "eval_every": 26, "warmup_ratio": 0.0},  # a tiny random model: warmup sends it to a plateau that ignores the source
           "output": {"dir": str(tmp_path / "runs")}}
    assert main(["train", str(write_config(tmp_path / "c.yaml", cfg)), "--name", "s"]) == 0
    run = tmp_path / "runs" / "s"
    evals = [json.loads(line)["eval"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert evals[0]["bleu"] < 20 and evals[-1]["bleu"] > 60, [round(e["bleu"], 1) for e in evals]
    assert evals[-1]["chrf"] > evals[0]["chrf"] + 30
    gens = [json.loads(line) for line in (run / "generations.jsonl").read_text().splitlines()]
    assert {"source", "reference", "generation"} <= set(gens[-1])

    # the run folder: plain transformers generates what `weitiao predict` prints; `eval` scores BLEU again
    out = predict(str(run), ["3 1 4"], None, None)[0]["generation"]
    tok = AutoTokenizer.from_pretrained(run / "model")
    model = AutoModelForSeq2SeqLM.from_pretrained(run / "model")
    ids = tok(["3 1 4"], return_tensors="pt")
    plain = tok.decode(model.generate(**ids, max_new_tokens=24, num_beams=1, do_sample=False)[0], skip_special_tokens=True).strip()
    assert out == plain
    beams = predict(str(run), ["3 1 4"], None, None, sampling={"num_beams": 3})[0]["generation"]
    plain = tok.decode(model.generate(**ids, max_new_tokens=24, num_beams=3, do_sample=False)[0], skip_special_tokens=True).strip()
    assert beams == plain
    again = evaluate_file(str(run), None)
    saved = json.loads((run / "metrics.json").read_text())["validation"]
    assert again["bleu"] == pytest.approx(saved["bleu"], abs=1e-6)


def test_layer_aware_strategies_see_both_stacks(bart):
    from transformers import AutoModelForSeq2SeqLM

    from weitiao.config import StrategyConfig
    from weitiao.models.layers import find_parts
    from weitiao.strategies import apply_strategy
    from weitiao.strategies.lr_groups import build_param_groups

    model = AutoModelForSeq2SeqLM.from_pretrained(bart)
    parts = find_parts(model)
    assert parts.layers_prefix == ("model.encoder.layers", "model.decoder.layers") and parts.num_layers == 2
    frozen = apply_strategy(model, StrategyConfig(method="freeze_bottom", layers=1), "SEQ_2_SEQ_LM").model
    learns = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("model.encoder.layers.0.", "model.decoder.layers.0.")) for n in learns)
    assert any(n.startswith("model.encoder.layers.1.") for n in learns) and any(n.startswith("model.decoder.layers.1.") for n in learns)
    assert not any("embed_positions" in n or "layernorm_embedding" in n for n in learns)  # the embeddings are frozen
    assert "model.shared.weight" in learns  # the output layer (tied to the token embeddings) is the head: it learns
    model = AutoModelForSeq2SeqLM.from_pretrained(bart)
    groups = build_param_groups(model, None, 1e-3, 0.0, layer_lr_decay=0.5)
    lr = {g["name"]: g["lr"] for g in groups}
    assert lr["layer 1"] == 1e-3 and lr["layer 0"] == 5e-4 and lr["embeddings"] == 2.5e-4


@pytest.mark.parametrize("strategy", ["lora", "adapter"])
def test_seq2seq_trains_with_adapters_and_lora(tmp_path, strategy):
    """LoRA and bottleneck adapters in both stacks (a larger initialisation: with BART's 0.02 the frozen
    tied output layer of a random model cannot become confident, whatever the adapters learn)."""
    from weitiao.cli import main

    bart = tiny_bart(tmp_path / "bart", [" ".join(map(str, range(10))), " ".join(WORDS)] * 20, init_std=0.3)

    method = {"method": "lora", "r": 8, "target_modules": "all-linear"} if strategy == "lora" else {"method": "adapter", "adapter_size": 16}
    cfg = {"version": 1, "model": str(bart), "task": {"type": "seq2seq", "generate": {"samples": 0, "eval_rows": 8, "max_new_tokens": 12}},
           "data": data_files(tmp_path / "d", 160), "strategy": method,
           "training": {"epochs": 8, "batch_size": 32, "lr": 1e-2, "progress": False, "log_every": 1, "warmup_ratio": 0.0},
           "output": {"dir": str(tmp_path / "runs")}}
    assert main(["train", str(write_config(tmp_path / "c.yaml", cfg)), "--name", "s"]) == 0
    losses = [json.loads(line)["loss"] for line in (tmp_path / "runs" / "s" / "metrics.jsonl").read_text().splitlines() if '"lr"' in line]
    assert sum(losses[-3:]) < 0.85 * sum(losses[:3]), losses


def test_a_missing_target_column_is_named(bart, tmp_path, capsys):
    from weitiao.cli import main

    (tmp_path / "t.jsonl").write_text('{"src": "1 2", "target": "one two"}\n' * 8)
    cfg = {"version": 1, "model": str(bart), "task": "seq2seq", "data": {"train": str(tmp_path / "t.jsonl")}, "output": {"dir": str(tmp_path / "runs")}}
    assert main(["train", str(write_config(tmp_path / "c.yaml", cfg)), "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data.source_column: column 'source' not in") and not (tmp_path / "runs").exists()
