"""Generating text with a trained model, and scoring generations against references.

Batched generation pads on the left (every prompt ends where its answer begins); training pads
on the right. Greedy unless a temperature is given. Generation stops at EOS and at the
template's end-of-turn token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from weitiao.schema import Section


class GenerateOptions(Section):
    """Generations of held-out prompts at every evaluation (and `predict`'s defaults)."""

    samples: int = Field(8, ge=0)  # held-out prompts answered at every evaluation (0: none)
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0)  # 0: greedy
    top_p: float = Field(1.0, gt=0, le=1)
    metrics: list[Literal["rouge_l", "bleu", "chrf"]] = []  # scores of the generations against their references


def token_metrics(outputs: list, examples: int) -> dict:
    """A language model's validation metrics from per-row (summed NLL, target tokens, correct tokens)."""
    nll = sum(float(o[0]) for o in outputs)
    count = sum(float(o[1]) for o in outputs)
    correct = sum(float(o[2]) for o in outputs)
    loss = nll / count if count else None
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)) if loss is not None else None,
            "token_accuracy": correct / count if count else None, "tokens": int(count), "n": examples}


@dataclass
class Sampling:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    num_beams: int = 1


def stop_ids(tokenizer, model=None, end_of_turn: str | None = None) -> list[int]:
    """The token ids that end an answer: EOS, the model's own generation config's, the end-of-turn token."""
    ids = set()
    for source in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        ids |= set(source if isinstance(source, list) else [source] if source is not None else [])
    if end_of_turn:
        tid = tokenizer.convert_tokens_to_ids(end_of_turn)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(ids)


def generate(model, tokenizer, prompts: list[list[int]], sampling: Sampling, stops: list[int], device, batch_size: int = 8,
             seed: int = 0, streamer=None) -> list[str]:
    """The answer to each prompt (token ids), decoded without special tokens, in input order.
    `streamer`: a transformers streamer that receives the tokens as they come (one prompt only)."""
    ids = generate_ids(model, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0], prompts, sampling, stops,
                       device, batch_size, seed, streamer)
    return [tokenizer.decode(x, skip_special_tokens=True).strip() for x in ids]


def generate_ids(model, pad: int, prompts: list[list[int]], sampling: Sampling, stops: list[int], device, batch_size: int = 8,
                 seed: int = 0, streamer=None) -> list[list[int]]:
    """The generated token ids of each prompt, through the first stop (what follows is padding). A decoder-only
    model's prompts are padded on the left (each ends where its answer begins); an encoder-decoder's inputs
    on the right, and its decoder's start token is left out."""
    import torch

    decoder_only = not getattr(model.config, "is_encoder_decoder", False)
    out: list[list[int]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    was_training = model.training
    model.eval()
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # training's random stream is left as it was
        torch.manual_seed(seed)  # sampling is repeatable
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            longest = max(len(prompts[i]) for i in index)
            ids = torch.full((len(index), longest), pad, dtype=torch.long)
            mask = torch.zeros((len(index), longest), dtype=torch.long)
            for row, i in enumerate(index):
                p = prompts[i]
                at = slice(longest - len(p), longest) if decoder_only else slice(0, len(p))
                ids[row, at] = torch.tensor(p)
                mask[row, at] = 1
            kwargs = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p} if sampling.temperature > 0 \
                else {"do_sample": False, "num_beams": sampling.num_beams}
            with torch.no_grad():
                gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=sampling.max_new_tokens,
                                     eos_token_id=stops, pad_token_id=pad, streamer=streamer, **kwargs)
            for row, i in enumerate(index):
                new = gen[row, longest:].tolist() if decoder_only else gen[row, 1:].tolist()
                end = next((k for k, t in enumerate(new) if t in stops), None)
                out[i] = new if end is None else new[:end + 1]
    model.train(was_training)
    return out


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """ROUGE-L F1 over whitespace words (longest common subsequence), averaged over pairs."""
    scores = []
    for p, r in zip(predictions, references):
        a, b = p.lower().split(), r.lower().split()
        if not a or not b:
            scores.append(0.0)
            continue
        prev = [0] * (len(b) + 1)
        for x in a:
            cur = [0]
            for j, y in enumerate(b):
                cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
            prev = cur
        lcs = prev[-1]
        precision, recall = lcs / len(a), lcs / len(b)
        scores.append(0.0 if lcs == 0 else 2 * precision * recall / (precision + recall))
    return sum(scores) / len(scores) if scores else 0.0


def text_scores(predictions: list[str], references: list[str], which: list[str]) -> dict:
    """The asked-for scores of generations against references: bleu and chrf (sacrebleu, corpus
    level, 0-100), rouge_l (0-1)."""
    scores = {}
    if "rouge_l" in which:
        scores["rouge_l"] = rouge_l(predictions, references)
    if "bleu" in which or "chrf" in which:
        import sacrebleu

        if "bleu" in which:
            scores["bleu"] = sacrebleu.corpus_bleu(predictions, [references]).score
        if "chrf" in which:
            scores["chrf"] = sacrebleu.corpus_chrf(predictions, [references]).score
    return scores
