"""Load on `weitiao serve`: throughput and latency at concurrency 1, 8 and 32, micro-batching on
against off (every request scored alone, as it comes), and on with the ONNX backend, on loopback.

Each request holds one SST-2 sentence (the next of the dev set); each level sends --requests
requests from that many client threads, after a warm-up. The server runs in its own process;
the client (Python threads, urllib) shares the 2 cores with it, the same on both sides. Errors:
any answer but 200 with one prediction.

    .venv/bin/python benchmarks/serve_load.py RUN          # a finished run, e.g. benchmarks/results/work/distill/runs/teacher
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SIDES = {"off": ["--no-batching"], "on": [], "on, --backend onnx": ["--backend", "onnx"]}


def start(run: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [sys.executable, "-m", "weitiao", "serve", run, "--port", str(port), *extra]
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def call(url: str, text: str) -> tuple[bool, float]:
    body = json.dumps({"inputs": [text]}).encode()
    req = urllib.request.Request(url + "/v1/predict", data=body, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            ok = r.status == 200 and len(json.loads(r.read())["predictions"]) == 1
    except OSError:
        ok = False
    return ok, time.perf_counter() - start


def level(url: str, texts: list[str], concurrency: int) -> dict:
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda t: call(url, t), texts[:concurrency * 2]))  # warm-up
        start = time.perf_counter()
        results = list(pool.map(lambda t: call(url, t), texts))
        wall = time.perf_counter() - start
    latencies = sorted(s for _, s in results)
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return {"concurrency": concurrency, "requests": len(texts), "errors": sum(not ok for ok, _ in results),
            "throughput_rps": round(len(texts) / wall, 1), "p50_ms": round(pick(0.50) * 1000, 1), "p99_ms": round(pick(0.99) * 1000, 1)}


def in_process(run: str, texts: list[str], repeats: int = 8) -> dict:
    """The model alone, no HTTP: median milliseconds of `predict_rows` for 1 sentence, for 32 consecutive dev sentences
    in one batch (padded to the longest) and in sub-batches of 8 sorted by length (as the server scores), on 2 threads."""
    import statistics

    import torch

    from weitiao.predict import predict_rows
    from weitiao.rundir.opening import open_run

    torch.set_num_threads(2)
    loaded = open_run(run)
    predict_rows(loaded, texts[:8])
    out = {}
    for name, n, bucket in (("1", 1, None), ("32", 32, 32), ("32 by 8", 32, 8)):
        times = []
        for k in range(repeats):
            start = time.perf_counter()
            predict_rows(loaded, texts[k * n:(k + 1) * n], None, bucket)
            times.append(time.perf_counter() - start)
        ms = statistics.median(times) * 1000
        out[name] = {"ms": round(ms, 1), "sentences_per_s": round(n / ms * 1000, 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/serve_load"))
    a = ap.parse_args()
    from provenance import commit
    stamp = commit("serve_load")
    texts = [r.split("\t")[0] for r in SST2.joinpath("dev.tsv").read_text(encoding="utf-8").splitlines()[1:]][:a.requests]
    rows = []
    for side, extra in SIDES.items():  # each side its own fresh server
        proc, url = start(a.run, extra)
        try:
            for c in (1, 8, 32):
                rows.append({"batching": side, **level(url, texts, c)})
                print(rows[-1], flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    off = {r["concurrency"]: r for r in rows if r["batching"] == "off"}
    ceiling = in_process(a.run, texts)
    result = {"commit": stamp, "command": " ".join(["benchmarks/serve_load.py"] + sys.argv[1:]), "results": rows, "in_process": ceiling}
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = ["# `weitiao serve` under load: one SST-2 sentence a request, loopback, 2-core CPU", "", f"`.venv/bin/python {result['command']}` (weitiao {stamp})", "",
             "| micro-batching | concurrency | requests | errors | requests/s | vs off | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["throughput_rps"] / off[r["concurrency"]]["throughput_rps"]
        lines.append(f"| {r['batching']} | {r['concurrency']} | {r['requests']} | {r['errors']} | {r['throughput_rps']} | "
                     f"{ratio:.2f}x | {r['p50_ms']} | {r['p99_ms']} |")
    one, whole, bucketed = ceiling["1"], ceiling["32"], ceiling["32 by 8"]
    lines += ["", f"In-process (the model alone, no HTTP; median of 8): 1 sentence {one['ms']} ms ({one['sentences_per_s']}/s); "
              f"32 sentences in one padded batch {whole['ms']} ms ({whole['sentences_per_s']}/s), in length-sorted sub-batches of 8 "
              f"(as the server scores them) {bucketed['ms']} ms ({bucketed['sentences_per_s']}/s): batching can give at most "
              f"{bucketed['sentences_per_s'] / one['sentences_per_s']:.1f}x here."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
