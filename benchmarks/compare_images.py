"""Images: weitiao against a plain PyTorch loop written as the transfer-learning tutorials write it.

The bundled EfficientNet-Lite0 on hymenoptera (ants vs bees: 245 training, 153 validation
images), both sides in their own processes, in one run, on the same machine and threads, with
the same batch (32), optimizer (AdamW, weight decay 0.01), schedule (linear decay after 6%
warmup), gradient clipping (1.0), epochs and evaluation after every epoch (best epoch kept).

The plain side is the PyTorch tutorial "Transfer learning for computer vision" (its "ConvNet
as fixed feature extractor" part for head_only), with torchvision written out by hand (its
wheel cannot be imported on this machine): an ImageFolder-style Dataset that PIL-decodes every
file every epoch and applies Resize(shorter side) + CenterCrop + ToTensor + Normalize with the
model's own preprocessor values (weitiao's ImageProcessor: resize, size, mean, std); a
DataLoader with num_workers=2; the pretrained weights loaded through weitiao's adapter class
(the same network) with its classifier replaced by nn.Linear(1280, 2). Differences from the
tutorial, all for fairness: no RandomResizedCrop / flip for training (weitiao does not augment
in this config, so both sides see the same resized, center-cropped images every epoch), AdamW
lr 1e-3 instead of SGD + StepLR, and batch 32 instead of 4. Files are listed with weitiao's
image extensions (torchvision's ImageFolder leaves out .gif, so it would drop
train/ants/imageNotFound.gif, a readable 300x300 placeholder that weitiao decodes and keeps),
and any file that PIL cannot open and verify is skipped when the dataset is built.

Rows:
  head_only  --epochs (5) epochs, lr 1e-3. weitiao: its feature cache (the frozen backbone runs
             once over the training and validation images). Plain: backbone requires_grad=False
             and in eval mode, run on every batch of every epoch, training and validation.
             Measured: the whole process, from launch to exit (wall s), its peak RSS, and the
             final validation accuracy (best epoch's; the last epoch's in the JSON).
             Target of the issue: plain wall / weitiao wall >= 4.
  full       full fine-tuning, --full-epochs (1) epoch(s) (or --full-steps optimizer steps), lr
             --full-lr (1e-4). Training samples/s of weitiao, of the plain loop (DataLoader with
             2 workers decoding while the model computes) and of the model's forward + backward
             alone on a pre-made batch of 32, the faster of the contiguous and channels-last
             weight layouts (the ceiling). Targets: weitiao >= 1.2x plain and
             >= 0.9x the ceiling. MFU: FLOPs of one forward + backward per image (the
             forward counted by torch.utils.flop_counter.FlopCounterMode, the backward taken as
             2 x forward) x samples/s over the measured fp32 matmul peak
             (compare_trainer.peak_gflops, or --peak-gflops).

How samples/s is measured (the same statistic on all three):
  the median over training steps of (samples in the step / seconds of the step), leaving out the
  first step of every epoch. weitiao: its metrics.jsonl with training.log_every=1; each record's
  samples_per_s covers the time from the previous log record (written right after the previous
  optimizer step) to this one, so one step: batch assembly, forward, backward, clipping,
  optimizer step. A window that follows an evaluation record also holds that evaluation and
  the epoch-end checkpoint, and the log does not say how long those took (nor how many samples
  a window had), so such windows are left out; hence "not the first step of an epoch" on every
  side. Plain: the same window timed in the loop (from the end of the previous optimizer step,
  or the start of the epoch's `for` loop, to the end of this one: waiting for the DataLoader
  included). Ceiling: one forward + backward (+ zero_grad), after --warmup-steps unmeasured ones.
  The JSON also has weitiao's own metrics.json train.samples_per_s (its whole loop, evaluation
  and checkpoints included) and the plain loop's aggregate (all but the run's first step).

    .venv/bin/python benchmarks/compare_images.py                            # both rows (about 6-10 min on 2 idle cores, estimated)
    .venv/bin/python benchmarks/compare_images.py --rows head_only --repeats 2   # sides alternated each repeat
    .venv/bin/python benchmarks/compare_images.py --quick                    # tiny: tests the script end to end

Writes OUT.md and OUT.json (default benchmarks/results/compare_images.{md,json}; --quick adds
-quick); weitiao's run folders and the logs go to benchmarks/results/work/compare_images*/
(git-ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
DATA = ROOT.parent / "shared" / "data" / "hymenoptera" / "hymenoptera_data"
# weitiao's own list (weitiao/data/images.py), so both sides read the same files
EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
WEIGHT_DECAY, WARMUP_RATIO, MAX_GRAD_NORM = 0.01, 0.06, 1.0  # weitiao's defaults (weitiao/config.py TrainingConfig)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="head_only,full", help="rows to run: head_only, full (comma-separated)")
    ap.add_argument("--epochs", type=float, default=5, help="head_only: epochs (the example config's 5)")
    ap.add_argument("--lr", type=float, default=1e-3, help="head_only: learning rate (the example config's)")
    ap.add_argument("--full-epochs", type=float, default=1, help="full: epochs")
    ap.add_argument("--full-steps", type=int, default=None, help="full: optimizer steps (training.max_steps; wins over --full-epochs)")
    ap.add_argument("--full-lr", type=float, default=1e-4, help="full: learning rate")
    ap.add_argument("--ceiling-steps", type=int, default=8, help="full: measured forward+backward steps of the ceiling")
    ap.add_argument("--warmup-steps", type=int, default=2, help="full: unmeasured ceiling steps first")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="plain side: DataLoader num_workers")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of every side")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeats", type=int, default=1, help="run every row this many times, the order of the sides reversed every other repeat")
    ap.add_argument("--peak-gflops", type=float, default=None, help="MFU denominator; default: measured (fp32 matmul on --threads threads)")
    ap.add_argument("--data", default=str(DATA), help="folder with train/ and val/ (ImageFolder layout)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training images of each class (symlinked subset)")
    ap.add_argument("--limit-val", type=int, default=None, help="use only the first N validation images of each class")
    ap.add_argument("--out", default=str(HERE / "results" / "compare_images"), help="path stem of the .md and .json")
    ap.add_argument("--keep-runs", action="store_true", help="keep weitiao's model/ and checkpoints/ folders")
    ap.add_argument("--quick", action="store_true", help="tiny end-to-end test: 40 + 8 images per class, 1 epoch, 3 ceiling steps")
    # child modes (this file runs the plain side and the ceiling in their own processes)
    ap.add_argument("--plain-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ceiling-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", choices=["head_only", "full"], help=argparse.SUPPRESS)
    ap.add_argument("--train", help=argparse.SUPPRESS)
    ap.add_argument("--val", help=argparse.SUPPRESS)
    ap.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(args.rows) - {"head_only", "full"}
    if unknown:
        ap.error(f"--rows: unknown {sorted(unknown)}; use head_only and/or full")
    if args.quick and not (args.plain_child or args.ceiling_child):
        args.limit, args.limit_val = args.limit or 40, args.limit_val or 8
        args.epochs, args.full_epochs, args.ceiling_steps, args.warmup_steps = 1, 1, 3, 1
    return args


# --- the plain loop (child process) -------------------------------------------------------

def plain_side(args) -> None:
    """The tutorial's loop. Writes accuracies, per-step times and counts to --result."""
    import numpy as np
    import torch
    from PIL import Image
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    from weitiao.models.image import EfficientNetForImageClassification, ImageProcessor, bundled_efficientnet

    launched = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    folder = bundled_efficientnet()
    proc = ImageProcessor.from_pretrained(folder)  # the model's resize, crop, mean and std
    mean, std = torch.tensor(proc.mean).view(3, 1, 1), torch.tensor(proc.std).view(3, 1, 1)
    resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST}[proc.resample]

    def transform(img):
        """transforms.Resize(resize) + CenterCrop(size) + ToTensor() + Normalize(mean, std), by hand."""
        w, h = img.size
        short, long_ = (w, h) if w <= h else (h, w)
        new_long = int(proc.resize * long_ / short)  # torchvision's Resize(int): the shorter side to `resize`
        nw, nh = (proc.resize, new_long) if w <= h else (new_long, proc.resize)
        img = img.resize((nw, nh), resample)
        left, top = int(round((nw - proc.size) / 2.0)), int(round((nh - proc.size) / 2.0))
        img = img.crop((left, top, left + proc.size, top + proc.size))
        x = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous().float().div(255)
        return (x - mean) / std

    def readable(path: Path) -> bool:
        try:
            with Image.open(path) as img:
                img.verify()
            return True
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            return False

    class ImageFolder(Dataset):
        """torchvision.datasets.ImageFolder's layout and loader (PIL, convert("RGB")); unreadable files left out."""

        def __init__(self, root: str):
            self.classes = sorted(d.name for d in Path(root).iterdir() if d.is_dir() and not d.name.startswith("."))
            self.samples, self.skipped = [], []
            for i, c in enumerate(self.classes):
                for f in sorted(p for p in (Path(root) / c).rglob("*") if p.is_file() and not p.name.startswith(".")):
                    if f.suffix.lower() not in EXTENSIONS:
                        continue
                    if readable(f):
                        self.samples.append((str(f), i))
                    else:
                        self.skipped.append(str(f))

        def __len__(self):
            return len(self.samples)

        def __getitem__(self, i):
            path, label = self.samples[i]
            with open(path, "rb") as fh:
                img = Image.open(fh).convert("RGB")
            return transform(img), label

    start = time.perf_counter()
    data = {"train": ImageFolder(args.train), "val": ImageFolder(args.val)}
    listing_s = time.perf_counter() - start
    loaders = {"train": DataLoader(data["train"], batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                   generator=torch.Generator().manual_seed(args.seed)),
               "val": DataLoader(data["val"], batch_size=args.batch_size, shuffle=False, num_workers=args.workers)}

    model = EfficientNetForImageClassification.from_pretrained(folder)[0]  # the pretrained 1000-class network
    model.classifier = nn.Linear(model.classifier.in_features, len(data["train"].classes))  # model.fc = nn.Linear(num_ftrs, 2)
    head_only = args.method == "head_only"
    if head_only:
        for p in model.efficientnet.parameters():
            p.requires_grad = False
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = len(loaders["train"])
    total = args.max_steps or math.ceil(args.epochs * steps_per_epoch)
    warmup = math.ceil(total * WARMUP_RATIO)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / (warmup + 1) if s < warmup else 1.0 - min(1.0, (s - warmup) / max(1, total - warmup)))
    criterion = nn.CrossEntropyLoss()
    best_path = Path(args.work) / "best_model_params.pt"
    best_path.parent.mkdir(parents=True, exist_ok=True)

    def evaluate() -> float:
        model.eval()
        correct = n = 0
        with torch.no_grad():
            for x, y in loaders["val"]:
                correct += int((model(x).logits.argmax(1) == y).sum())
                n += len(y)
        return correct / max(n, 1)

    step, epoch, best, history, step_log = 0, 0, -1.0, [], []
    train_s = eval_s = 0.0
    loop_start = time.perf_counter()
    while step < total:
        model.train()
        if head_only:
            model.efficientnet.eval()  # a frozen feature extractor: its batch norms keep their statistics
        epoch_start = t_prev = time.perf_counter()
        running, seen = 0.0, 0
        for i, (x, y) in enumerate(loaders["train"]):
            optimizer.zero_grad()
            loss = criterion(model(x).logits, y)
            loss.backward()
            nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            running += loss.item() * len(y)
            seen += len(y)
            now = time.perf_counter()
            step_log.append({"epoch": epoch, "i": i, "n": len(y), "s": now - t_prev})
            t_prev = now
            step += 1
            if step >= total:
                break
        train_s += time.perf_counter() - epoch_start
        start = time.perf_counter()
        acc = evaluate()
        if acc > best:
            best = acc
            torch.save(model.state_dict(), best_path)  # the tutorial keeps the best epoch's weights
        eval_s += time.perf_counter() - start
        history.append({"epoch": epoch + 1, "step": step, "train_loss": running / max(seen, 1), "val_acc": acc})
        print(f"epoch {epoch + 1}: step {step}/{total}, loss {running / max(seen, 1):.4f}, val acc {acc:.4f}", flush=True)
        epoch += 1
    Path(args.result).write_text(json.dumps({
        "method": args.method, "n_train": len(data["train"]), "n_val": len(data["val"]), "classes": data["train"].classes,
        "skipped": data["train"].skipped + data["val"].skipped, "listing_s": listing_s, "steps": step, "epochs": step / steps_per_epoch,
        "best_acc": best, "last_acc": history[-1]["val_acc"], "history": history, "train_s": train_s, "eval_s": eval_s,
        "loop_s": time.perf_counter() - loop_start, "setup_s": loop_start - launched, "step_log": step_log,
        "trainable_params": sum(p.numel() for p in params)}, indent=1))


