"""The run folder: the names of its files, whether a folder is one, and its status.

Every module that reads or writes a run folder names its files from here; opening one to use it
is weitiao/rundir/opening.py, creating and locking one weitiao/rundir/folder.py.

    config.yaml      the resolved config the run trained with
    env.json         versions, device, seed, command line
    metrics.jsonl    one JSON object per log or evaluation step (the source of truth)
    metrics.json     the final scores, written last (a finished run has it)
    model/           the best model (a Hugging Face folder; adapter/ for prompt-learning methods)
    checkpoints/     step-NNNNNNNN folders to resume from
    plots/, report.html, generations.jsonl, export/FORMAT/
"""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.yaml"
ENV = "env.json"
METRICS_LOG = "metrics.jsonl"
METRICS = "metrics.json"
MODEL = "model"
CHECKPOINTS = "checkpoints"
PLOTS = "plots"
REPORT = "report.html"
GENERATIONS = "generations.jsonl"
EXPORTS = "export"
LOCK = ".lock"


OWN_FILES = {CONFIG, ENV, METRICS_LOG, METRICS, REPORT, GENERATIONS, LOCK}
OWN_FOLDERS = {MODEL, CHECKPOINTS, PLOTS, EXPORTS, "adapter", "tensorboard"}


def is_run(folder) -> bool:
    """A folder `weitiao train` (or `weitiao export`) wrote: it has its config."""
    return (Path(folder) / CONFIG).is_file()


def has_model(folder) -> bool:
    """A run whose best model has been written."""
    return (Path(folder) / MODEL / "config.json").is_file()


def status(run_dir: Path) -> str:
    """finished (metrics.json written), training (its lock is held by a live process), or stopped."""
    import fcntl

    if (run_dir / METRICS).is_file():
        return "finished"
    if (run_dir / LOCK).is_file():
        with open(run_dir / LOCK, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)  # free: no process trains into the folder
            except BlockingIOError:
                return "training"
    return "stopped"


def owner(path) -> Path | None:
    """The run or export folder whose own files writing `path` would replace (its config.yaml,
    metrics, anything under model/ or checkpoints/, any file of an export), else None: an output
    file (predictions, a comparison) may sit beside a run's files, never over them."""
    from weitiao.formats import is_export

    p = Path(path).absolute()
    if is_run(p.parent) and (p.name in OWN_FILES or p.name in OWN_FOLDERS or is_export(p.parent)):
        return p.parent
    for folder in p.parents:
        if is_run(folder):
            return folder if p.relative_to(folder).parts[0] in OWN_FOLDERS else None
    return None
