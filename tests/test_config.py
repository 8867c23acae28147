"""The config schema: typos and wrong types are refused with a fix, overrides and shorthands work."""

from pathlib import Path

import pytest
import yaml

from weitiao.config import RunConfig, dump_config, load_config, validate
from weitiao.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

MINIMAL = """\
version: 1
data:
  train: train.csv
  max_length: 64
training:
  lr: 1.0e-4
"""


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def refusal(raw: dict) -> UserError:
    with pytest.raises(UserError) as info:
        validate(raw)
    return info.value


@pytest.mark.parametrize("raw, field, hint", [
    ({"data": {"train": "x"}, "training": {"lrr": 1e-4}}, "training.lrr", "did you mean 'lr'?"),
    ({"data": {"train": "x"}, "trainig": {"lr": 1e-4}}, "trainig", "did you mean 'training'?"),
    ({"data": {"train": "x", "split": {"trian": 0.8}}}, "data.split.trian", "did you mean 'train'?"),
    ({"data": {"train": "x", "text_colum": "s"}}, "data.text_colum", "did you mean 'text_column'?"),
])
def test_unknown_key_suggests_the_close_name(raw, field, hint):
    err = refusal(raw)
    assert err.field == field
    assert err.problem == f"unknown key '{field.split('.')[-1]}'"
    assert err.fix == hint


def test_unknown_key_with_no_close_name_lists_the_known_keys():
    err = refusal({"data": {"train": "x"}, "output": {"zzz": 1}})
    assert err.field == "output.zzz"
    assert err.fix == "known keys here: dir, report, tracking"


def test_unknown_key_is_refused_from_a_yaml_file(tmp_path):
    path = write_config(tmp_path, MINIMAL.replace("  lr:", "  lrr:"))
    with pytest.raises(UserError, match=r"training\.lrr: unknown key 'lrr'; fix: did you mean 'lr'\?"):
        load_config(path)


@pytest.mark.parametrize("section, key, value, expected", [
    ("training", "lr", "abc", "a number"),
    ("training", "batch_size", 2.5, "a whole number"),
    ("data", "drop_leakage", "maybe", "true or false"),
    ("data", "columns", "text", "a list"),
])
def test_wrong_type_names_the_field_and_the_expected_type(section, key, value, expected):
    raw = {"data": {"train": "x"}}
    raw.setdefault(section, {})[key] = value
    err = refusal(raw)
    assert err.field == f"{section}.{key}"
    assert err.problem == f"expected {expected}, got {value!r}"


def test_a_value_outside_the_allowed_set_lists_the_allowed_ones():
    err = refusal({"data": {"train": "x"}, "training": {"scheduler": "cosin"}})
    assert err.field == "training.scheduler"
    assert "'cosin'" in err.problem
    assert "'cosine'" in err.fix


def test_missing_required_section_is_named():
    err = refusal({"training": {}})
    assert (err.field, err.problem) == ("data.train", "is required")


def test_overrides_are_applied_and_coerced(tmp_path):
    cfg = load_config(write_config(tmp_path, MINIMAL), ["training.lr=3e-5", "data.max_length=128"])
    # YAML reads "3e-5" (no dot) as a string; the schema must still give a float.
    assert isinstance(cfg.training.lr, float) and cfg.training.lr == pytest.approx(3e-5)
    assert cfg.data.max_length == 128
    assert cfg.data.train == "train.csv"  # untouched keys keep their values


def test_override_creates_missing_sections_and_parses_yaml_values(tmp_path):
    cfg = load_config(write_config(tmp_path, MINIMAL), ["output.dir=/tmp/elsewhere", "data.columns=[text, label]", "training.progress=false"])
    assert cfg.output.dir == "/tmp/elsewhere"
    assert cfg.data.columns == ["text", "label"]
    assert cfg.training.progress is False


def test_override_into_a_task_shorthand_keeps_the_shorthand(tmp_path):
    cfg = load_config(write_config(tmp_path, MINIMAL + "task: classification\n"), ["task.multi_label=true"])
    assert (cfg.task.type, cfg.task.multi_label) == ("classification", True)