# --- the ceiling: forward + backward alone (child process) --------------------------------

def ceiling_side(args) -> None:
    """Full fine-tuning's forward + backward on one pre-made batch: per-step times, FLOPs, peak GFLOP/s."""
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    from weitiao.models.image import EfficientNetForImageClassification, ImageProcessor, bundled_efficientnet

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.peak_gflops:
        peak = args.peak_gflops
    else:
        from harness import peak_gflops

        peak = peak_gflops(args.threads)
    folder = bundled_efficientnet()
    size = ImageProcessor.from_pretrained(folder).size
    model = EfficientNetForImageClassification.from_pretrained(folder)[0]
    model.classifier = nn.Linear(model.classifier.in_features, 2)
    model.train()
    x, y = torch.randn(args.batch_size, 3, size, size), torch.randint(0, 2, (args.batch_size,))
    criterion = nn.CrossEntropyLoss()

    # The forward's FLOPs are counted; the backward's are taken as 2 x forward (the gradients of the
    # inputs and of the weights). FlopCounterMode's own backward count is kept in the JSON only: its
    # convolution_backward formula ignores `groups` for the weight gradient, so it counts every
    # depthwise convolution C times over (1005 GFLOP against 25 GFLOP forward on batch 32, torch 2.13).
    with FlopCounterMode(display=False) as fwd_counter:
        logits = model(x).logits
    with FlopCounterMode(display=False) as bwd_counter:
        criterion(logits, y).backward()
    flops_fwd, flops_bwd_counted = fwd_counter.get_total_flops(), bwd_counter.get_total_flops()
    flops_bwd = 2 * flops_fwd
    model.zero_grad(set_to_none=True)

    def timed(memory_format) -> list[float]:
        model.to(memory_format=memory_format)
        times = []
        for i in range(args.warmup_steps + args.ceiling_steps):
            start = time.perf_counter()
            model.zero_grad(set_to_none=True)
            criterion(model(x).logits, y).backward()
            if i >= args.warmup_steps:
                times.append(time.perf_counter() - start)
        return times

    # The ceiling is the faster of the two weight layouts (weitiao trains convolution networks
    # channels-last; the tutorial's loop keeps PyTorch's default, contiguous).
    layouts = {"contiguous": timed(torch.contiguous_format), "channels_last": timed(torch.channels_last)}
    medians = {k: statistics.median(v) for k, v in layouts.items()}
    best = min(medians, key=medians.get)
    times, median = layouts[best], medians[best]
    Path(args.result).write_text(json.dumps({
        "batch_size": args.batch_size, "image_size": size, "step_s": times, "median_step_s": median, "layout": best,
        "samples_per_s_by_layout": {k: args.batch_size / v for k, v in medians.items()}, "step_s_by_layout": layouts,
        "samples_per_s": args.batch_size / median, "flops_fwd": flops_fwd, "flops_bwd": flops_bwd,
        "flops_bwd_flopcounter": flops_bwd_counted,
        "flops_per_sample": (flops_fwd + flops_bwd) / args.batch_size, "peak_gflops": peak,
        "peak_measured": not args.peak_gflops}, indent=1))


