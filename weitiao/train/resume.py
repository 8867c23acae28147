"""What `--resume` needs: which checkpoint, and whether the run it belongs to is the same run.

A checkpoint stores a hash of the resolved config and a fingerprint of the data files; a
resume with a different config or different data is refused, naming what changed, unless
`--force`: continuing someone else's optimizer state on other data is rarely what was meant.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from weitiao.errors import UserError
from weitiao.rundir import CONFIG

# Keys that change how a run is shown, not what it computes.
COSMETIC = {("training", "progress"), ("training", "log_every"), ("output", "dir"), ("output", "report"), ("output", "tracking")}
# Keys added after checkpoints were written, with their defaults: left out of the hash while at
# the default, so that a checkpoint from before they existed still resumes.
ADDED = {("data", "tokens_column"): "tokens", ("data", "tags_column"): "tags", ("data", "image_column"): "image",
         ("task", "augment"): None, ("task", "image_size"): None, ("task", "pixels"): None,
         ("data", "source_column"): "source", ("data", "target_column"): "target",
         ("task", "bias_init"): "prior", ("strategy", "head_fit"): "solver"}
# Defaults that changed: the new default hashes as the old one did, so a checkpoint of a config that
# left the key out still resumes (multi-label threshold: 0.5, tuned on validation since).
CHANGED = {("task", "threshold"): ("auto", 0.5)}


def _comparable(cfg_dict: dict) -> dict:
    out = json.loads(json.dumps(cfg_dict))
    for section, key in COSMETIC:
        out.get(section, {}).pop(key, None)
    for (section, key), default in ADDED.items():
        if key in out.get(section, {}) and out[section][key] == default:
            out[section].pop(key)
    for (section, key), (new, old) in CHANGED.items():
        if out.get(section, {}).get(key) == new:
            out[section][key] = old
    for section in ("student", "distill"):  # sections added later: a run without them hashes as before they existed
        if out.get(section) is None:
            out.pop(section, None)
    return out


def config_hash(resolved: dict) -> str:
    """The hash a checkpoint stores of the resolved config (`RunConfig.model_dump(mode="json")`)."""
    data = json.dumps(_comparable(resolved), sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def data_fingerprint(data, opts=None) -> dict[str, str]:
    """sha256 (first 16 hex digits) of every data file the config names; folders: of all their files.
    `opts`: the task section, whose tasks may name their own data (multi-task: `NAME.train`)."""
    out = {}
    for key in ("train", "validation", "test", "labels_file"):
        path = getattr(data, key)
        if path:
            out[key] = _hash_path(Path(path))
    for name, member in (getattr(opts, "tasks", None) or {}).items():
        out |= {f"{name}.{k}": v for k, v in data_fingerprint(member.data).items()}
    return out


def _hash_path(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def resolve_resume(arg: str, parent: str, name: str | None) -> Path:
    """`--resume RUN_DIR`, or `--resume auto`: the run named by --name, else the newest run
    folder under output.dir that has a checkpoint."""
    if arg != "auto":
        path = Path(arg)
        if not (path / CONFIG).is_file():
            raise UserError("--resume", f"'{arg}' is not a run folder (no config.yaml)", "give a folder written by `weitiao train`, or --resume auto")
        return path
    if name:
        path = Path(parent) / name
        if not path.is_dir():
            raise UserError("--resume", f"auto: there is no run folder '{path}' to resume", "start it without --resume first")
        return path
    candidates = [p for p in Path(parent).glob("*/checkpoints/step-*")] if Path(parent).is_dir() else []
    if not candidates:
        raise UserError("--resume", f"auto: no run under '{parent}' has a checkpoint", "give the run folder: --resume runs/NAME")
    return max(candidates, key=lambda p: p.stat().st_mtime).parent.parent


def check_same_run(run_dir: Path, resolved: dict, data_now: dict, meta: dict, force: bool) -> None:
    """Refuse to resume when the config (`resolved`, as `config_hash` takes it) or the data (`data_now`,
    a `data_fingerprint`) changed since the checkpoint, unless force."""
    if force:
        return
    if meta.get("config_hash") != config_hash(resolved):
        saved = yaml.safe_load((run_dir / CONFIG).read_text(encoding="utf-8"))
        changed = _diff(_comparable(saved), _comparable(resolved))
        what = ", ".join(changed[:5]) or "the config"
        raise UserError("--resume", f"the config differs from the one '{run_dir}' was trained with ({what})",
                        "resume with the run's own config.yaml, or pass --force to continue anyway")
    changed = [k for k in set(data_now) | set(meta.get("data", {})) if data_now.get(k) != meta.get("data", {}).get(k)]
    if changed:
        raise UserError("--resume", f"the data changed since the checkpoint (data.{', data.'.join(sorted(changed))})",
                        "resume with the same files, or pass --force to continue anyway")


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} -> {b!r}"]


def truncate_metrics(path: Path, lines: int) -> None:
    """Keep the first `lines` records (those written before the checkpoint): the resumed run
    writes the rest again."""
    if path.is_file():
        kept = path.read_text(encoding="utf-8").splitlines()[:lines]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
