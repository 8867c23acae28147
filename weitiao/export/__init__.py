"""`weitiao export RUN --format FORMAT`: a run's model in a portable format, checked against the run.

One module a format (hf, adapter, onnx and onnx-int8, pt2), registered by name in `FORMATS`
(duplicates refused). Every export folder holds the same things beside the model:

    config.yaml           the run's resolved config (task, columns): `weitiao predict/eval/serve` read it
    config.json, tokenizer / preprocessor files
    README.md             a model card: base model, data, strategy, metrics, weitiao's version
    parity.json           the exported model against the run's own on its evaluation data
    weitiao_export.json   the format and the model's input names (the manifest)

The parity check runs before the folder appears: an fp32 export that does not reproduce the
run's logits (max |delta| over the tolerance, or any prediction that changes) is not written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from weitiao.errors import UserError, add_to, unknown

MANIFEST = "weitiao_export.json"


@dataclass(frozen=True)
class Format:
    name: str
    help: str
    write: Callable | None  # (source: Source, folder: Path) -> None: the model file(s); None: read only (a retired format)
    load: Callable  # (folder: Path, task, manifest: dict) -> a model that `scoring.score` can run
    tolerance: float | None  # the largest max |delta logit| that passes; None: measured and reported only
    graph: bool  # a traced graph of the forward pass (no generation loop): refused for generative tasks
    runs_code: str | None = None  # why loading this format can run code the file carries; such folders open only when trusted by name


FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    return add_to(FORMATS, fmt.name, fmt, "export format")


def load_formats() -> dict[str, Format]:
    from weitiao.export import adapter, hf, onnx, pt2  # noqa: F401  (importing registers them)

    return FORMATS


def get_format(name: str) -> Format:
    load_formats()
    if name not in FORMATS:
        raise unknown("--format", "format", name, {k for k, f in FORMATS.items() if f.write})
    return FORMATS[name]


def writable_format(name: str) -> Format:
    form = get_format(name)
    if form.write is None:
        raise UserError("--format", f"'{name}' is no longer written ({form.help})", "use --format pt2 (torch.export), or onnx")
    return form


def is_export(folder) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def export(run_dir: str, fmt: str = "hf", out: str | None = None, task: str | None = None, overwrite: bool = False,
           rows: int = 1000, batch_size: int | None = None) -> str:
    """Write `run_dir`'s model as `fmt` into `out` (default: RUN/export/FORMAT), with parity.json.

    Multi-task runs: `task` names the one to export (its encoder and head, as a single-task run).

    Returns:
        The folder written.

    Raises:
        UserError: a bad option, a format the run's task cannot take, or a failed parity check.
    """
    import os
    import shutil

    from weitiao.export.source import open_source
    from weitiao.files import atomic_folder, left_by_dead

    form = writable_format(fmt)
    target = Path(out) if out else Path(run_dir) / "export" / fmt
    if target.exists() and not overwrite:
        raise UserError("--out", f"'{target}' exists", "give a new folder, or pass --overwrite to replace it")
    if out and not target.parent.is_dir():
        raise UserError("--out", f"folder '{target.parent}' does not exist", f"create it first (mkdir -p {target.parent})")
    if rows < 1:
        raise UserError("--rows", f"{rows} is not a number of rows", "give a whole number of 1 or more")
    made_parent = not target.parent.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in left_by_dead(target, "scratch"):  # an export killed mid-way
        shutil.rmtree(stale, ignore_errors=True)
    scratch = target.with_name(f".{target.name}.scratch-{os.getpid()}")  # beside the target: found and removed if killed
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        source = open_source(run_dir, task, form, scratch, rows)

        def write(tmp: Path) -> None:
            from weitiao.export.parity import check
            from weitiao.export.source import write_common

            tmp.mkdir(parents=True)
            form.write(source, tmp)
            write_common(source, tmp, form)
            check(source, form, tmp, batch_size)

        atomic_folder(target, write)  # a failure anywhere (parity, a full disk) leaves no partial folder
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if made_parent and not any(target.parent.iterdir()):
            target.parent.rmdir()
    return str(target)
