"""A folder someone hands you runs none of their code: a crafted torch.export (.pt2) export and a
TorchScript one are refused on every path that opens a folder, before their model file is read.

The crafted .pt2 is live: its weights are a pickle that creates a file when unpickled, and
`torch.export.load` falls back to a full unpickle for weights its config marks as pickled. The
test first shows that `--trust-format pt2` (the user naming the format) does run it; every other
path must leave the file uncreated, exit 2 with the one line naming --trust-format, and write nothing.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, write_config


class _Creates:
    """Unpickled, it opens (creates) `path`: a stand-in for any code a pickle can run."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _poison_pt2(path: Path, sentinel: Path) -> None:
    """Every weight of the .pt2 at `path` replaced by a pickle that creates `sentinel` when loaded."""
    import torch

    payload = io.BytesIO()
    torch.save(_Creates(sentinel), payload)
    with zipfile.ZipFile(path) as z:
        members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    configs, weights = {}, set()
    for name, data in members:
        if name.endswith("model_weights_config.json"):
            cfg = json.loads(data)
            for entry in cfg["config"].values():
                entry["use_pickle"] = True
                weights.add(f"{name.rsplit('/', 1)[0]}/{entry['path_name']}")
            configs[name] = json.dumps(cfg).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for name, data in members:
            out.writestr(name, payload.getvalue() if name in weights else configs.get(name, data))
    assert weights, "no weights found in the .pt2 archive"


@pytest.fixture(scope="module")
def handed(tiny_runs, tmp_path_factory):
    """{'pt2': a crafted pt2 export folder, 'torchscript': one whose manifest says torchscript}, and the sentinel path."""
    from weitiao.export import export

    tmp = tmp_path_factory.mktemp("handed")
    real = Path(export(str(tiny_runs["classification"]), "pt2", str(tmp / "real-pt2")))
    sentinel = tmp / "code-ran"
    pt2 = tmp / "runs" / "pt2"
    shutil.copytree(real, pt2)
    _poison_pt2(pt2 / "model.pt2", sentinel)
    ts = tmp / "runs" / "torchscript"
    shutil.copytree(real, ts)
    (ts / "model.pt2").unlink()
    (ts / "model.pt").write_bytes((pt2 / "model.pt2").read_bytes())
    manifest = json.loads((ts / "weitiao_export.json").read_text())
    (ts / "weitiao_export.json").write_text(json.dumps(manifest | {"format": "torchscript"}))
    return {"pt2": pt2, "torchscript": ts}, sentinel


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "weitiao", *args], cwd=ROOT, capture_output=True, text=True, input=stdin, timeout=300)


def test_the_crafted_pt2_runs_code_when_the_user_trusts_it_by_name(handed):
    folders, sentinel = handed
    _cli("predict", str(folders["pt2"]), "--text", "a fine film", "--trust-format", "pt2")
    assert sentinel.exists(), "the crafted .pt2 did not run its code: this test would prove nothing"
    sentinel.unlink()


@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])
def test_every_command_that_opens_a_folder_refuses_a_code_carrying_export(handed, fmt, tmp_path):
    from test_serve import free_port

    folders, sentinel = handed
    folder = str(folders[fmt])
    commands = {
        "predict": ["predict", folder, "--text", "a fine film"],
        "predict --trust-format another": ["predict", folder, "--text", "a fine film", "--trust-format", "onnx"],
        "eval": ["eval", folder],
        "chat": ["chat", folder],
        "serve": ["serve", folder, "--port", str(free_port())],
        "export": ["export", folder, "--format", "onnx", "--out", str(tmp_path / "again")],
    }
    for name, args in commands.items():
        proc = _cli(*args, stdin="hello\n")
        assert not sentinel.exists(), f"{name}: the folder's code ran"
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (name, proc.returncode, proc.stderr[-800:])
        expected = "is an export, not a run folder" if name == "export" else f"--trust-format {fmt}"  # an export is never exported again
        assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (name, proc.stderr)
    assert not (tmp_path / "again").exists()
    _cli("report", folder)  # a report reads the run's logs and metrics, never its model: it may be written
    assert not sentinel.exists(), "report: the folder's code ran"


