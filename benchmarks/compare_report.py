"""Derived numbers and the markdown report of benchmarks/compare_trainer.py."""

from __future__ import annotations


def derive(rec: dict, peak_gflops: float, n_params: int, n_non_embedding: int) -> dict:
    """Add samples/s, real tokens/s and MFU (6·N·tokens/s over the measured matmul peak; also with N
    the non-embedding parameters, in the JSON only)."""
    t = rec.get("train_s")
    if rec.get("rc") == 0 and t and rec.get("real_tokens"):
        rec["samples_per_s"] = rec["samples"] / t
        rec["tokens_per_s"] = rec["real_tokens"] / t
        rec["mfu"] = 6 * n_params * rec["tokens_per_s"] / (peak_gflops * 1e9)
        rec["mfu_non_embedding"] = 6 * n_non_embedding * rec["tokens_per_s"] / (peak_gflops * 1e9)
    return rec


def _f(x, fmt: str = "{:.1f}", scale: float = 1) -> str:
    return "–" if x is None else fmt.format(x * scale if scale != 1 else x)


def _ratio(a, b) -> str:
    return "–" if not a or not b else f"{a / b:.2f}×"


def _title(group: str, vs: list[dict], groups: dict) -> str:
    v = vs[0]
    steps = f", max_steps {v['max_steps']}" if v.get("max_steps") else ""
    return f"### {group}. {groups[group]}: {v['epochs']:g} epoch(s){steps}, lr {v['lr']:g}, max_length {v['max_length']}"


