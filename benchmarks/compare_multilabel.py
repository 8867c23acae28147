"""Multi-label text classification against the baseline users know: TF-IDF + one-vs-rest logistic
regression, on GoEmotions with all 28 emotions (train / dev / test as shipped).

The baseline gets its best settings on the dev split: word 1-2 grams, C from a grid, and the decision
threshold tuned on dev (one for all labels), as a careful user would. weitiao trains MiniLM with the
config a user would copy from examples/goemotions.yaml, once per --variants entry (the defaults, and
the settings the defaults replaced), and reports the test split. Sides run one after another on the
same machine; weitiao's in its own process.

    .venv/bin/python benchmarks/compare_multilabel.py                       # ~25 min on 2 cores
    .venv/bin/python benchmarks/compare_multilabel.py --rows 4000 --quick   # a look in ~6 min (-quick files)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness import DATA_DIR, WORK, commit, machine_info, train_run, write_result

GO = DATA_DIR / "goemotions"

# The variants: task options and training options over the copied example's config.
VARIANTS = {  # key: (what the table says, task options over the copied example)
    "defaults": ("the defaults (prior bias, head LR 10x, threshold tuned on dev)", {}),
    "zero-bias": ("the defaults but the head's bias starting at zero", {"bias_init": "zero"}),
    "head-lr-1x": ("the defaults but the head at the body's LR", {"_strategy": {"method": "full", "head_lr": 1e-4}}),
    "before": ("as before this change: zero bias, head at the body's LR, threshold 0.3",
               {"bias_init": "zero", "threshold": 0.3, "_strategy": {"method": "full", "head_lr": 1e-4}}),
}


def read(path: Path) -> tuple[list[str], list[list[int]]]:
    texts, labels = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        text, ids, _ = line.split("\t")
        texts.append(text)
        labels.append([int(i) for i in ids.split(",")])
    return texts, labels


def scores(probs, y, threshold: float) -> dict:
    import numpy as np
    from sklearn.metrics import f1_score, roc_auc_score

    pred = (probs >= threshold).astype(int)
    present = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return {"f1_micro": float(f1_score(y, pred, average="micro", zero_division=0)),
            "f1_macro": float(f1_score(y, pred, average="macro", zero_division=0)),
            "roc_auc": float(np.mean([roc_auc_score(y[:, j], probs[:, j]) for j in present]))}


def baseline(rows: int | None, seed: int) -> dict:
    """TF-IDF (1-2 grams) + one-vs-rest logistic regression; C and the threshold chosen on dev."""
    import random

    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    start = time.perf_counter()
    train, dev, test = (read(GO / f) for f in ("train.tsv", "dev.tsv", "test.tsv"))
    if rows and rows < len(train[0]):
        keep = sorted(random.Random(seed).sample(range(len(train[0])), rows))
        train = ([train[0][i] for i in keep], [train[1][i] for i in keep])
    binar = MultiLabelBinarizer(classes=list(range(28)))
    y_train, y_dev, y_test = (binar.fit_transform(s[1]) for s in (train, dev, test))
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x_train, x_dev, x_test = vec.fit_transform(train[0]), vec.transform(dev[0]), vec.transform(test[0])
    best = None
    for c in (1.0, 4.0, 16.0):
        clf = OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000), n_jobs=1).fit(x_train, y_train)
        p_dev = clf.predict_proba(x_dev)
        for t in np.arange(0.05, 0.96, 0.05):
            f = scores(p_dev, y_dev, t)["f1_micro"]
            if best is None or f > best[0]:
                best = (f, c, float(t), clf)
    _, c, t, clf = best
    return {"C": c, "threshold": round(t, 2), "dev": scores(clf.predict_proba(x_dev), y_dev, t),
            "test": scores(clf.predict_proba(x_test), y_test, t), "seconds": round(time.perf_counter() - start, 1)}


def config(rows: int | None, epochs: float, work: Path, variant: dict) -> dict:
    """examples/goemotions.yaml with the shared data's paths, `variant`'s task options over it."""
    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "goemotions.yaml").read_text())
    for split, name in (("train", "train.tsv"), ("validation", "dev.tsv"), ("test", "test.tsv")):
        cfg["data"][split] = str(GO / name)
    cfg["data"]["labels_file"] = str(GO / "emotions.txt")
    if rows:
        cfg["data"]["train_limit"] = rows
    cfg["training"] = {**cfg["training"], "epochs": epochs, "progress": False}
    variant = dict(variant)
    if "_strategy" in variant:
        cfg["strategy"] = variant.pop("_strategy")
    cfg["task"] = {**cfg["task"], **variant}
    if "threshold" not in variant:
        cfg["task"].pop("threshold", None)  # the defaults: what a config without the line gets
    cfg["output"] = {"dir": str(work / "runs"), "report": False, "tracking": "none"}
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=None, help="training rows (default: all 43,410)")
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--quick", action="store_true", help="write the result as compare_multilabel-quick")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    stamp = commit("compare_multilabel")
    stem = "compare_multilabel" + ("-quick" if args.quick else "")
    work = WORK / stem
    work.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(["benchmarks/compare_multilabel.py"] + sys.argv[1:]), "commit": stamp,
              "machine": machine_info("compare_multilabel", 2, ("torch", "transformers", "scikit-learn")),
              "rows": args.rows, "epochs": args.epochs, "baseline": baseline(args.rows, args.seed), "weitiao": {}}
    b = report["baseline"]
    print(f"TF-IDF + logistic regression (C={b['C']}, threshold {b['threshold']}): test {b['test']}", flush=True)
    for key in (k for k in args.variants.split(",") if k):
        name, variant = VARIANTS[key]
        metrics, timing = train_run(config(args.rows, args.epochs, work, variant), key, work, 2)
        report["weitiao"][name] = {"test": {k: metrics["test"].get(k) for k in ("f1_micro", "f1_macro", "roc_auc")},
                                   "threshold": metrics["test"].get("threshold"), "seconds": round(timing["wall_s"], 1)}
        print(f"weitiao {name}: {report['weitiao'][name]}", flush=True)
    lines = [f"# Multi-label: GoEmotions, 28 emotions ({args.rows or 'all 43,410'} training rows, {args.epochs:g} epoch(s))", "",
             f"`.venv/bin/python {report['command']}` (2-core CPU; weitiao {stamp}). Test split, 5,427 comments.", "",
             "| side | micro-F1 | macro-F1 | ROC-AUC (mean over labels) | threshold | seconds |", "|---|---|---|---|---|---|",
             f"| TF-IDF 1-2 grams + one-vs-rest logistic regression (C={b['C']}, both tuned on dev) | {b['test']['f1_micro']:.4f} | "
             f"{b['test']['f1_macro']:.4f} | {b['test']['roc_auc']:.4f} | {b['threshold']} | {b['seconds']} |"]
    for name, r in report["weitiao"].items():
        t = r["test"]
        lines.append(f"| weitiao, MiniLM full fine-tuning: {name} | {t['f1_micro']:.4f} | {t['f1_macro']:.4f} | {t['roc_auc']:.4f} | "
                     f"{r['threshold']} | {r['seconds']} |")
    write_result(stem, report, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