def test_a_probe_a_teacher_the_api_and_the_dashboard_refuse_it_too(handed, tiny_runs, tmp_path):
    from fastapi.testclient import TestClient

    import weitiao
    from weitiao.ui.app import create_app

    folders, sentinel = handed
    disguised = tmp_path / "disguised"  # the crafted export dressed as a finished run (model/, metrics.json), as a probe or teacher must be
    shutil.copytree(folders["pt2"], disguised)
    shutil.copytree(tiny_runs["classification"] / "model", disguised / "model")
    cfg = yaml.safe_load((tiny_runs["classification"] / "config.yaml").read_text())
    cfg["output"] = {"dir": str(tmp_path / "runs")}
    cfg["strategy"] = {"method": "full", "probe": str(disguised)}
    config = write_config(tmp_path / "probe.yaml", cfg)
    proc = _cli("train", str(config), "--name", "probed")
    assert proc.returncode == 2 and "--trust-format pt2" in proc.stderr, proc.stderr[-800:]
    student = write_config(tmp_path / "student.yaml", {**{k: v for k, v in cfg.items() if k != "model"}, "strategy": "full", "student": {"layers": 1}})
    proc = _cli("distill", str(disguised), str(student), "--name", "student")
    assert proc.returncode == 2 and "--trust-format pt2" in proc.stderr, proc.stderr[-800:]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

    with pytest.raises(weitiao.WeitiaoError, match="--trust-format pt2"):
        weitiao.load(folders["pt2"]).predict(["a fine film"])
    app = create_app(folders["pt2"].parent)
    client = TestClient(app, base_url="http://127.0.0.1")
    token = app.state.token
    answer = client.post(f"/api/runs/pt2/predict?token={token}", json={"inputs": ["a fine film"]})
    assert answer.status_code == 409 and "--trust-format pt2" in answer.json()["detail"]
    assert not sentinel.exists()


def _corrupt(name: str, run: Path, export: Path, tmp: Path) -> Path:
    """A copy of the run (or the export) with one file broken the way `name` says."""
    folder = tmp / name
    shutil.copytree(export if name.startswith("export") else run, folder)
    weights = next((folder / "model").glob("*.safetensors"), None) if (folder / "model").is_dir() else None
    if name == "config.json not JSON":
        (folder / "model" / "config.json").write_text("{not json")
    elif name == "weights truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif name == "no weights":
        for f in (folder / "model").glob("*.safetensors"):
            f.unlink()
    elif name == "export manifest not JSON":
        (folder / "weitiao_export.json").write_text("nope")
    elif name == "export manifest without a format":
        (folder / "weitiao_export.json").write_text('{"inputs": 3}')
    elif name == "export format unknown":
        (folder / "weitiao_export.json").write_text('{"format": "pickle", "inputs": ["input_ids"]}')
    return folder


@pytest.mark.parametrize("name", ["config.json not JSON", "weights truncated", "no weights", "export manifest not JSON",
                                  "export manifest without a format", "export format unknown"])
