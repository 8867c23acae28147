"""`weitiao export RUN --format FORMAT`: a run's model in a portable format, checked against the run.

The formats themselves (one module each, registered by name) are in weitiao/formats. Every export folder holds the same things beside the model:

    config.yaml           the run's resolved config (task, columns): `weitiao predict/eval/serve` read it
    config.json, tokenizer / preprocessor files
    README.md             a model card: base model, data, strategy, metrics, weitiao's version
    parity.json           the exported model against the run's own on its evaluation data
    weitiao_export.json   the format and the model's input names (the manifest)

The parity check runs before the folder appears: an fp32 export that does not reproduce the
run's logits (max |delta| over the tolerance, or any prediction that changes) is not written.
"""

from __future__ import annotations

from pathlib import Path

from weitiao.errors import UserError
from weitiao.formats import MANIFEST, is_export, writable_format  # noqa: F401 (the export folder's marks, also named here)
from weitiao.rundir import is_run


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
    if is_run(target) and not is_export(target):
        raise UserError("--out", f"'{target}' is a run folder; --overwrite replaces exports, never a run", "give a new folder for the export")
    if is_export(run_dir):
        raise UserError("run_dir", f"'{run_dir}' is an export, not a run folder", "export from the run folder it was written from")
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