# --- running the sides --------------------------------------------------------------------

def run_child(cmd: list[str], log_path: Path, threads: int) -> dict:
    """One side in its own process: wall time from launch to exit, the main process's peak RSS
    (os.wait4, as compare_trainer.run_child), and the peak PSS of its whole process tree (main +
    DataLoader workers, polled every 0.5 s from /proc/PID/smaps_rollup; PSS splits pages the
    forked workers share with their parent, so the sum counts each page once)."""
    import psutil

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    peak = {"pss": 0, "procs": 0}
    done = threading.Event()

    def watch(pid: int) -> None:
        while not done.wait(0.5):
            try:
                procs = [psutil.Process(pid)]
                procs += procs[0].children(recursive=True)
            except psutil.Error:
                continue
            total = 0
            for p in procs:
                try:
                    with open(f"/proc/{p.pid}/smaps_rollup") as fh:
                        total += next(int(line.split()[1]) for line in fh if line.startswith("Pss:")) * 1024
                except (OSError, StopIteration, ValueError):
                    pass
            peak["pss"] = max(peak["pss"], total)
            peak["procs"] = max(peak["procs"], len(procs))

    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(cmd) + "\n\n")
        log.flush()
        start = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        watcher = threading.Thread(target=watch, args=(child.pid,), daemon=True)
        watcher.start()
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        done.set()
        watcher.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": child.returncode, "wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "peak_tree_pss_mb": round(peak["pss"] / 2**20), "max_processes": peak["procs"], "log": str(log_path)}


