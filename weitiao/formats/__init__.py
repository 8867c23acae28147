"""Export formats: how each writes a run's model and reads it back (hf, adapter, onnx and
onnx-int8, pt2; torchscript read only), registered by name in `FORMATS` (duplicates refused),
and the manifest (weitiao_export.json) that marks an export folder.

Below the run folder (weitiao/rundir), which opens an export with these loaders; the command
that writes one from a run and checks parity is weitiao/export.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from weitiao.errors import UserError, add_to, load_plugins, unknown

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


# The formats' modules: importing one registers it. Loaded by name, so that they import this
# registry and never the reverse (no import cycle).
PLUGINS = ("adapter", "hf", "onnx", "pt2")


def load_formats() -> dict[str, Format]:
    load_plugins(__name__, PLUGINS)
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


def check_trusted(names) -> None:
    """Refuse a --trust-format name that is no export format (a typo would trust nothing, silently)."""
    load_formats()
    wrong = [n for n in names if n not in FORMATS]
    if wrong:
        raise UserError("--trust-format", f"{wrong[0]!r} is not an export format",
                        f"name the format of the export to open: {', '.join(sorted(n for n, f in FORMATS.items() if f.runs_code))} carry code")