def group_table(vs: list[dict]) -> list[str]:
    ref = next((v for v in vs if v["tool"] == "weitiao"), None)
    gpu = any(v.get("gpu_peak_mb") for v in vs)
    out = ["| variant | train s | wall s | samples/s | real tok/s | padding % | MFU % | peak RSS MB |" + (" peak GPU MB |" if gpu else "")
           + " dev acc | trainable params | weitiao speed-up (train / wall) |",
           "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if gpu else "")]
    for v in vs:
        label = v["label"] if v.get("rc") == 0 else f"{v['label']} **(failed, rc {v.get('rc')})**"
        up = "(reference)" if v is ref else (f"{_ratio(v.get('train_s'), ref.get('train_s'))} / {_ratio(v.get('wall_s'), ref.get('wall_s'))}" if ref else "–")
        out.append(f"| {label} | {_f(v.get('train_s'))} | {_f(v.get('wall_s'))} | {_f(v.get('samples_per_s'))} | "
                   f"{_f(v.get('tokens_per_s'), '{:.0f}')} | {_f(v.get('padding'), '{:.1f}', 100)} | {_f(v.get('mfu'), '{:.1f}', 100)} | "
                   f"{_f(v.get('peak_rss_mb'), '{:.0f}')} |" + (f" {_f(v.get('gpu_peak_mb'), '{:.0f}')} |" if gpu else "") +
                   f" {_f(v.get('accuracy'), '{:.4f}')} | {_f(v.get('trainable_params'), '{:,}')} | {up} |")
    if ref and ref.get("rc") == 0:
        parts = [f"weitiao's own `train.seconds` {_f(ref.get('reported_train_s'))} s includes, besides the loop, "
                 f"evaluation {_f(ref.get('eval_s'), '{:.1f}')} s, saving the best model {_f(ref.get('save_best_s'), '{:.1f}')} s "
                 f"and checkpoints {_f(ref.get('checkpoint_s'), '{:.1f}')} s: these are left out of its train s above"]
        if ref.get("best_model_accuracy") not in (None, ref.get("accuracy")):
            parts.append(f"dev acc is that of the model at the end of training, as for Trainer; weitiao's saved model is its "
                         f"best epoch's (picked on dev), dev acc {ref['best_model_accuracy']:.4f}")
        cache = ref.get("feature_cache")
        if cache:
            parts.append(f"feature cache used: embeddings + {cache['frozen_layers']} of {cache['of_layers']} layers run once "
                         f"({cache['megabytes']} MB, built in {cache['build_seconds']} s: {cache['build_seconds_train']} s for the training split, counted in train s, "
                         f"the rest for dev, which stands in for evaluation and is left out like Trainer's)")
        elif ref["method"] in ("head_only", "train_top"):
            parts.append("**feature cache NOT used**")
        out += ["", "; ".join(parts) + "."]
    return out


def tta_table(vs: list[dict]) -> list[str]:
    ref = next((v for v in vs if v["tool"] == "weitiao"), None)
    out = ["| variant | time to target (train s, eval excluded) | step | wall s | best dev acc | evaluations | peak RSS MB | weitiao speed-up |",
           "|---|---|---|---|---|---|---|---|"]
    for v in vs:
        reached = v.get("time_to_target_s")
        if reached is None:
            budget = f"not reached in {v['budget_min']:g} min" if v.get("budget_exhausted") else "not reached (schedule ended)"
            shown = f"{budget} (best {_f(v.get('best_accuracy'), '{:.4f}')})"
        else:
            shown = f"{reached:.1f}"
        up = "(reference)" if v is ref else (_ratio(reached, ref.get("time_to_target_s")) if ref else "–")
        label = v["label"] if v.get("rc") == 0 else f"{v['label']} **(failed, rc {v.get('rc')})**"
        out.append(f"| {label} | {shown} | {_f(v.get('step_at_target'), '{}')} | {_f(v.get('wall_s'))} | "
                   f"{_f(v.get('best_accuracy'), '{:.4f}')} | {len(v.get('history') or [])} | {_f(v.get('peak_rss_mb'), '{:.0f}')} | {up} |")
    return out


def data_check(report: dict) -> str:
    """What weitiao's cleaning did to the training subset (it must keep every row)."""
    d = report["data"]
    first = next((v for v in report["variants"] if v["tool"] == "weitiao" and v["group"] != "4" and v.get("data_report")), None)
    if first is None:
        return ""
    r = first["data_report"]
    kept, dupes, leaked = r["train"]["kept"], r["train"]["duplicates_dropped"], r["leakage"]["train_rows_in_eval"]
    verdict = "same rows as Trainer" if kept == d["n"] else f"**weitiao kept {kept} of {d['n']} rows: the sides differ**"
    return (f"weitiao's data report: kept {kept} of {r['train']['rows']} training rows ({dupes} duplicates dropped; {verdict}); "
            f"{leaked} training rows also appear in dev (reported, not dropped: `drop_leakage` is off by default, so neither side drops them).")


GPU_NOTES = """\
On the GPU: both sides train with bf16 autocast (fp32 master weights; weitiao `training.mixed_precision: bf16`, Trainer
`bf16=True`), SDPA attention (transformers' default on CUDA; weitiao's `attention: auto` picks it there), fused AdamW.
*peak GPU MB*: `torch.cuda.max_memory_allocated()` of the child at its end. Where this page says fp32 below, read
bf16 autocast; the MFU peak is the measured bf16 matmul above.
"""

NOTES = """\
How the numbers are taken:

- Every variant is its own process. *wall s*: the whole process (imports, model load, tokenization, training, final dev
  evaluation). weitiao's wall also holds what it always does: a dev evaluation at each epoch end (whose scores of
  the best model are its final ones for full and partial fine-tuning; a merged LoRA model is scored again), an
  epoch-end checkpoint (written while that evaluation runs), and saving the best model; Trainer's holds one
  `trainer.predict` on dev. *peak RSS*: `ru_maxrss` of that child from `os.wait4`.
- *train s*, Trainer: `train_runtime` of `trainer.train()` (no evaluation or saving during training). weitiao: its loop
  time measured by `benchmarks/weitiao_timed.py`, minus the evaluation at each epoch end, saving the best model and
  the epoch-end checkpoint, which Trainer does not do here (weitiao's own `train.seconds` includes them; given below
  each table). With the feature cache, the cache build (train + dev splits) is added to train s.
- *samples/s* and *real tok/s*: training examples and non-pad tokens in the batches actually formed (sum of
  attention_mask of the inputs of each training step on the Trainer side, of each batch weitiao's loop builds) over
  train s.
  *padding %*: 1 − real tokens / positions (batch × longest, summed over the batches), over all epochs.
- *MFU*: 6·N·(real tok/s) / peak, N = all parameters of the model (embeddings included: they are about half of
  MiniLM's parameters but cost no matmul FLOPs, so with the non-embedding count MFU would be about half), peak = the best fp32
  GFLOP/s of a 2048×2048 matmul on the same threads, measured by this script at its start. For LoRA, head_only and
  train_top the real work is smaller than 6·N per token (no weight gradients for frozen matrices; with the cache no
  forward pass through the frozen layers either), so there it is a nominal, normalised throughput, not a utilisation.
- *weitiao speed-up*: this row's time / weitiao's time in the same group (above 1: weitiao is faster).

Settings that are the same on both sides: the same TSV rows (written once by this script), the bundled
all-MiniLM-L6-v2 with a fresh 2-label head, batch 32, AdamW (β 0.9/0.999, ε 1e-8), linear decay after a warmup of
ceil(0.06 · steps), weight decay 0.01 on all but biases and LayerNorm weights, gradient clipping at 1.0, fp32, seed 42,
the same torch threads, eval batch 128.

Differences that could not be made identical:

- transformers 5 renamed `group_by_length=True` to `train_sampling_strategy="group_by_length"` and dropped
  `warmup_ratio` (`warmup_steps` below 1 is a ratio); the `tokenizer=` argument of Trainer is `processing_class=`.
- Kernels: {kernels}
- Warmup shape: Trainer's LR factor is step/warmup, weitiao's (step+1)/(warmup+1); both decay linearly to 0.
- Length grouping: both sort by length within buckets after a seeded shuffle. weitiao's buckets hold 50 batches and
  it shuffles the batch order; Trainer's `LengthGroupedSampler` buckets hold min(50, n // (4 · batch)) batches (15 for
  n = 2000) and keep longest-first order inside a bucket (the longest batch goes first).
- Frozen layers: weitiao runs a frozen bottom in eval mode (no dropout), with or without its cache; Trainer with
  `requires_grad=False` keeps dropout on in them (model.train()). This changes accuracy more than cost.
- LoRA: peft's `SEQ_CLS` default would train only `classifier`; the Trainer side sets
  `modules_to_save=["bert.pooler.dense", "classifier"]`, as weitiao does, so both train the same parameters.
- Trainer also passes `token_type_ids` (all zeros) to BERT; weitiao leaves them to the model's default (zeros).
"""


def markdown(report: dict) -> str:
    m, d = report["machine"], report["data"]
    gpu = report.get("device") == "cuda"
    lines = ["# weitiao vs transformers `Trainer` on " + (f"a GPU ({m.get('gpu')}), bf16 on both sides" if gpu else "CPU"), "",
             f"Command: `{report['command']}`", "",
             f"Machine: {m['cpu']}; {m['cpu_count']} CPUs ({m['cpus_usable']} usable), torch threads {m['torch_threads']}; "
             f"load average {', '.join(f'{x:.2f}' for x in m['loadavg_start'])} at start, "
             f"{', '.join(f'{x:.2f}' for x in m.get('loadavg_end', ())) or '(not finished)'} at the end.", "",
             f"Versions: python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, peft {m['peft']}, "
             f"accelerate {m['accelerate']}, datasets {m['datasets']}; weitiao commit {m['weitiao_commit']}.", "",
             (f"Peak (MFU denominator): {report['peak_gflops']:.1f} GFLOP/s bf16 8192×8192 matmul on the GPU " if gpu else
              f"Peak (MFU denominator): {report['peak_gflops']:.1f} GFLOP/s fp32 matmul on {m['torch_threads']} threads ") +
             f"({_f(report['peak_gflops_end'])} when measured again at the end). Model: {report['n_params']:,} parameters "
             f"({report['n_params_non_embedding']:,} outside the embeddings).", "",
             f"Data: {d['n']} SST-2 training sentences ({d['words']} words, unique, seeded choice with seed {d['seed']}) "
             f"from `{d['files']['train']}`; dev: {d['dev_rows']} rows (`{d['files']['dev']}`).", ""]
    if report["quick"]:
        lines += ["**--quick: a plumbing test (64 sentences, 3 steps, 128 dev rows); the numbers mean nothing.**", ""]
    check = data_check(report)
    if check:
        lines += [check, ""]
    by_group: dict[str, list[dict]] = {}
    for v in report["variants"]:
        by_group.setdefault(v["group"], []).append(v)
    for group, vs in by_group.items():
        if group == "4":
            v = vs[0]
            lines += [f"### 4. Time to {v['target']} dev accuracy: {d['tta_train_rows']:,} training rows, evaluation every "
                      f"{v['eval_every']} steps, budget {v['budget_min']:g} min of training per variant, "
                      f"{v['epochs']:g} epoch(s) of LR schedule", ""]
            lines += tta_table(vs)
            lines += ["", "Both sides see all training rows (weitiao's `drop_duplicates` is off here) and the whole dev set; "
                      "time to target counts training only (evaluations are timed and subtracted on both sides).", ""]
        else:
            lines += [_title(group, vs, report["groups"]), ""] + group_table(vs) + [""]
    if gpu:
        lines += [GPU_NOTES]
    lines += [NOTES.format(kernels=kernels(report["variants"]))]
    return "\n".join(lines)


def kernels(variants: list[dict]) -> str:
    """Optimizer and attention implementations of each side, as the runs report them."""
    optim = sorted({str(v.get("optim")) for v in variants if v["tool"] == "trainer" and v.get("optim")})
    attention = sorted({str(v.get("attention")) for v in variants if v["tool"] == "trainer" and v.get("attention")})
    return (f"Trainer used optim {', '.join(optim) or '?'} and attention {', '.join(attention) or '?'} (transformers' "
            "defaults unless --trainer-optim says otherwise; the attention kernel is the same on both sides, --attention); weitiao uses torch's fused AdamW\n"
            "  and, with `training.attention: auto`, eager attention while training on CPU (its own measured choice).")