def prepare_data(args, work: Path) -> dict:
    """The train/val folders both sides read: the data itself, or (--limit) a symlinked subset."""
    src = Path(args.data).resolve()
    files = {"train": src / "train", "val": src / "val"}
    if args.limit or args.limit_val:
        for split, n in (("train", args.limit), ("val", args.limit_val)):
            if not n:
                continue
            dest = work / "data" / split
            for cls in sorted(p for p in files[split].iterdir() if p.is_dir() and not p.name.startswith(".")):
                (dest / cls.name).mkdir(parents=True, exist_ok=True)
                for old in (dest / cls.name).iterdir():
                    old.unlink()
                chosen = sorted(f for f in cls.rglob("*") if f.is_file() and f.suffix.lower() in EXTENSIONS)[:n]
                for f in chosen:
                    (dest / cls.name / f.name).symlink_to(f)
            files[split] = dest
    counts = {split: sum(1 for f in Path(p).rglob("*") if f.is_file() and f.suffix.lower() in EXTENSIONS) for split, p in files.items()}
    return {"train": str(files["train"]), "val": str(files["val"]), "files": counts, "subset": bool(args.limit or args.limit_val)}


def warm_caches(data: dict, log: Path, threads: int) -> str:
    """The bundled model converted (once) and every file in the page cache: the first side measured must not pay for them."""
    cmd = [sys.executable, "-c", "from weitiao.models.image import bundled_efficientnet; print(bundled_efficientnet())"]
    res = run_child(cmd, log, threads)
    if res["rc"] != 0:
        sys.exit(f"could not load the bundled EfficientNet-Lite0; see {log}")
    folder = Path(log.read_text().strip().splitlines()[-1])
    for f in [*folder.glob("*"), *(p for split in ("train", "val") for p in Path(data[split]).rglob("*"))]:
        if f.is_file():
            f.read_bytes()
    return str(folder)


