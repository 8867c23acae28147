"""Inference backends side by side: the run's own torch model (as `weitiao predict` runs it) against
its exports (ONNX fp32, ONNX int8, torch.export pt2) on 2,000 SST-2 sentences (dev, then train rows).

Every side scores the same batches (32 sentences, sorted by length: least padding) on 2 threads,
after one warm-up pass; the time is the best of --repeats passes. Agreement: the share of
sentences whose predicted label equals the torch model's.

    .venv/bin/python benchmarks/inference.py RUN        # a finished SST-2 run, e.g. benchmarks/results/work/distill/runs/teacher
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from provenance import commit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"


def sentences(n: int) -> list[str]:
    rows = SST2.joinpath("dev.tsv").read_text(encoding="utf-8").splitlines()[1:] + SST2.joinpath("train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [r.split("\t")[0] for r in rows[:n]]


def timed(loaded, enc, repeats: int) -> tuple[float, list]:
    from weitiao.rundir.opening import scored

    outputs = scored(loaded, enc, 32).outputs  # warm-up (and the predictions)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        scored(loaded, enc, 32)
        best = min(best, time.perf_counter() - start)
    return best, outputs


def main() -> None:
    import torch

    from weitiao.export import export
    from weitiao.rundir.opening import open_run

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--sentences", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/inference"))
    a = ap.parse_args()
    commit("inference")  # a dirty tree is refused before anything runs
    torch.set_num_threads(2)
    texts = sentences(a.sentences)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {"torch (eager)": a.run}
        for fmt in ("onnx", "onnx-int8", "pt2"):
            start = time.perf_counter()
            folders[fmt] = export(a.run, fmt, str(Path(tmp) / fmt))
            print(f"exported {fmt} in {time.perf_counter() - start:.1f} s", flush=True)
        reference = None
        for side, folder in folders.items():
            loaded = open_run(folder, trust=("pt2",))  # exports this script just wrote
            ex = loaded.task.examples_from_texts(texts, loaded.tokenizer, loaded.opts)
            enc = loaded.task.encode(loaded.tokenizer, ex, loaded.data.max_length, loaded.opts, loaded.names)
            seconds, outputs = timed(loaded, enc, a.repeats)
            labels = [int(o.argmax()) for o in outputs]
            reference = reference or labels
            parity = json.loads((Path(folder) / "parity.json").read_text()) if side != "torch (eager)" else {}
            results.append({"side": side, "sentences_per_s": round(len(texts) / seconds, 1), "seconds": round(seconds, 2),
                            "agreement": sum(x == y for x, y in zip(labels, reference)) / len(labels),
                            "dev_accuracy": parity.get("metrics_after", {}).get("accuracy"),
                            "max_abs_logit_diff": parity.get("max_abs_logit_diff")})
            print(results[-1], flush=True)
    own = json.loads((Path(a.run) / "metrics.json").read_text())["validation"]
    results[0]["dev_accuracy"] = own.get("accuracy")  # the run's own, as training measured it
    eager = results[0]["sentences_per_s"]
    out = Path(a.out)
    result = {"commit": commit("inference"), "command": " ".join(["benchmarks/inference.py"] + sys.argv[1:]), "sentences": len(texts), "batch_size": 32, "threads": 2, "results": results}
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [f"# Inference backends: {len(texts)} SST-2 sentences, batch 32, 2 threads", "", f"`.venv/bin/python {result['command']}` (weitiao {result['commit']})", "",
             "| backend | sentences/s | vs torch | agreement with torch | dev accuracy (parity check) | max abs logit diff |", "|---|---|---|---|---|---|"]
    for r in results:
        acc = f"{r['dev_accuracy']:.4f}" if r["dev_accuracy"] is not None else "-"
        diff = f"{r['max_abs_logit_diff']:.2g}" if r["max_abs_logit_diff"] is not None else "-"
        lines.append(f"| {r['side']} | {r['sentences_per_s']} | {r['sentences_per_s'] / eager:.2f}x | {r['agreement']:.2%} | {acc} | {diff} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
