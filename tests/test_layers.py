"""The layers are a checked contract: `lint-imports` (import-linter, which reads imports inside
functions too) keeps pyproject.toml's layers and finds no import cycle; `make test` runs it first.

These tests plant a violation in a copy of the package and check that the same contract refuses it.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}  # the copy, found before the editable install
    return subprocess.run([str(LINT), "--no-cache", "--no-logo", "--config", str(tree / "pyproject.toml")], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path) -> Path:
    shutil.copytree(ROOT / "weitiao", tmp_path / "weitiao", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def plant(tree: Path, module: str, line: str) -> None:
    path = tree / "weitiao" / module
    path.write_text(path.read_text() + f"\n\ndef _planted():\n    {line}\n")


def test_the_package_keeps_its_contracts(tree):
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("tasks/classification.py", "from weitiao.predict import predict", "weitiao.tasks is not allowed to import weitiao.predict"),
    ("data/sources.py", "import weitiao.train.recipe", "weitiao.data is not allowed to import weitiao.train"),
    ("errors.py", "from weitiao.config import load_config", "weitiao.errors is not allowed to import weitiao.config"),
    ("serve/app.py", "from weitiao.api import load", "weitiao.serve is not allowed to import weitiao.api"),
    # a plug-in reaching into another plug-in (what seq2seq once did with causal_lm's options)
    ("tasks/seq2seq.py", "from weitiao.tasks.causal_lm import TASK", "weitiao.tasks.seq2seq is not allowed to import weitiao.tasks.causal_lm"),
    ("tasks/common/labels.py", "from weitiao.tasks.classification import TASK", "weitiao.tasks.common is not allowed to import weitiao.tasks.classification"),
])
def test_an_import_upward_inside_a_function_breaks_the_layers(tree, module, line, broken):
    plant(tree, module, line)
    result = lint(tree)
    assert result.returncode == 1 and broken in result.stdout, result.stdout + result.stderr


def test_a_cycle_inside_a_package_breaks_the_contract(tree):
    plant(tree, "data/sources.py", "from weitiao.data.clean import clean_split")  # clean imports examples, which imports sources: a cycle
    result = lint(tree)
    assert result.returncode == 1 and "no import cycle" in result.stdout and "BROKEN" in result.stdout, result.stdout


def test_a_new_module_without_a_layer_is_refused(tree):
    (tree / "weitiao" / "newthing.py").write_text("X = 1\n")
    result = lint(tree)
    assert result.returncode != 0 and "newthing" in result.stdout + result.stderr, result.stdout + result.stderr


def test_nothing_outside_tasks_names_a_task_or_probes_one():
    """Code outside weitiao/tasks/ asks a task's declared attributes (tasks.TaskDefaults): a string that
    is a task's name, or hasattr on a task, means a new task would need edits outside its own module."""
    import re

    from weitiao.tasks import ALIASES, load_all

    names = sorted(set(load_all()) | set(ALIASES))
    named = re.compile(r"""["'](%s)["']""" % "|".join(map(re.escape, names)))
    probed = re.compile(r"hasattr\((run\.|self\.)?task\b")
    found = []
    for path in sorted((ROOT / "weitiao").rglob("*.py")):
        if path.relative_to(ROOT / "weitiao").parts[0] == "tasks":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.split("  #")[0]
            if named.search(code) or probed.search(code):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