def weitiao_config(path: Path, args, data: dict, method: str, runs: Path) -> None:
    """examples/hymenoptera.yaml with absolute paths, the run's threads and seed, and one log record per step."""
    import yaml

    training = {"epochs": args.epochs if method == "head_only" else args.full_epochs, "batch_size": args.batch_size,
                "lr": args.lr if method == "head_only" else args.full_lr, "seed": args.seed, "num_threads": args.threads,
                "progress": False, "log_every": 1}
    if method == "full" and args.full_steps:
        training["max_steps"] = args.full_steps
    cfg = {"version": 1, "model": "efficientnet_lite0", "task": "image_classification",
           "data": {"train": data["train"], "validation": data["val"]}, "strategy": method, "training": training,
           "output": {"dir": str(runs)}}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def weitiao_steady(jsonl: Path) -> dict:
    """Per-step samples/s from metrics.jsonl (log_every=1): the windows that hold exactly one training step.

    A log record's window starts at the previous log record; after an evaluation record it also
    holds that evaluation and the epoch-end checkpoint (and the first window, the loop's start):
    those are left out, which leaves the steps that are not the first of an epoch."""
    rates, clean, history, all_windows = [], False, [], 0
    for line in jsonl.read_text().splitlines():
        rec = json.loads(line)
        if "samples_per_s" in rec and "step" in rec:
            all_windows += 1
            if clean:
                rates.append(rec["samples_per_s"])
            clean = True
        elif "eval" in rec:
            history.append({"step": rec["step"], "epoch": rec["epoch"], "val_acc": rec["eval"].get("accuracy")})
            clean = False
        elif "grad_spike" in rec or "skipped" in rec:
            continue  # written inside a step's window, which stays one step
        elif "step" in rec:  # resumed_from, trainable_params: not a plain step
            clean = False
    return {"step_rates": rates, "windows": all_windows, "history": history,
            "median_samples_per_s": statistics.median(rates) if rates else None}


def plain_steady(res: dict) -> dict:
    steps = res["step_log"]
    rates = [s["n"] / s["s"] for s in steps if s["i"] > 0]
    later = steps[1:]  # all but the run's first step: the aggregate, DataLoader start of later epochs included
    return {"step_rates": rates, "median_samples_per_s": statistics.median(rates) if rates else None,
            "aggregate_samples_per_s": sum(s["n"] for s in later) / sum(s["s"] for s in later) if later else None}


def run_weitiao(args, row: str, r: int, config: Path, runs: Path, logs: Path) -> dict:
    name = f"{row}-r{r}"
    cmd = [sys.executable, "-m", "weitiao", "train", str(config), "--name", name, "--overwrite"]
    rec = run_child(cmd, logs / f"weitiao-{name}.log", args.threads)
    run_dir = runs / name
    if rec["rc"] != 0 or not (run_dir / "metrics.json").exists():
        rec["error"] = f"weitiao failed (exit {rec['rc']}); see {rec['log']}"
        return rec
    m = json.loads((run_dir / "metrics.json").read_text())
    steady = weitiao_steady(run_dir / "metrics.jsonl")
    rec.update(val_acc=m["validation"]["accuracy"], last_acc=steady["history"][-1]["val_acc"] if steady["history"] else None,
               unreadable_images=m["validation"].get("unreadable_images"), history=steady["history"],
               train_reported_s=m["train"]["seconds"], train_reported_samples_per_s=m["train"]["samples_per_s"],
               steps=m["train"]["steps"], epochs=m["train"]["epochs"], feature_cache=m["train"].get("feature_cache"),
               trainable_params=m["train"]["trainable_params"])
    data_line = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0]).get("data") or {}
    rec["n_train"], rec["n_val"] = data_line.get("train", {}).get("kept"), data_line.get("validation", {}).get("kept")
    if row == "full":
        rec.update(samples_per_s=steady["median_samples_per_s"], step_rates=steady["step_rates"], log_windows=steady["windows"])
    if not args.keep_runs:
        import shutil

        for sub in ("model", "checkpoints"):
            shutil.rmtree(run_dir / sub, ignore_errors=True)
    return rec


