"""head_only against the probe users know: logistic regression (scikit-learn) on the same frozen
features of the bundled EfficientNet-Lite0, its C chosen on the validation split.

Two ImageFolders: hymenoptera (ants / bees photos; its val folder is both validation and the score)
and the 8x8 digits of ../shared/data/digits drawn as PNG images (10 classes, split 60/20/20 by class,
seeded). weitiao trains head_only as examples/hymenoptera.yaml does (5 epochs, lr 1e-3, batch 32),
with the solver-fitted head (the default) and with gradient training alone (`head_fit: gradient`,
as before). The probe's features are computed with weitiao's own image pipeline (decode, resize,
crop, normalize) and the model's body in eval mode: the head's exact inputs.

    .venv/bin/python benchmarks/compare_head_only.py        # ~6 min on 2 cores
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
from pathlib import Path

from harness import DATA_DIR, WORK, commit, machine_info, train_run, write_result

HYMENOPTERA = DATA_DIR / "hymenoptera" / "hymenoptera_data"
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def digits_folder(out: Path, seed: int) -> dict[str, Path]:
    """The digits as 8x8 grey PNGs in train/validation/test ImageFolders (60/20/20 of each class)."""
    import numpy as np
    from PIL import Image

    rows = [line.split(",") for line in gzip.open(DATA_DIR / "digits" / "digits.csv.gz", "rt").read().splitlines() if line.strip()]
    if not rows[0][0].replace(".", "").isdigit():
        rows = rows[1:]
    by_class: dict[int, list] = {}
    for r in rows:
        by_class.setdefault(int(float(r[-1])), []).append(np.array([float(v) for v in r[:-1]]))
    rng = random.Random(seed)
    folders = {s: out / s for s in ("train", "validation", "test")}
    for label, images in sorted(by_class.items()):
        rng.shuffle(images)
        n = len(images)
        parts = {"train": images[: int(0.6 * n)], "validation": images[int(0.6 * n): int(0.8 * n)], "test": images[int(0.8 * n):]}
        for split, chunk in parts.items():
            (folders[split] / str(label)).mkdir(parents=True, exist_ok=True)
            for i, pixels in enumerate(chunk):
                grey = (pixels.reshape(8, 8) * (255 / 16)).clip(0, 255).astype("uint8")
                Image.fromarray(grey, mode="L").save(folders[split] / str(label) / f"{i}.png")
    return folders


def features(folder: Path):
    """[n, 1280] pooled EfficientNet features and class ids of an ImageFolder, as weitiao computes them."""
    import numpy as np
    import torch

    from weitiao.data.images import image_folder, load_images
    from weitiao.models.image import EfficientNetForImageClassification, ImageProcessor, bundled_efficientnet

    base = bundled_efficientnet()
    processor = ImageProcessor.from_pretrained(base)
    model = EfficientNetForImageClassification.from_pretrained(base)[0].eval()
    paths, names, _ = image_folder(str(folder), "folder")
    images, kept, _ = load_images(paths, processor.size, processor.resize, processor.resample)
    classes = sorted(set(names))
    out = []
    with torch.no_grad():
        for start in range(0, len(images), 64):
            x = processor.normalize(torch.from_numpy(images[start:start + 64]))
            out.append(model.efficientnet(x).float().numpy())
    return np.concatenate(out), np.array([classes.index(names[i]) for i in kept])


def probe(splits: dict[str, Path]) -> dict:
    from sklearn.linear_model import LogisticRegression

    data = {s: features(p) for s, p in splits.items()}
    (xt, yt), (xv, yv) = data["train"], data["validation"]
    best = None
    for c in C_GRID:
        clf = LogisticRegression(C=c, max_iter=2000).fit(xt, yt)
        acc = float((clf.predict(xv) == yv).mean())
        if best is None or acc > best[0]:
            best = (acc, c, clf)
    acc, c, clf = best
    out = {"C": c, "validation": acc}
    if "test" in data:
        out["test"] = float((clf.predict(data["test"][0]) == data["test"][1]).mean())
    return out


def weitiao_side(splits: dict[str, Path], work: Path, name: str, head_fit: str) -> dict:
    data = {"train": str(splits["train"]), "validation": str(splits["validation"])}
    if "test" in splits:
        data["test"] = str(splits["test"])
    cfg = {"version": 1, "model": "efficientnet_lite0", "task": "image_classification", "data": data,
           "strategy": {"method": "head_only", "head_fit": head_fit},
           "training": {"epochs": 5, "batch_size": 32, "lr": 1e-3, "progress": False},
           "output": {"dir": str(work / "runs"), "report": False, "tracking": "none"}}
    metrics, timing = train_run(cfg, name, work, 2)
    out = {"validation": metrics["validation"]["accuracy"], "seconds": round(timing["wall_s"], 1)}
    if "test" in metrics:
        out["test"] = metrics["test"]["accuracy"]
    if metrics["train"].get("head_fit"):
        out["C"], out["kept"] = metrics["train"]["head_fit"]["C"], metrics["train"]["head_fit"]["kept"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    stamp = commit("compare_head_only")
    work = WORK / "compare_head_only"
    sets = {"hymenoptera": {"train": HYMENOPTERA / "train", "validation": HYMENOPTERA / "val"},
            "digits as images": digits_folder(work / "digits", args.seed)}
    report = {"command": " ".join(["benchmarks/compare_head_only.py"] + sys.argv[1:]), "commit": stamp,
              "machine": machine_info("compare_head_only", 2, ("torch", "scikit-learn")), "sets": {}}
    for i, (name, splits) in enumerate(sets.items()):
        row = {"probe": probe(splits),
               "solver": weitiao_side(splits, work, f"s{i}-solver", "solver"),
               "gradient": weitiao_side(splits, work, f"s{i}-gradient", "gradient")}
        report["sets"][name] = row
        print(name, row, flush=True)
    cell = lambda r, k: f"{r[k]:.4f}" if k in r else "—"  # noqa: E731
    lines = ["# head_only against a logistic-regression probe on the same features (EfficientNet-Lite0)", "",
             f"`.venv/bin/python {report['command']}` (2-core CPU; weitiao {stamp}). Accuracy; hymenoptera has no test split.", "",
             "| data | side | validation | test | C | note |", "|---|---|---|---|---|---|"]
    for name, row in report["sets"].items():
        p, s, g = row["probe"], row["solver"], row["gradient"]
        lines += [f"| {name} | scikit-learn logistic regression, C tuned on validation | {cell(p, 'validation')} | {cell(p, 'test')} | {p['C']} | |",
                  f"| {name} | weitiao head_only (default: solver, then gradient; the better kept) | {cell(s, 'validation')} | {cell(s, 'test')} | {s.get('C', '—')} | kept: {s.get('kept', '—')}; {s['seconds']} s |",
                  f"| {name} | weitiao head_only, gradient alone (before) | {cell(g, 'validation')} | {cell(g, 'test')} | | {g['seconds']} s |"]
    write_result("compare_head_only", report, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
