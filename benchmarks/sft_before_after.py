"""Held-out perplexity and sample generations of SmolLM2 before (the bundled model) and after (a trained run).

    .venv/bin/python benchmarks/sft_before_after.py RUN_DIR HELD_OUT.json > benchmarks/results/sft-before-after.json

RUN_DIR: a weitiao causal_lm run (benchmarks/compare_sft.py writes one, with its held-out records,
under benchmarks/results/work/compare_sft/). Greedy, 48 new tokens, the first 3 held-out prompts.
"""
import json, sys
from weitiao.runtime import quiet_hf; quiet_hf()
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from weitiao.data.examples import Examples
from weitiao.models import resolve_model
from weitiao.tasks.causal_lm import TASK
from weitiao.tasks.common.generation import Sampling, generate, stop_ids
from weitiao.tasks.causal_lm.lm_text import alpaca_conversation, prompt_text
from weitiao.tasks.common.scoring import score

torch.set_num_threads(2)
from provenance import commit

out = {"commit": commit("sft_before_after"), "command": " ".join(["benchmarks/sft_before_after.py", *sys.argv[1:]])}
run, val = sys.argv[1], sys.argv[2]
records = json.load(open(val))
convs = [alpaca_conversation(r["instruction"], r.get("input") or "", r["output"]) for r in records]
opts = TASK.Options()
for name, path in (("before", resolve_model("smollm2-135m-instruct")), ("after", run + "/model")):
    tok = AutoTokenizer.from_pretrained(path); model = AutoModelForCausalLM.from_pretrained(path).eval()
    enc = TASK.encode(tok, Examples(convs, None, None, list(range(len(convs))), "val"), 256, opts, [])
    s = score(model, TASK, enc, tok.pad_token_id, 0, opts, 16, torch.device("cpu"))
    m = TASK.metrics(s.outputs, enc, [], opts)
    prompts = [tok(prompt_text(tok, c), add_special_tokens=False)["input_ids"] for c in convs[:3]]
    gens = generate(model, tok, prompts, Sampling(max_new_tokens=48), stop_ids(tok, model, "<|im_end|>"), "cpu")
    out[name] = {"perplexity": m["perplexity"], "loss": m["loss"], "tokens": m["tokens"], "generations": gens}
out["prompts"] = [c[0][1] for c in convs[:3]]; out["references"] = [c[1][1] for c in convs[:3]]
print(json.dumps(out, indent=1))