def run_plain(args, row: str, r: int, data: dict, work: Path, logs: Path) -> dict:
    name = f"{row}-r{r}"
    result = work / f"plain-{name}.json"
    result.unlink(missing_ok=True)
    head = row == "head_only"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--plain-child", "--method", row, "--train", data["train"], "--val", data["val"],
           "--epochs", str(args.epochs if head else args.full_epochs), "--lr", str(args.lr if head else args.full_lr),
           "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--threads", str(args.threads),
           "--seed", str(args.seed), "--work", str(work / "plain" / name), "--result", str(result)]
    if not head and args.full_steps:
        cmd += ["--max-steps", str(args.full_steps)]
    rec = run_child(cmd, logs / f"plain-{name}.log", args.threads)
    if rec["rc"] != 0 or not result.exists():
        rec["error"] = f"plain loop failed (exit {rec['rc']}); see {rec['log']}"
        return rec
    res = json.loads(result.read_text())
    rec.update({k: res[k] for k in ("n_train", "n_val", "skipped", "listing_s", "steps", "epochs", "history", "train_s", "eval_s",
                                    "loop_s", "setup_s", "trainable_params")})
    rec.update(val_acc=res["best_acc"], last_acc=res["last_acc"])
    if row == "full":
        steady = plain_steady(res)
        rec.update(samples_per_s=steady["median_samples_per_s"], step_rates=steady["step_rates"],
                   aggregate_samples_per_s=steady["aggregate_samples_per_s"])
    return rec


def run_ceiling(args, r: int, work: Path, logs: Path) -> dict:
    result = work / f"ceiling-r{r}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--ceiling-child", "--batch-size", str(args.batch_size),
           "--threads", str(args.threads), "--seed", str(args.seed), "--ceiling-steps", str(args.ceiling_steps),
           "--warmup-steps", str(args.warmup_steps), "--result", str(result)]
    if args.peak_gflops:
        cmd += ["--peak-gflops", str(args.peak_gflops)]
    rec = run_child(cmd, logs / f"ceiling-r{r}.log", args.threads)
    if rec["rc"] != 0 or not result.exists():
        rec["error"] = f"ceiling failed (exit {rec['rc']}); see {rec['log']}"
        return rec
    return rec | json.loads(result.read_text())


def derive(row: str, res: dict) -> dict:
    """Ratios (and MFU) of one row of one repeat."""
    w, p = res.get("weitiao", {}), res.get("plain", {})
    d = {}
    if w.get("wall_s") and p.get("wall_s") and "error" not in w and "error" not in p:
        d["wall_ratio_plain_over_weitiao"] = p["wall_s"] / w["wall_s"]
    if row == "full":
        c = res.get("ceiling", {})
        if w.get("samples_per_s") and p.get("samples_per_s"):
            d["samples_ratio_weitiao_over_plain"] = w["samples_per_s"] / p["samples_per_s"]
        if w.get("samples_per_s") and c.get("samples_per_s"):
            d["samples_ratio_weitiao_over_ceiling"] = w["samples_per_s"] / c["samples_per_s"]
        if c.get("flops_per_sample") and c.get("peak_gflops"):
            for side, rec in (("weitiao", w), ("plain", p), ("ceiling", c)):
                if rec.get("samples_per_s"):
                    d[f"mfu_{side}"] = c["flops_per_sample"] * rec["samples_per_s"] / (c["peak_gflops"] * 1e9)
    return d


# --- report -------------------------------------------------------------------------------

def _f(x, fmt="{:.1f}") -> str:
    return "–" if x is None else fmt.format(x)


def _median(rows: list[dict], key: str):
    values = [r["derived"][key] for r in rows if key in r["derived"]]
    return statistics.median(values) if values else None


def _verdict(value, target: float) -> str:
    return "not measured" if value is None else ("**met**" if value >= target else "**not met**")


