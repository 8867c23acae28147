"""`weitiao train` on bad input: exit code 2, one `error:` line naming the field and value, nothing written.

Each case runs the real CLI in a subprocess on tiny hand-made files. All of them fail before a
model is built: the subprocess records every module it imports (an audit hook), and the modules
that build a model (transformers.modeling_utils) are never among them; a mistake in the data is
found before torch is even imported.
"""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers import write_file as write

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
MODEL_CODE = "transformers.modeling_utils"  # imported by every model transformers builds, and only then
HEAVY = ["torch", "transformers", "datasets", "sklearn", "pyarrow", "accelerate"]

TRAIN = "text,label\ngood film,pos\nbad film,neg\ngreat fun,pos\ndull,neg\n"
DEV = "text,label\nlovely,pos\nawful,neg\n"

# A sitecustomize that appends the name of every module the process imports to $WEITIAO_TEST_IMPORTS.
# (Written at once: the CLI leaves with os._exit, so nothing runs at exit.)
RECORD_IMPORTS = """import os, sys
_path = os.environ.get("WEITIAO_TEST_IMPORTS")
if _path:
    def _record(event, args):
        if event == "import":
            with open(_path, "a", encoding="utf-8") as f:
                f.write(args[0] + "\\n")
    sys.addaudithook(_record)
"""


@dataclass
class Result:
    returncode: int
    stderr: str
    imported: set[str]  # every module the process imported
    stdout: str = ""


def run(*args: str, cwd: Path, env: dict | None = None) -> Result:
    hook = cwd / ".import-hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(RECORD_IMPORTS, encoding="utf-8")
    log = hook / "imports.txt"
    log.unlink(missing_ok=True)
    env = {**(env or ENV), "WEITIAO_TEST_IMPORTS": str(log),
           "PYTHONPATH": os.pathsep.join(p for p in (str(hook), (env or ENV).get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-m", "weitiao", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    imported = set(log.read_text(encoding="utf-8").split()) if log.is_file() else set()
    assert "weitiao.cli" in imported, "the import hook did not run"
    return Result(proc.returncode, proc.stderr, imported, proc.stdout)


def config(tmp_path: Path, **data) -> Path:
    """A valid config over tmp_path/train.csv and dev.csv; `data` replaces keys of the data section."""
    section = {"train": write(tmp_path / "train.csv", TRAIN), "validation": write(tmp_path / "dev.csv", DEV)}
    section.update(data)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "data": section, "training": {"epochs": 1}}), encoding="utf-8")
    return path


def train(tmp_path: Path, cfg: Path, *extra: str) -> Result:
    return run("train", str(cfg), "--name", "bad", "--set", f"output.dir={tmp_path / 'runs'}", *extra, cwd=tmp_path)