def test_override_that_is_not_key_value_is_refused(tmp_path):
    with pytest.raises(UserError) as info:
        load_config(write_config(tmp_path, MINIMAL), ["training.lr"])
    assert info.value.field == "--set"
    assert "'training.lr'" in info.value.problem


def test_wrong_type_in_an_override_names_the_field(tmp_path):
    with pytest.raises(UserError) as info:
        load_config(write_config(tmp_path, MINIMAL), ["training.epochs=lots"])
    assert info.value.field == "training.epochs"
    assert "'lots'" in info.value.problem


@pytest.mark.parametrize("text, method, layers", [
    ("strategy: full", "full", None),
    ("strategy: head_only", "head_only", None),
    ("strategy: {freeze_bottom: 4}", "freeze_bottom", 4),
    ("strategy: {method: freeze_bottom, layers: 2}", "freeze_bottom", 2),
])
def test_strategy_shorthands(tmp_path, text, method, layers):
    cfg = load_config(write_config(tmp_path, MINIMAL + text + "\n"))
    assert (cfg.strategy.method, cfg.strategy.layers) == (method, layers)


def test_task_shorthand(tmp_path):
    cfg = load_config(write_config(tmp_path, MINIMAL + "task: classification\n"))
    assert cfg.task.type == "classification"
    assert cfg.task.multi_label is False


def test_override_of_layers_on_the_strategy_shorthand(tmp_path):
    cfg = load_config(write_config(tmp_path, MINIMAL + "strategy: {freeze_bottom: 4}\n"), ["strategy.layers=2"])
    assert (cfg.strategy.method, cfg.strategy.layers) == ("freeze_bottom", 2)


def test_dumped_config_loads_back_to_the_same_config(tmp_path):
    original = load_config(write_config(tmp_path, MINIMAL + "task: classification\nstrategy: {freeze_bottom: 4}\n"),
                           ["training.lr=3e-5", "data.labels=[neg, pos]"])
    dumped = tmp_path / "resolved.yaml"
    dumped.write_text(dump_config(original), encoding="utf-8")
    again = load_config(dumped)
    assert again == original
    # the dump is explicit: every section and default is written out
    raw = yaml.safe_load(dumped.read_text())
    assert (raw["strategy"]["method"], raw["strategy"]["layers"]) == ("freeze_bottom", 4)
    assert set(raw) == set(RunConfig.model_fields)


def test_yaml_syntax_error_gives_the_line(tmp_path):
    path = write_config(tmp_path, "data:\n  train: train.csv\ntraining:\n  lr: 1e-4\n   epochs: 2\n")
    with pytest.raises(UserError) as info:
        load_config(path)
    assert "line 5" in info.value.field
    assert info.value.problem.startswith("invalid YAML")


def test_config_that_is_not_a_mapping_is_refused(tmp_path):
    with pytest.raises(UserError, match="does not hold a mapping"):
        load_config(write_config(tmp_path, "- just\n- a list\n"))


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(UserError, match="nope.yaml' does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_newer_config_version_is_refused(tmp_path):
    with pytest.raises(UserError) as info:
        load_config(write_config(tmp_path, MINIMAL.replace("version: 1", "version: 2")))
    assert info.value.field == "version"
    assert "(got 2)" in info.value.problem


def test_there_are_examples_to_check():
    assert len(EXAMPLES) >= 2, "the example test below would pass on an empty folder"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_config_loads(path):
    cfg = load_config(path)
    assert cfg.version == 1
    shared = ROOT.parent / "shared" / "data"
    if not shared.is_dir():
        pytest.skip("the shared data folder is not beside the project")
    for name in ("train", "validation", "test", "labels_file"):
        value = getattr(cfg.data, name)
        if value:  # data paths in the examples are relative to the project root
            assert (ROOT / value).exists(), f"{path.name}: data.{name} '{value}' does not exist"  # a file, or an ImageFolder