def markdown(report: dict) -> str:
    a, info = report["args"], report["machine"]
    lines = ["# Images: weitiao vs a plain PyTorch loop (transfer-learning tutorial style), EfficientNet-Lite0 on hymenoptera", "",
             f"`{report['command']}`", "",
             f"{info['cpu']}, {a['threads']} torch threads, plain side DataLoader num_workers={a['workers']}; load average "
             f"{info['loadavg_start'][0]:.2f} at the start, {info['loadavg_end'][0]:.2f} at the end; torch {info['torch']}, "
             f"weitiao {info['weitiao_commit']}; data: {report['data']['files']['train']} training, {report['data']['files']['val']} "
             f"validation files{' (a symlinked subset: --limit)' if report['data']['subset'] else ''}.", ""]
    failures = [f"{row} r{i} {side}: {x['error']}" for row, reps in report["rows"].items() for i, rep in enumerate(reps)
                for side, x in rep.items() if isinstance(x, dict) and "error" in x]
    if failures:
        lines += ["**Failed:** " + "; ".join(failures), ""]
    if report["rows"].get("head_only"):
        reps = report["rows"]["head_only"]
        ratio = _median(reps, "wall_ratio_plain_over_weitiao")
        lines += [f"## head_only: {a['epochs']:g} epoch(s), batch {a['batch_size']}, AdamW lr {a['lr']:g}", "",
                  "| repeat | order | weitiao wall s | plain wall s | plain / weitiao wall | weitiao peak RSS MB | plain peak RSS MB (main) | "
                  "plain peak PSS MB (with workers) | weitiao val acc | plain val acc (best epoch) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for i, rep in enumerate(reps):
            w, p = rep.get("weitiao", {}), rep.get("plain", {})
            lines.append(f"| {i} | {' then '.join(rep['order'])} | {_f(w.get('wall_s'))} | {_f(p.get('wall_s'))} | "
                         f"{_f(rep['derived'].get('wall_ratio_plain_over_weitiao'), '{:.2f}x')} | {_f(w.get('peak_rss_mb'), '{:.0f}')} | "
                         f"{_f(p.get('peak_rss_mb'), '{:.0f}')} | {_f(p.get('peak_tree_pss_mb'), '{:.0f}')} | "
                         f"{_f(w.get('val_acc'), '{:.4f}')} | {_f(p.get('val_acc'), '{:.4f}')} |")
        w0 = reps[0].get("weitiao", {})
        cache = w0.get("feature_cache") or {}
        lines += ["", f"Median plain / weitiao wall time: {_f(ratio, '{:.2f}x')}; the issue's target >= 4x: {_verdict(ratio, 4.0)}. "
                  f"Wall time: the whole process, launch to exit (imports, decoding, model loading, training, evaluation every epoch, "
                  f"saving). weitiao's feature cache (repeat 0): built in {_f(cache.get('build_seconds'))} s "
                  f"({'used' if cache else '**NOT used**'}), its training loop {_f(w0.get('train_reported_s'))} s. "
                  f"Both sides pick the best epoch on the validation set; the last epoch's accuracy is in the JSON.", ""]
    if report["rows"].get("full"):
        reps = report["rows"]["full"]
        budget = f"{a['full_steps']} optimizer steps" if a.get("full_steps") else f"{a['full_epochs']:g} epoch(s)"
        lines += [f"## full fine-tuning: {budget}, batch {a['batch_size']}, AdamW lr {a['full_lr']:g}", "",
                  "| repeat | order | weitiao samples/s | plain samples/s | fwd+bwd alone samples/s | weitiao / plain | weitiao / fwd+bwd | "
                  "MFU % weitiao / plain / fwd+bwd | wall s weitiao / plain | peak RSS MB weitiao / plain (PSS with workers) | "
                  "val acc weitiao / plain |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for i, rep in enumerate(reps):
            w, p, c, d = rep.get("weitiao", {}), rep.get("plain", {}), rep.get("ceiling", {}), rep["derived"]
            mfu = " / ".join(_f(d.get(f"mfu_{s}") and 100 * d[f"mfu_{s}"]) for s in ("weitiao", "plain", "ceiling"))
            lines.append(f"| {i} | {' then '.join(rep['order'])} | {_f(w.get('samples_per_s'), '{:.2f}')} | {_f(p.get('samples_per_s'), '{:.2f}')} | "
                         f"{_f(c.get('samples_per_s'), '{:.2f}')} | {_f(d.get('samples_ratio_weitiao_over_plain'), '{:.2f}x')} | "
                         f"{_f(d.get('samples_ratio_weitiao_over_ceiling'), '{:.2f}x')} | {mfu} | {_f(w.get('wall_s'))} / {_f(p.get('wall_s'))} | "
                         f"{_f(w.get('peak_rss_mb'), '{:.0f}')} / {_f(p.get('peak_rss_mb'), '{:.0f}')} ({_f(p.get('peak_tree_pss_mb'), '{:.0f}')}) | "
                         f"{_f(w.get('val_acc'), '{:.4f}')} / {_f(p.get('val_acc'), '{:.4f}')} |")
        vs_plain, vs_ceiling = _median(reps, "samples_ratio_weitiao_over_plain"), _median(reps, "samples_ratio_weitiao_over_ceiling")
        c0 = reps[0].get("ceiling", {})
        lines += ["", f"Median weitiao / plain samples/s: {_f(vs_plain, '{:.2f}x')} (target >= 1.2x: {_verdict(vs_plain, 1.2)}); "
                  f"weitiao / forward+backward alone: {_f(vs_ceiling, '{:.2f}x')} (target >= 0.9x, within 10%: {_verdict(vs_ceiling, 0.9)}).", "",
                  "samples/s: the median over training steps, the first step of every epoch left out, of samples / seconds of one step. "
                  "weitiao: the `samples_per_s` of its metrics.jsonl records (training.log_every=1; one record = one step from the end of "
                  "the previous optimizer step: batch assembly, forward, backward, clipping, optimizer step; a record after an evaluation "
                  "also holds that evaluation and the epoch-end checkpoint, with no field saying how long they took, so those are left out). "
                  "Plain: the same window timed in its loop (waiting for the DataLoader's 2 workers included). Forward+backward alone: "
                  f"{a['ceiling_steps']} steps on one pre-made random batch after {a['warmup_steps']} unmeasured ones, model in train mode, "
                  "no optimizer step, in both weight layouts ("
                  + " / ".join(f"{k} {_f(v)}" for k, v in c0.get("samples_per_s_by_layout", {}).items())
                  + f" samples/s in repeat 0); the faster ({c0.get('layout')}) is the ceiling. weitiao trains convolution networks channels-last.",
                  f"MFU: {_f(c0.get('flops_per_sample') and c0['flops_per_sample'] / 1e9, '{:.2f}')} GFLOP per image for forward + backward "
                  f"(forward counted with torch.utils.flop_counter.FlopCounterMode, {_f(c0.get('flops_fwd') and c0['flops_fwd'] / 1e9)} GFLOP "
                  f"per batch of {a['batch_size']}; backward taken as 2 x forward, because FlopCounterMode's convolution backward ignores "
                  f"groups and counts each depthwise convolution's weight gradient C times over) x samples/s over "
                  f"{_f(c0.get('peak_gflops'))} GFLOP/s ({'measured: best fp32 2048x2048 matmul' if c0.get('peak_measured') else 'given with --peak-gflops'}, "
                  f"{a['threads']} threads).", ""]
    return "\n".join(lines)


def machine_info() -> dict:
    from harness import machine_info as machine

    return machine("compare_images", None, ("torch", "pillow"))


def main() -> None:
    args = parse_args()
    if args.plain_child:
        return plain_side(args)
    if args.ceiling_child:
        return ceiling_side(args)

    python = Path(sys.executable)
    command = shlex.join([str(python.relative_to(ROOT)) if python.is_relative_to(ROOT) else str(python),
                          str(Path(__file__).resolve().relative_to(ROOT)), *sys.argv[1:]])
    out = Path(args.out).resolve()
    if args.quick and not out.name.endswith("-quick"):
        out = out.with_name(out.name + "-quick")
    out.parent.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out.parent / f"{out.name}.md", out.parent / f"{out.name}.json"
    work = out.parent / "work" / out.name  # benchmarks/results/work/ is git-ignored
    logs, runs = work / "logs", work / "runs"
    for d in (logs, runs):
        d.mkdir(parents=True, exist_ok=True)
    print(f"command: {command}", flush=True)
    data = prepare_data(args, work)
    info = machine_info()
    model_folder = warm_caches(data, logs / "warm-up.log", args.threads)
    configs = {}
    for row in args.rows:
        configs[row] = work / f"weitiao-{row}.yaml"
        weitiao_config(configs[row], args, data, row, runs)
    print(f"data: {data['files']} ({data['train']}, {data['val']}); model {model_folder}", flush=True)

    report = {"command": command, "args": {k: v for k, v in vars(args).items() if not k.endswith("_child") and k not in
                                           ("method", "train", "val", "max_steps", "work", "result")},
              "machine": info, "data": data, "rows": {row: [] for row in args.rows}}
    for r in range(args.repeats):
        for row in args.rows:
            order = ["weitiao", "plain"] if r % 2 == 0 else ["plain", "weitiao"]
            res = {"order": order}
            for side in order:
                print(f"[repeat {r}] {row}: {side} ...", flush=True)
                res[side] = run_weitiao(args, row, r, configs[row], runs, logs) if side == "weitiao" else run_plain(args, row, r, data, work, logs)
                x = res[side]
                print(f"    {x.get('error') or 'ok'}: wall {x['wall_s']:.1f} s, peak RSS {x['peak_rss_mb']} MB (tree PSS {x['peak_tree_pss_mb']} MB), "
                      f"val acc {_f(x.get('val_acc'), '{:.4f}')}" + (f", {_f(x.get('samples_per_s'), '{:.2f}')} samples/s" if row == "full" else ""),
                      flush=True)
            if row == "full":
                print(f"[repeat {r}] full: forward+backward alone ...", flush=True)
                res["ceiling"] = c = run_ceiling(args, r, work, logs)
                print(f"    {c.get('error') or 'ok'}: {_f(c.get('samples_per_s'), '{:.2f}')} samples/s, "
                      f"{_f(c.get('flops_per_sample') and c['flops_per_sample'] / 1e9, '{:.2f}')} GFLOP/image fwd+bwd, "
                      f"peak {_f(c.get('peak_gflops'))} GFLOP/s", flush=True)
            res["derived"] = derive(row, res)
            report["rows"][row].append(res)
            info["loadavg_end"] = os.getloadavg()
            text = markdown(report)  # after every row: a run stopped part way still leaves what it finished
            md_path.write_text(text + "\n")
            json_path.write_text(json.dumps(report, indent=1))
    print()
    print(text)
    print(f"written: {md_path}, {json_path}")


if __name__ == "__main__":
    main()
