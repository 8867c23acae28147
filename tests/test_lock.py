"""requirements.lock (what `make install` installs) against pyproject.toml (what users are promised)."""

from __future__ import annotations

import re
from importlib import metadata

import tomllib
from helpers import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

LINE = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+) \\\n\s+--hash=sha256:([0-9a-f]{64})$", re.M)


def read_lock(text: str) -> dict[str, Version]:
    entries = LINE.findall(text)
    pinned = [line for line in text.splitlines() if "==" in line]
    assert len(entries) == len(pinned), "every pin in requirements.lock has one sha256 hash on the next line"
    return {canonicalize_name(name): Version(version) for name, version, _ in entries}


def promised(pyproject: dict) -> list[Requirement]:
    project = pyproject["project"]
    return [Requirement(r) for r in project["dependencies"] + sum(project.get("optional-dependencies", {}).values(), [])]


def unadmitted(requirements: list[Requirement], lock: dict[str, Version]) -> list[str]:
    """Each requirement whose locked version its range does not admit, or that the lock lacks."""
    problems = []
    for req in requirements:
        version = lock.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req.name}: not in requirements.lock")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}: locked {version} is outside pyproject's '{req.specifier}'")
    return problems


def test_pyproject_ranges_admit_the_locked_versions():
    lock = read_lock((ROOT / "requirements.lock").read_text())
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert unadmitted(promised(pyproject), lock) == []


def test_the_check_catches_a_range_that_excludes_the_lock():
    lock = {"transformers": Version("5.23.0"), "torch": Version("2.13.0+cpu")}
    assert unadmitted([Requirement("transformers>=4.50,<5.23"), Requirement("torch>=2.4")], lock) == [
        "transformers: locked 5.23.0 is outside pyproject's '<5.23,>=4.50'"]
    assert unadmitted([Requirement("peft>=0.13")], lock) == ["peft: not in requirements.lock"]


def test_the_environment_is_the_lock():
    """`make install` put exactly the locked versions into this environment."""
    lock = read_lock((ROOT / "requirements.lock").read_text())
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version) for d in metadata.distributions()}
    wrong = {name: (str(v), str(installed.get(name))) for name, v in lock.items() if installed.get(name) != v}
    assert wrong == {}, f"installed versions differ from requirements.lock (locked, installed): {wrong}"
    extra = sorted(set(installed) - set(lock) - {"weitiao"})
    assert extra == [], f"installed but not in requirements.lock: {extra}"


def test_the_readme_names_the_locked_versions():
    lock = read_lock((ROOT / "requirements.lock").read_text())
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| (torch|transformers|peft|accelerate|datasets) \| ([0-9.]+)", readme, re.M)
    assert len(rows) == 5, "README's table of tested versions"
    for name, version in rows:
        assert Version(version) == Version(lock[name].base_version), f"README says {name} {version}, the lock {lock[name]}"