def test_a_broken_folder_is_one_line_and_exit_2(handed, tiny_runs, tmp_path, capsys, name):
    from weitiao.cli import main

    real = handed[0]["pt2"].parent.parent / "real-pt2"
    folder = _corrupt(name, tiny_runs["classification"], real, tmp_path)
    capsys.readouterr()
    assert main(["predict", str(folder), "--text", "a fine film"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "; fix: " in err and len(err.splitlines()) == 1, err


def test_inputs_of_the_wrong_kind_are_refused(tiny_runs, capsys):
    """`predict --image` on a text run used to classify the path string; `--text` on an image run read a path."""
    from weitiao.cli import main

    assert main(["predict", str(tiny_runs["classification"]), "--image", "/etc/hostname"]) == 2
    assert "does not take --image" in capsys.readouterr().err
    assert main(["predict", str(tiny_runs["image_classification"]), "--text", "/etc/hostname"]) == 2
    assert "give --image" in capsys.readouterr().err


def test_a_run_folder_with_its_own_model_code_runs_none_of_it(tiny_runs, tmp_path, capsys):
    """model/config.json's auto_map points at a module in the folder that creates a file when imported:
    weitiao never passes trust_remote_code, so it is never imported, whatever the result of the load."""
    from weitiao.cli import main

    sentinel = tmp_path / "code-ran"
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["classification"], run)
    (run / "model" / "evil.py").write_text(f"open({str(sentinel)!r}, 'w').close()\nfrom transformers import BertConfig as Config, "
                                           "BertForSequenceClassification as Model\n")
    config = json.loads((run / "model" / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.Config", "AutoModelForSequenceClassification": "evil.Model", "AutoTokenizer": ["evil.Config", None]}
    (run / "model" / "config.json").write_text(json.dumps(config))
    code = main(["predict", str(run), "--text", "a fine film"])
    err = capsys.readouterr().err
    assert not sentinel.exists() and "Traceback" not in err and code in (0, 2), (code, err)


def test_a_chat_template_that_reaches_for_python_runs_nothing(tiny_runs, tmp_path, capsys):
    """The classic template injection (cycler.__init__.__globals__.os.popen) in a handed run's chat template:
    Jinja's sandbox stops it, on predict and on chat, and the user gets one line."""
    from weitiao.cli import main

    sentinel = tmp_path / "code-ran"
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["causal_lm"], run)
    evil = ("{{ cycler.__init__.__globals__.os.popen('touch " + str(sentinel) + "').read() }}"
            "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    (run / "model" / "chat_template.jinja").write_text(evil)
    config = json.loads((run / "model" / "tokenizer_config.json").read_text())
    if "chat_template" in config:
        (run / "model" / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": evil}))
    capsys.readouterr()
    assert main(["predict", str(run), "--prompt", "hello"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: chat template:") and "stopped by the sandbox" in err and len(err.splitlines()) == 1, err
    chat = _cli("chat", str(run), stdin="hello\n/exit\n")
    assert "Traceback" not in chat.stderr and "stopped by the sandbox" in chat.stderr, chat.stderr
    assert not sentinel.exists()


@pytest.mark.parametrize("how", ["a relative path", "a symlink"])
def test_an_onnx_graph_whose_weights_point_outside_its_folder_is_refused(tiny_runs, tmp_path, capsys, how):
    """An ONNX export's external data (model.onnx.data) named by a path that leaves the folder, or a symlink
    out of it, would make the loader read any file as weights: onnxruntime refuses both, in one line here."""
    import onnx

    from weitiao.cli import main
    from weitiao.export import export

    folder = Path(export(str(tiny_runs["classification"]), "onnx", str(tmp_path / "onnx")))
    outside = tmp_path / "secret.bin"
    outside.write_bytes((folder / "model.onnx.data").read_bytes())
    if how == "a symlink":
        (folder / "model.onnx.data").unlink()
        (folder / "model.onnx.data").symlink_to(outside)
    else:
        graph = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        for tensor in graph.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = "../secret.bin"
        onnx.save(graph, str(folder / "model.onnx"))
    capsys.readouterr()
    assert main(["predict", str(folder), "--text", "a fine film"]) == 2
    err = capsys.readouterr().err.strip()
    assert "escapes model directory" in err and "inside the export's own folder" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("name", ["pipeline", "AutoModel", "os.system"])
def test_a_multitask_folder_naming_another_class_is_refused(tiny_runs, tmp_path, capsys, name):
    """A multi-task model/config.json names each head's transformers class; any other callable of transformers
    (pipeline, which loads whatever it is told) used to be called with the head's config."""
    from weitiao.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_runs["multitask"], run)
    config = json.loads((run / "model" / "config.json").read_text())
    head = next(iter(config["weitiao_multitask"]))
    config["weitiao_multitask"][head]["class"] = name
    (run / "model" / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["predict", str(run), "--text", "a fine film"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a transformers sequence or token classifier" in err and len(err.splitlines()) == 1, err
