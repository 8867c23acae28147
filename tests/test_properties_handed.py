"""Property tests over what someone else made: each task's data files, run and export folders, HTTP bodies.

The rule, whatever the bytes: one `error:` line naming the field and a fix (exit 2), or a result;
never a traceback, never a server error. Hypothesis changes real files: a file of every task's own
format (tests/test_tasks.py writes them), a finished run and an ONNX export of a tiny model (every
file truncated, replaced by noise, swapped with another, emptied or deleted), and the bodies a
client may send to `weitiao serve` (any bytes, any JSON, inputs of every type).
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weitiao.errors import UserError

FEW = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "; fix: " in lines[0], err
    return lines[0]


# ---------------------------------------------------------------------------------------
# 1. Every task's own data format, changed


@pytest.fixture(scope="module")
def task_files(tmp_path_factory) -> dict:
    """{task: (config path, [the text files its data names])}, valid as written."""
    from test_tasks import TASK_DATA

    out = {}
    for task in ("classification", "token_classification", "multitask", "causal_lm", "seq2seq"):
        folder = tmp_path_factory.mktemp(task)
        cfg = TASK_DATA[task](folder, random.Random(0))
        cfg.pop("lr_scale", None)
        cfg.setdefault("model", "unused")
        path = folder / "run.yaml"
        path.write_text(yaml.safe_dump({"version": 1, **cfg}))
        out[task] = (path, sorted(p for p in folder.rglob("*") if p.suffix in (".jsonl", ".json", ".conll")))
    return out


def _change_rows(text: str, data) -> str:
    """One line (or one JSON record) changed: a value replaced by any JSON value, or text inserted."""
    lines = text.split("\n")
    i = data.draw(st.integers(0, max(len(lines) - 1, 0)))
    line = lines[i]
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if isinstance(record, dict) and record and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(record)))
        record[key] = data.draw(json_values)
        lines[i] = json.dumps(record)
    else:
        at = data.draw(st.integers(0, len(line)))
        lines[i] = line[:at] + data.draw(st.text(max_size=12)) + line[at:]
    return "\n".join(lines)


@FEW
@given(task=st.sampled_from(["classification", "token_classification", "multitask", "causal_lm", "seq2seq"]), data=st.data())
def test_every_task_reads_its_changed_data_or_refuses_it_in_one_line(task_files, task, data):
    from weitiao.config import load_config
    from weitiao.data import load_task_data
    from weitiao.tasks import get_task

    config, files = task_files[task]
    path = data.draw(st.sampled_from(files))
    original = path.read_bytes()
    how = data.draw(st.sampled_from(["row", "truncate", "json array"]))
    try:
        if how == "row":
            path.write_text(_change_rows(original.decode(), data), encoding="utf-8")
        elif how == "truncate":
            path.write_bytes(original[:data.draw(st.integers(0, len(original)))])
        else:
            path.write_text(json.dumps(data.draw(st.lists(json_values, max_size=4))), encoding="utf-8")
        try:
            cfg = load_config(str(config), [])
            load_task_data(get_task(cfg.task.type), cfg.data, cfg.task, 0)
        except UserError as e:
            one_line(f"error: {e.line()}")
    finally:
        path.write_bytes(original)


# ---------------------------------------------------------------------------------------
# 2. A run folder and an export folder, every file changed


@pytest.fixture(scope="module")
def folders(tiny_runs, tmp_path_factory) -> dict:
    from weitiao.export import export

    tmp = tmp_path_factory.mktemp("folders")
    onnx = Path(export(str(tiny_runs["classification"]), "onnx", str(tmp / "onnx")))
    return {"run": tiny_runs["classification"], "onnx export": onnx}


def _damage(folder: Path, data) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".lock")
    target = data.draw(st.sampled_from(files))
    how = data.draw(st.sampled_from(["truncate", "noise", "swap", "empty", "delete"]))
    if how == "truncate":
        size = target.stat().st_size
        with open(target, "r+b") as f:
            f.truncate(data.draw(st.integers(0, max(size - 1, 0))))
    elif how == "noise":
        target.write_bytes(data.draw(st.binary(min_size=1, max_size=256)))
    elif how == "swap":
        other = data.draw(st.sampled_from(files))
        a, b = target.read_bytes(), other.read_bytes()
        target.write_bytes(b)
        other.write_bytes(a)
    elif how == "empty":
        target.write_bytes(b"")
    else:
        target.unlink()


@FEW
@given(which=st.sampled_from(["run", "onnx export"]), data=st.data())
def test_a_damaged_folder_predicts_or_refuses_in_one_line(folders, which, data):
    from weitiao.cli import run

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "folder"
        shutil.copytree(folders[which], folder, ignore=shutil.ignore_patterns(".lock", "checkpoints"))
        _damage(folder, data)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = run(["predict", str(folder), "--text", "a fine film"])
    assert code in (0, 2), err.getvalue()
    if code == 2:
        one_line(err.getvalue())


# ---------------------------------------------------------------------------------------
# 3. HTTP bodies sent to `weitiao serve`


@pytest.fixture(scope="module")
def clients(tiny_runs):
    """TestClient raises whatever the app raises: a server error fails the test with its traceback."""
    from fastapi.testclient import TestClient

    from weitiao.rundir.opening import open_run
    from weitiao.serve.app import create_app

    out = {task: TestClient(create_app(open_run(str(tiny_runs[task])))) for task in ("classification", "causal_lm")}
    yield out
    for client in out.values():
        client.app.state.batcher.close()


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["inputs", "messages", "model", "max_tokens", "temperature", "stream", "top_p"]), json_values,
                    max_size=4).map(lambda v: json.dumps(v).encode()),
    st.lists(st.one_of(st.text(max_size=30), json_values), min_size=0, max_size=5).map(lambda v: json.dumps({"inputs": v}).encode()),
)


@FEW
@given(task=st.sampled_from(["classification", "causal_lm"]), route=st.sampled_from(["/v1/predict", "/v1/chat/completions"]),
       body=bodies, content_type=st.sampled_from(["application/json", "text/plain", "multipart/form-data", ""]))
def test_any_body_is_answered_or_refused_never_a_server_error(clients, task, route, body, content_type):
    client = clients[task]
    if route.endswith("completions") and task != "causal_lm":
        route = "/v1/predict"
    answer = client.post(route, content=body, headers={"content-type": content_type} if content_type else {})
    assert answer.status_code in (200, 400, 413, 415, 422), (answer.status_code, answer.text)
    detail = answer.json().get("detail") if answer.status_code != 200 else None
    if detail is not None:
        text = detail if isinstance(detail, str) else json.dumps(detail)
        assert "Traceback" not in text and "\n" not in text, text
    assert client.get("/health").status_code == 200