def assert_refused(result: Result, tmp_path: Path, *needles: str, data_stage: bool = False) -> str:
    """The run failed as a user error should, before any model was built (`data_stage`: before torch was
    imported); returns the error line."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert result.returncode == 2, line
    assert line.startswith("error: ")
    assert "; fix: " in line
    for needle in needles:
        assert needle in line
    assert not (tmp_path / "runs" / "bad").exists()
    assert MODEL_CODE not in result.imported, "a model was built before the mistake was refused"
    if data_stage:
        assert "torch" not in result.imported, "torch was imported before the data was checked"
    return line


def test_missing_train_file(tmp_path):
    missing = str(tmp_path / "nope.csv")
    result = train(tmp_path, config(tmp_path, train=missing))
    assert_refused(result, tmp_path, "error: data.train:", f"'{missing}' does not exist", data_stage=True)


def test_missing_column_lists_the_columns_that_exist(tmp_path):
    result = train(tmp_path, config(tmp_path, text_column="sentence"))
    assert_refused(result, tmp_path, "error: data.text_column:", "column 'sentence'", "its columns are text, label", data_stage=True)


def test_yaml_syntax_error_gives_the_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("version: 1\ndata:\n  train: train.csv\n  validation: [dev.csv\ntraining:\n  epochs: 1\n", encoding="utf-8")
    line = assert_refused(train(tmp_path, path), tmp_path, "error: config", "invalid YAML", data_stage=True)
    assert " line 5" in line


def test_unknown_key_suggests_the_right_one(tmp_path):
    path = config(tmp_path)
    path.write_text(path.read_text().replace("epochs:", "epoch:"), encoding="utf-8")
    assert_refused(train(tmp_path, path), tmp_path, "error: training.epoch:", "unknown key 'epoch'", "did you mean 'epochs'?", data_stage=True)


def test_unknown_label_in_the_validation_file(tmp_path):
    dev = write(tmp_path / "dev2.csv", "text,label\nlovely,pos\nso-so,neutral\n")
    result = train(tmp_path, config(tmp_path, validation=dev))
    assert_refused(result, tmp_path, "error: data.validation:", "line 3", "unknown label 'neutral'", data_stage=True)


def test_file_that_is_not_utf8_names_the_line(tmp_path):
    bad = write(tmp_path / "latin1.csv", "text,label\ngood,pos\ncafé crème,neg\n".encode("latin-1"))
    result = train(tmp_path, config(tmp_path, train=bad))
    assert_refused(result, tmp_path, "error: data.train:", "latin1.csv' is not valid UTF-8", "line 3", data_stage=True)


def test_malformed_csv_row_names_the_line(tmp_path):
    bad = write(tmp_path / "ragged.csv", TRAIN + "too, many, fields,pos\n")
    result = train(tmp_path, config(tmp_path, train=bad))
    assert_refused(result, tmp_path, "error: data.train:", "line 6 has 4 fields, expected 2", data_stage=True)


def test_broken_csv_quoting_names_the_line(tmp_path):
    bad = write(tmp_path / "quotes.csv", 'text,label\ngood,pos\n"oops" no,neg\n')
    result = train(tmp_path, config(tmp_path, train=bad))
    assert_refused(result, tmp_path, "error: data.train:", "line 3 is malformed", data_stage=True)


def test_training_set_empty_after_cleaning(tmp_path):
    blank = write(tmp_path / "blank.csv", "text,label\n   ,pos\n,neg\n\t,pos\n")
    result = train(tmp_path, config(tmp_path, train=blank))
    assert_refused(result, tmp_path, "error: data.train:", "no training rows left after cleaning", "'empty_dropped': 3", data_stage=True)


def test_label_column_mixing_ids_and_names(tmp_path):
    mixed = write(tmp_path / "mixed.csv", "text,label\ngood,1\nbad,neg\nfine,0\n")
    result = train(tmp_path, config(tmp_path, train=mixed))
    assert_refused(result, tmp_path, "error: data.train:", "mixes ids ('1') and names ('neg')", data_stage=True)


def test_existing_run_folder_without_overwrite(tmp_path):
    existing = tmp_path / "runs" / "bad"
    existing.mkdir(parents=True)
    (existing / "metrics.json").write_text("{}")
    result = train(tmp_path, config(tmp_path))
    assert "Traceback" not in result.stderr and result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: --name: run folder '{existing}' already exists; fix: choose another --name, --resume it, or pass --overwrite to replace it"]
    assert (existing / "metrics.json").read_text() == "{}"  # untouched
    assert "torch" not in result.imported  # refused before anything heavy is loaded


def test_bf16_on_cpu(tmp_path):
    result = train(tmp_path, config(tmp_path), "--set", "training.mixed_precision=bf16", "--set", "training.device=cpu")
    assert_refused(result, tmp_path, "error: training.mixed_precision:", "'bf16' on CPU")


def test_help_loads_no_heavy_library(tmp_path):
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0 and "train" in result.stdout
    assert [m for m in HEAVY if m in result.imported] == []


def test_importing_the_cli_loads_no_heavy_library(tmp_path):
    code = f"import sys, weitiao.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_multi_label_metric_it_does_not_produce(tmp_path):
    result = train(tmp_path, config(tmp_path), "--set", "task.multi_label=true", "--set", "training.metric=accuracy")
    assert_refused(result, tmp_path, "error: training.metric:", "'accuracy' is not a metric of multi-label classification",
                   "f1_micro, f1_macro, subset_accuracy, roc_auc, loss")


@pytest.mark.parametrize("override,needle", [
    ("{'encoder.layer.[0-3': 1.0e-5}", "'encoder.layer.[0-3' is not a regular expression"),
    ("{classifier: 0}", "the learning rate of 'classifier' is 0"),
    ("{classifier: -1.0e-3}", "the learning rate of 'classifier' is -0.001"),
])
def test_bad_lr_override_is_refused_before_anything_is_written(tmp_path, override, needle):
    result = train(tmp_path, config(tmp_path), "--set", f"strategy.lr_overrides={override}")
    assert_refused(result, tmp_path, "error: strategy.lr_overrides:", needle)


def test_max_length_beyond_the_model_positions(tmp_path):
    result = train(tmp_path, config(tmp_path, max_length=4096))
    assert_refused(result, tmp_path, "error: data.max_length:", "4096 tokens is more than model 'minilm' can read (512 positions)",
                   "set data.max_length to 512 or less")


def test_accelerate_launch_bf16_on_cpu_is_not_silently_dropped(tmp_path):
    """`accelerate launch` with mixed_precision: bf16 in its config sets this variable; the YAML does not say."""
    result = run("train", str(config(tmp_path)), "--name", "bad", "--set", f"output.dir={tmp_path / 'runs'}", "--set", "training.device=cpu",
                 cwd=tmp_path, env={**ENV, "ACCELERATE_MIXED_PRECISION": "bf16"})
    assert_refused(result, tmp_path, "error: accelerate launch mixed_precision:", "'bf16' on CPU", "training.mixed_precision: no")


def test_overwrite_keeps_the_old_run_when_the_new_config_fails(tmp_path):
    old = tmp_path / "runs" / "bad"
    old.mkdir(parents=True)
    (old / "metrics.json").write_text('{"old": true}')
    result = train(tmp_path, config(tmp_path, max_length=4096), "--overwrite")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert (old / "metrics.json").read_text() == '{"old": true}'
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["bad"]  # nothing set aside left behind


@pytest.mark.parametrize("key, value", [("training.epochs", ".inf"), ("training.lr", ".nan"), ("training.weight_decay", "-.inf"),
                                        ("training.warmup_ratio", ".nan"), ("training.num_threads", "100000000")])
def test_infinite_nan_and_absurd_numbers_are_refused_and_overwrite_keeps_the_old_run(tmp_path, key, value):
    """`--overwrite` with training.epochs: .inf used to pass validation and overflow after the old run was set aside;
    100,000,000 threads made torch segfault."""
    old = tmp_path / "runs" / "bad"
    old.mkdir(parents=True)
    (old / "metrics.json").write_text('{"old": true}')
    result = train(tmp_path, config(tmp_path), "--set", f"{key}={value}", "--overwrite")
    assert "Traceback" not in result.stderr and result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {key}:") and len(result.stderr.splitlines()) == 1, result.stderr
    assert (old / "metrics.json").read_text() == '{"old": true}' and sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["bad"]
    assert MODEL_CODE not in result.imported


def test_a_long_name_and_an_output_dir_that_is_a_file(tmp_path):
    result = train(tmp_path, config(tmp_path), "--name", "x" * 300)
    assert result.returncode == 2 and result.stderr.startswith("error: --name:") and "Traceback" not in result.stderr, result.stderr
    (tmp_path / "afile").write_text("")
    result = run("train", str(config(tmp_path)), "--name", "bad", "--set", f"output.dir={tmp_path / 'afile'}", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: output.dir:") and "Traceback" not in result.stderr, result.stderr


def test_one_broken_run_does_not_break_the_table_or_compare(tmp_path):
    """A truncated metrics.json (a run killed while writing it, before writes were atomic) made `weitiao runs` and the
    dashboard's run list fail for every run."""
    runs = tmp_path / "runs"
    for name, metrics in (("good", '{"validation": {"accuracy": 0.9}, "train": {"seconds": 3}}'), ("broken", '{"validation": {"acc')):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.yaml").write_text(yaml.safe_dump({"task": {"type": "classification"}, "training": {"metric": "accuracy"}}))
        (runs / name / "metrics.jsonl").write_text('{"step": 1}\n')
        (runs / name / "metrics.json").write_text(metrics)
    result = run("runs", str(runs), "--json", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    rows = {r["name"]: r for r in __import__("json").loads(result.stdout)}
    assert rows["good"]["value"] == 0.9 and rows["broken"]["status"].startswith("broken: JSONDecodeError")
    result = run("compare", str(runs / "good"), str(runs / "broken"), "--out", str(tmp_path / "c.html"), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: RUN:") and "Traceback" not in result.stderr, result.stderr


def test_a_section_given_twice_is_refused(tmp_path):
    cfg = config(tmp_path)
    cfg.write_text(cfg.read_text() + "training:\n  lr: 1.0e-3\n")
    result = train(tmp_path, cfg)
    line = assert_refused(result, tmp_path, "key 'training' appears twice")
    assert "line " in line


def test_a_column_named_twice_is_refused(tmp_path):
    """The last of two 'text' columns used to win silently."""
    dup = write(tmp_path / "dup.csv", "text,text,label\ngood,bad,pos\nbad,good,neg\n")
    result = train(tmp_path, config(tmp_path, train=dup))
    assert_refused(result, tmp_path, "error: data.train:", "names column 'text' twice", data_stage=True)


def test_a_label_that_is_a_json_object_is_refused(tmp_path):
    """{"a": 1} used to become the class name "{'a': 1}"."""
    rows = write(tmp_path / "train.jsonl", '{"text": "good", "label": {"a": 1}}\n{"text": "bad", "label": "neg"}\n')
    result = train(tmp_path, config(tmp_path, train=rows))
    assert_refused(result, tmp_path, "error: data.train:", "line 1", "a JSON object is not a label", data_stage=True)


def pixel_config(tmp_path: Path, rows: str, shape: list) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "task": {"type": "image_classification", "pixels": {"shape": shape}},
                                    "data": {"train": write(tmp_path / "px.csv", rows), "label_column": "label"}}), encoding="utf-8")
    return path


def test_a_nan_pixel_is_refused(tmp_path):
    """NaN and inf used to be drawn as black pixels."""
    cfg = pixel_config(tmp_path, "label,a,b,c,d\n0,1,2,3,nan\n1,4,3,2,inf\n", [2, 2])
    assert_refused(train(tmp_path, cfg), tmp_path, "error: data.train:", "line 2 column 'd' is 'nan', not a finite pixel value")


@pytest.mark.parametrize("shape, needle", [([-2, -2], "height and width must be 1 to 8192"), ([2, 1, 2], "channels must be 1")])
def test_a_pixel_shape_that_is_no_image_is_refused(tmp_path, shape, needle):
    """Negative sides and 2 channels used to end in a numpy or Pillow traceback."""
    cfg = pixel_config(tmp_path, "label,a,b,c,d\n0,1,2,3,4\n1,4,3,2,1\n", shape)
    assert_refused(train(tmp_path, cfg), tmp_path, "error: task.pixels.shape:", needle, data_stage=True)
