"""The README's Python API example runs as written (its runs go to a temporary folder)."""

from __future__ import annotations

import os
import re

import pytest

from helpers import ROOT


@pytest.mark.slow  # 38 s: a MiniLM run again, as the README's Python example writes it (make test-all)
def test_the_readme_python_example_runs(tmp_path, capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert '"output.dir": "runs"' in code
    code = code.replace('"output.dir": "runs"', f'"output.dir": {str(tmp_path / "runs")!r}')
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert "data.train: file 'missing.csv' does not exist; fix:" in out
    accuracy = float(re.search(r"api-demo (0\.\d+)", out).group(1))
    assert accuracy > 0.7  # 2,000 sentences, one epoch: well above the 0.51 of always answering the majority class
    assert "'label': 'positive'" in out
