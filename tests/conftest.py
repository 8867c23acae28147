import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Hundreds of tiny runs here: reports (plots, and scoring the validation data again) are written only
# where a test asks for one (tests/test_report.py); users get them by default (output.report).
os.environ.setdefault("WEITIAO_REPORT", "0")
# `make test` runs two pytest-xdist workers on two cores: one thread each (and in the processes they
# start), so that the workers do not fight over the cores. Set before torch is imported.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


import random  # noqa: E402

import pytest  # noqa: E402


@pytest.hookimpl(wrapper=True)  # before every plain implementation: xdist's reads the groups to name the tests
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist's loadgroup: the tests of a module that shares a module-scoped fixture (a
    trained run) go to one worker, so that the run is trained once; the modules that share the
    session's tiny_runs go to one worker together. Tests that share nothing are spread one by one."""
    # a worker's own config says dist "no"; xdist sets its option loadgroup there
    if not getattr(config.option, "loadgroup", False):
        return (yield)
    modules: dict[str, str | None] = {}
    for item in items:
        fixtures = item._fixtureinfo.name2fixturedefs
        group = modules.get(item.module.__name__)
        if "tiny_runs" in fixtures:
            group = "tiny_runs"
        elif group is None and any(defs[-1].scope == "module" and defs[-1].baseid for defs in fixtures.values()):
            group = item.module.__name__
        modules[item.module.__name__] = group
    for item in items:
        if modules.get(item.module.__name__):
            item.add_marker(pytest.mark.xdist_group(modules[item.module.__name__]))
    return (yield)

LORA = {"method": "lora", "r": 4, "target_modules": "all-linear"}
# task -> (strategy, the multi-task member that export and serve use)
TINY_RUNS = {"classification": (LORA, None), "token_classification": (LORA, None), "image_classification": ("full", None),
             "multitask": ("full", "entities"), "causal_lm": (LORA, None)}


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict:
    """A finished run of each task on a tiny model (a 2-layer BERT, a ViT, a Llama), for export and serve:
    2 epochs of the registry matrix's data. Returns {task: run folder}."""
    from helpers import tiny_bert, write_config
    from test_tasks import TASK_DATA

    from weitiao.cli import main

    tmp = tmp_path_factory.mktemp("tiny_runs")
    tiny = tiny_bert(tmp / "tiny")
    out = {}
    for task, (strategy, _) in TINY_RUNS.items():
        (tmp / task).mkdir()
        cfg = TASK_DATA[task](tmp / task, random.Random(0))
        lr = 1e-3 * cfg.pop("lr_scale", 1)
        cfg = {"version": 1, "model": str(tiny), **cfg, "strategy": strategy,
               "training": {"epochs": 2, "batch_size": 16, "lr": lr, "progress": False, "warmup_ratio": 0.0},
               "output": {"dir": str(tmp / "runs")}}
        assert main(["train", str(write_config(tmp / f"{task}.yaml", cfg)), "--name", task]) == 0
        out[task] = tmp / "runs" / task
    return out
