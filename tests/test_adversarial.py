"""What an adversarial sweep of the CLI found (issue 23, beyond its list), each case its own test.

Every case used to end in a traceback, a silently wrong result, or a run folder lost; now each is
one `error:` line (exit 2) with nothing changed. Tiny runs from conftest's `tiny_runs`, in-process.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

from weitiao.cli import run as cli
from weitiao.errors import UserError


def refused(capsys, *args: str) -> str:
    capsys.readouterr()
    code = cli(list(args))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("error: ") and "; fix: " in err, (code, err)
    return err


@pytest.fixture
def run(tiny_runs, tmp_path) -> Path:
    folder = tmp_path / "runs" / "classification"
    shutil.copytree(tiny_runs["classification"], folder)
    return folder


def test_an_output_file_never_replaces_a_file_of_the_run(run, capsys):
    before = {name: (run / name).read_bytes() for name in ("config.yaml", "metrics.jsonl", "metrics.json")}
    assert "is one of the files of the run" in refused(capsys, "eval", str(run), "--output", str(run / "config.yaml"))
    assert "is one of the files of the run" in refused(capsys, "predict", str(run), "--text", "a film", "--output", str(run / "metrics.jsonl"))
    other = run.parent / "other"
    shutil.copytree(run, other)
    assert "is one of the files of the run" in refused(capsys, "compare", str(run), str(other), "--out", str(run / "metrics.json"))
    assert "is a folder" in refused(capsys, "compare", str(run), str(other), "--out", str(run.parent))
    assert {name: (run / name).read_bytes() for name in before} == before
    assert cli(["predict", str(run), "--text", "a film", "--output", str(run / "predictions.jsonl")]) == 0  # beside the run's files: fine


def test_an_export_never_replaces_a_run_and_an_export_is_not_exported_again(run, tmp_path, capsys):
    keep = tmp_path / "runs" / "keep"
    shutil.copytree(run, keep)
    assert "is a run folder" in refused(capsys, "export", str(run), "--out", str(keep), "--overwrite")
    assert (keep / "metrics.jsonl").is_file() and (keep / "model").is_dir()
    assert cli(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    assert "is an export, not a run folder" in refused(capsys, "export", str(tmp_path / "onnx"), "--out", str(tmp_path / "again"))
    manifest = json.loads((tmp_path / "onnx" / "weitiao_export.json").read_text())
    manifest["inputs"] = ["input_ids", "evil_input"]
    (tmp_path / "onnx" / "weitiao_export.json").write_text(json.dumps(manifest))
    assert "names the input 'evil_input'" in refused(capsys, "predict", str(tmp_path / "onnx"), "--text", "a film")
    manifest["format"] = "pickle"
    (tmp_path / "onnx" / "weitiao_export.json").write_text(json.dumps(manifest))
    assert refused(capsys, "predict", str(tmp_path / "onnx"), "--text", "a film").startswith("error: weitiao_export.json:")


def test_a_strategy_that_trains_nothing_is_refused_before_the_old_run_is_touched(run, capsys):
    before = sorted(p.name for p in run.iterdir())
    config = run.parent / "c.yaml"
    settings = yaml.safe_load((run / "config.yaml").read_text())
    config.write_text(yaml.safe_dump({**settings, "strategy": {"method": "full", "exclude": [".*"]}, "output": {"dir": str(run.parent)}}))
    line = refused(capsys, "train", str(config), "--name", run.name, "--overwrite")
    assert "leaves no parameter to train" in line
    assert sorted(p.name for p in run.iterdir()) == before and (run / "model" / "config.json").is_file()


def test_resuming_a_run_whose_best_model_is_gone_is_refused(run, capsys):
    assert list((run / "checkpoints").iterdir()), "the tiny run keeps a checkpoint"
    shutil.rmtree(run / "model")
    (run / "metrics.json").unlink()  # stopped before its end (a finished run is refused as such)
    config = run.parent / "c.yaml"
    config.write_text((run / "config.yaml").read_text())
    assert "(the best model so far" in refused(capsys, "train", str(config), "--resume", str(run))


@pytest.mark.parametrize("damage", ["pickled weights", "labels that do not fit the head", "metrics.json not JSON", "config.yaml not YAML"])
def test_a_damaged_run_is_one_line(run, capsys, damage):
    model = run / "model"
    if damage == "pickled weights":
        (model / "model.safetensors").unlink()
        (model / "pytorch_model.bin").write_bytes(b"\x80\x04cos\nsystem\n(S'true'\ntR.")
        assert "cannot be loaded" in refused(capsys, "predict", str(run), "--text", "a film")
    elif damage == "labels that do not fit the head":
        config = json.loads((model / "config.json").read_text())
        config["id2label"] = {"0": "a", "1": "b", "2": "c"}
        config["label2id"] = {"a": 0, "b": 1, "c": 2}
        (model / "config.json").write_text(json.dumps(config))
        assert "cannot be loaded" in refused(capsys, "predict", str(run), "--text", "a film")
    elif damage == "metrics.json not JSON":
        (run / "metrics.json").write_text("nope")
        assert "cannot be read (JSONDecodeError)" in refused(capsys, "report", str(run))
    else:
        (run / "config.yaml").write_text("{{{")
        assert "cannot be read" in refused(capsys, "report", str(run))


def test_config_values_that_are_no_task_or_no_folder(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("text,label\ngood,pos\nbad,neg\nfine,pos\nawful,neg\n")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"version": 1, "data": {"train": str(data)}, "task": {"type": ["classification"]}}))
    assert "task.type: ['classification'] is not a task name" in refused(capsys, "train", str(config), "--name", "x")
    config.write_text(yaml.safe_dump({"version": 1, "data": {"train": str(data)}, "output": {"dir": str(data / "sub")}}))
    assert "is a file" in refused(capsys, "train", str(config), "--name", "x")


def test_inputs_a_run_does_not_take_and_ports_that_are_no_ports(tiny_runs, capsys):
    from weitiao.serve.server import _check_port
    from weitiao.tasks import get_task

    assert "does not take --prompt" in refused(capsys, "predict", str(tiny_runs["classification"]), "--prompt", "hello")
    opts = get_task("image_classification").Options(pixels={"shape": [4, 4]})
    with pytest.raises(UserError, match="rows of pixel values"):
        get_task("image_classification").examples_from_texts(["a.png"], None, opts)
    for port in (-1, 99999):
        with pytest.raises(UserError, match="is not a port"):
            _check_port("127.0.0.1", port)
    with pytest.raises(UserError) as info:
        _check_port("no-such-host.invalid", 0)
    assert info.value.field == "--host"


def test_chat_skips_a_line_that_is_not_utf8(tiny_runs, capsys):
    from weitiao.predict import chat

    out = io.StringIO()
    chat(str(tiny_runs["causal_lm"]), stdin=io.StringIO("hi \udcff\udcfe\nhello\n"), stdout=out)
    assert "not UTF-8" in capsys.readouterr().err
    assert len(out.getvalue().splitlines()) == 1  # the second line was answered


def test_a_conversation_that_starts_with_the_assistant_is_refused(tmp_path):
    from weitiao.config import load_config
    from weitiao.data import load_task_data
    from weitiao.tasks import get_task

    rows = [{"messages": [{"role": "user", "content": f"say {i}"}, {"role": "assistant", "content": f"{i}"}]} for i in range(20)]
    rows.append({"messages": [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}]})
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"version": 1, "model": "x", "task": "causal_lm", "data": {"train": str(tmp_path / "chat.jsonl"), "format": "chat"}}))
    cfg = load_config(str(config))
    with pytest.raises(UserError, match="record 21: the conversation starts with the assistant"):
        load_task_data(get_task("causal_lm"), cfg.data, cfg.task, 0)


def test_the_python_api_refuses_arguments_of_the_wrong_type():
    import weitiao

    for call in (lambda: weitiao.load(None), lambda: weitiao.load(["runs/x"]), lambda: weitiao.train("c.yaml", overrides=["training.lr=1"]),
                 lambda: weitiao.train("c.yaml", name=5)):
        with pytest.raises(weitiao.WeitiaoError):
            call()


def test_an_encoder_decoder_classifier_has_its_parts_found():
    """BART's classifier has no output embeddings: the head's name was None, and every layer-aware
    strategy failed with a TypeError (an operator-precedence slip)."""
    from transformers import BartConfig, BartForSequenceClassification

    from weitiao.models.layers import find_parts

    model = BartForSequenceClassification(BartConfig(vocab_size=64, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                                                     decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_labels=2))
    parts = find_parts(model)
    assert None not in parts.head and parts.num_layers == 2


@pytest.mark.parametrize("override, field", [("training.batch_size=true", "training.batch_size"), ("training.epochs=true", "training.epochs"),
                                             ("version=true", "version"), ("strategy.freeze_embeddings=1", "strategy.freeze_embeddings")])
def test_a_boolean_is_no_number_and_a_number_no_boolean(tmp_path, capsys, override, field):
    """`batch_size: true` used to train with batches of one, `freeze_embeddings: 1` to freeze them."""
    data = tmp_path / "d.csv"
    data.write_text("text,label\ngood,pos\nbad,neg\nfine,pos\nawful,neg\n")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"version": 1, "data": {"train": str(data)}}))
    assert refused(capsys, "train", str(config), "--name", "x", "--set", override).startswith(f"error: {field}: ")


def test_a_tokenizer_or_a_model_that_is_not_the_runs_is_refused(run, tiny_runs, capsys):
    """Without tokenizer_config.json transformers rebuilt another tokenizer from vocab.txt (every word [UNK]);
    a model/ holding another model got a random head: both predicted, wrongly, without a word."""
    (run / "model" / "tokenizer_config.json").unlink()
    assert "has no tokenizer_config.json" in refused(capsys, "predict", str(run), "--text", "a film")
    other = run.parent / "swapped"
    shutil.copytree(tiny_runs["classification"], other)
    shutil.rmtree(other / "model")
    shutil.copytree(tiny_runs["causal_lm"] / "model", other / "model")
    assert "not the model this run trained" in refused(capsys, "predict", str(other), "--text", "a film")


def test_misc_values_that_were_accepted(run, tmp_path, capsys):
    config = run.parent / "c.yaml"
    config.write_text((run / "config.yaml").read_text())
    assert "has finished" in refused(capsys, "train", str(config), "--resume", str(run))
    assert "is not a folder name" in refused(capsys, "train", str(config), "--name", "a\nb")
    assert "is not an export format" in refused(capsys, "predict", str(run), "--text", "a film", "--trust-format", "pt3")
    assert "is out of range" in refused(capsys, "predict", str(run), "--text", "a film", "--temperature", "inf")
    assert "output.dir: is empty" in refused(capsys, "train", str(config), "--name", "n", "--set", "output.dir=\"\"")
    assert "less than or equal to 100000" in refused(capsys, "train", str(config), "--name", "n", "--set", "training.epochs=1e12")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"t{i}", "label": ["a", "b"][i % 2]}) + "\n" for i in range(8)) + '{"text": "x", "label": 1.5}\n')
    assert "a fraction is not a label" in refused(capsys, "train", str(config), "--name", "n", "--set", f"data.train={data}", "--set", "data.validation=null")
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # argparse's own mistakes: one line too, not a usage block
        cli(["eval", str(run), "--batch-size", "x"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: weitiao eval: argument --batch-size") and len(err.splitlines()) == 1, err
