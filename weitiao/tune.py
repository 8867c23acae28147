"""`weitiao tune CONFIG --trials N`: a hyperparameter search with Optuna over a normal config.

The config names the search space in a `search:` section of dotted keys (as `--set` takes them):

    output: {dir: searches}
    search:
      training.lr: {low: 1.0e-5, high: 1.0e-3, log: true}
      strategy.r: {low: 4, high: 32, step: 4}          # int when the bounds are ints
      training.batch_size: {choices: [16, 32]}

`output.dir` is the search folder. It holds one normal run folder per trial (`trial-000`, ...),
`study.db` (Optuna's SQLite storage: running the same command again resumes the search where it
stopped), `best.yaml` (the best trial's resolved config: `weitiao train best.yaml` repeats it) and
`search.md` / `search.json` (every trial, the optimization history and parameter importances).

TPE sampling (seeded by training.seed); median pruning on the validation metric of each
evaluation (a trial whose metric at a step is worse than the median of earlier trials at that
step stops there). Trials run one after another; `--jobs N` runs N worker processes on the
same study.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weitiao.errors import TrainingStopped, UserError
from weitiao.rundir import CONFIG, METRICS

STUDY_FILE = "study.db"
STUDY_NAME = "weitiao"


@dataclass(frozen=True)
class Dimension:
    """One searched key: a range (`low`..`high`, log-uniform with `log`, a grid with `step`) or `choices`."""

    key: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple | None = None

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int) and (self.step is None or isinstance(self.step, int)):
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def corners(self) -> list:
        """The values at the edges of the space: each must make a valid config."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


def parse_search(search) -> list[Dimension]:
    """The `search:` section as dimensions, every mistake a one-line error naming `search.KEY`."""
    if not isinstance(search, dict) or not search:
        raise UserError("search", "is missing or empty" if not search else f"{search!r} is not a mapping",
                        "add a search section, e.g. search: {training.lr: {low: 1.0e-5, high: 1.0e-3, log: true}}")
    dims = []
    for key, spec in search.items():
        field = f"search.{key}"
        if not isinstance(spec, dict):
            raise UserError(field, f"{spec!r} is not a range or a list of choices", "write {low: 1.0e-5, high: 1.0e-3, log: true} or {choices: [16, 32]}")
        unknown = set(spec) - {"low", "high", "log", "step", "choices"}
        if unknown:
            raise UserError(field, f"unknown key {sorted(unknown)[0]!r}", "use low, high, log, step, or choices")
        if "choices" in spec:
            if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
                raise UserError(field, "choices must be a non-empty list, alone", "write {choices: [16, 32]}")
            dims.append(Dimension(key, choices=tuple(spec["choices"])))
            continue
        low, high = spec.get("low"), spec.get("high")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise UserError(field, f"low {low!r} and high {high!r} must both be numbers", "write {low: 1.0e-5, high: 1.0e-3}")
        if not low < high:
            raise UserError(field, f"low {low} is not below high {high}", "give low < high")
        log, step = spec.get("log", False), spec.get("step")
        if not isinstance(log, bool):
            raise UserError(field, f"log {log!r} is not true or false", "write log: true for a log-uniform range")
        if log and low <= 0:
            raise UserError(field, f"a log range needs low above 0, not {low}", "give a positive low, or leave out log")
        if step is not None and (not isinstance(step, (int, float)) or isinstance(step, bool) or step <= 0 or log):
            raise UserError(field, f"step {step!r} is not a positive number" if not log else "step and log do not go together",
                            "give a positive step on a linear range")
        dims.append(Dimension(key, low, high, log, step))
    return dims


def resolve(raw: dict, values: dict):
    """The validated config with `values` ({dotted key: value}) set in it."""
    from weitiao.config import set_dotted, validate

    cfg = copy.deepcopy(raw)
    for key, value in values.items():
        set_dotted(cfg, key, value)
    return validate(cfg)


def check_space(raw: dict, dims: list[Dimension]) -> None:
    """Every edge of every dimension makes a valid config (a typo in a key, a value out of range), before any trial."""
    for dim in dims:
        for value in dim.corners():
            try:
                resolve(raw, {dim.key: value})
            except UserError as e:
                raise UserError(f"search.{dim.key}", f"{value!r} does not make a valid config ({e.line()})",
                                "name a config key as --set takes it, with values it accepts") from None


def tune(config: str, trials: int, jobs: int = 1, overrides: list[str] = ()) -> Path:
    """Run (or resume) the search; returns the search folder."""
    from weitiao.config import apply_override, read_yaml, validate

    if trials < 1:
        raise UserError("--trials", f"{trials} is not a number of trials", "give 1 or more")
    if jobs < 1:
        raise UserError("--jobs", f"{jobs} is not a number of processes", "give 1 or more")
    raw = read_yaml(Path(config))
    for item in overrides:
        apply_override(raw, item)
    dims = parse_search(raw.pop("search", None))
    base = validate(raw, source=config)
    check_space(raw, dims)
    folder = Path(base.output.dir)
    folder.mkdir(parents=True, exist_ok=True)
    study = open_study(folder, raw, dims, base, fail_stale=True)
    remaining = trials - finished(study)
    if remaining > 0:
        print(f"search {folder}: {remaining} of {trials} trials to run ({finished(study)} done)", flush=True)
        if jobs == 1:
            optimize(config, list(overrides), remaining)
        else:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            shares = [remaining // jobs + (k < remaining % jobs) for k in range(jobs)]
            workers = [ctx.Process(target=optimize, args=(config, list(overrides), n, k)) for k, n in enumerate(shares) if n]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
    study = open_study(folder, raw, dims, base)
    write_results(study, folder, dims, trials)
    return folder


def open_study(folder: Path, raw: dict, dims: list[Dimension], base, fail_stale: bool = False, worker: int = 0):
    """The study in `folder` (created, or loaded to resume); `fail_stale`: trials left running by a killed
    search are marked failed (only before any worker starts: a worker's trials run while others open the study)."""
    import optuna
    from optuna.trial import TrialState

    from weitiao.train.loop import higher_is_better

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import sqlite3

    db = folder / STUDY_FILE
    if db.is_file():  # a corrupt or foreign file: one line, before Optuna's SQLAlchemy stack trace
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                con.execute("select count(*) from sqlite_master").fetchone()
                ok = con.execute("pragma quick_check").fetchone()[0] == "ok"
        except sqlite3.DatabaseError:
            ok = False
        if not ok:
            raise UserError("output.dir", f"'{db}' is not a readable Optuna study (a damaged or foreign file)",
                            "move it away to start the search afresh, or give a new output.dir")
    study = optuna.create_study(study_name=STUDY_NAME, storage=f"sqlite:///{db}", load_if_exists=True,
                                direction="maximize" if higher_is_better(base.training.metric) else "minimize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    space = json.dumps({"config": raw, "search": [d.__dict__ | {"choices": list(d.choices) if d.choices else None} for d in dims]},
                       sort_keys=True, default=str)
    if "space" not in study.user_attrs:
        study.set_user_attr("space", space)
        study.set_user_attr("metric", base.training.metric)
    elif study.user_attrs["space"] != space:
        raise UserError("output.dir", f"'{folder}' holds a search of another config or search space",
                        "give a new output.dir, or the config that started this search")
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if fail_stale else ():
        study._storage.set_trial_user_attr(trial._trial_id, "killed", True)  # its process is gone: it is rerun
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    # A resumed search (or another worker) must not draw the same values again: the seed moves on with the trials.
    study.sampler = optuna.samplers.TPESampler(seed=base.training.seed + len(study.get_trials(deepcopy=False)) + worker)
    return study


def finished(study) -> int:
    """Trials that count toward --trials: completed, pruned, or failed by training itself (not killed)."""
    from optuna.trial import TrialState

    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (t.state == TrialState.FAIL and not t.user_attrs.get("killed"))
               for t in study.get_trials(deepcopy=False))


def optimize(config: str, overrides: list[str], n: int, worker: int = 0) -> None:
    """Run `n` trials of the study in this process (`--jobs` starts several: `worker` is this one's number)."""
    import optuna

    from weitiao.config import apply_override, read_yaml, validate
    from weitiao.train.recipe import train

    raw = read_yaml(Path(config))
    for item in overrides:
        apply_override(raw, item)
    dims = parse_search(raw.pop("search", None))
    base = validate(raw, source=config)
    folder = Path(base.output.dir)
    study = open_study(folder, raw, dims, base, worker=1000 * worker)
    metric = base.training.metric

    def objective(trial) -> float:
        values = {d.key: d.suggest(trial) for d in dims}
        cfg = resolve(raw, values)
        name = f"trial-{trial.number:03d}"
        trial.set_user_attr("run", name)

        def on_eval(record: dict) -> None:
            value = record["eval"].get(metric)
            if value is not None and math.isfinite(value):
                trial.report(value, record["step"])
                if trial.should_prune():
                    raise optuna.TrialPruned(f"{metric}={value:.4f} at step {record['step']}")

        print(f"trial {trial.number}: " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)
        run = train(cfg, name, overwrite=True, on_eval=on_eval)
        value = json.loads((run / METRICS).read_text())["validation"].get(metric)
        if value is None:
            raise TrainingStopped(f"trial {trial.number} gave no {metric}")
        return value

    study.optimize(objective, n_trials=n, catch=(TrainingStopped,))


def write_results(study, folder: Path, dims: list[Dimension], trials: int) -> None:
    """best.yaml (the best trial's resolved config), search.json and search.md (every trial, history, importances)."""
    import shutil

    from optuna.trial import TrialState

    metric = study.user_attrs.get("metric", "metric")
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    rows = [{"trial": t.number, "run": t.user_attrs.get("run"), "state": t.state.name.lower() + (" (killed)" if t.user_attrs.get("killed") else ""),
             "value": t.value, "params": t.params} for t in study.get_trials(deepcopy=False)]
    summary = {"metric": metric, "direction": study.direction.name.lower(), "trials": rows}
    if done:
        best = study.best_trial
        shutil.copy(folder / best.user_attrs["run"] / CONFIG, folder / "best.yaml")
        summary |= {"best": {"trial": best.number, "run": best.user_attrs["run"], "value": best.value, "params": best.params},
                    "importances": importances(study)}
    (folder / "search.json").write_text(json.dumps(summary, indent=2, default=str))
    history_plot(study, folder / "search-history.png", metric)
    lines = [f"# Search: {len(rows)} trials ({trials} asked), {metric} ({summary['direction']})", ""]
    if done:
        lines += [f"Best: trial {best.number} (`{best.user_attrs['run']}`), {metric} = {best.value:.4f}, "
                  + ", ".join(f"`{k}` = {v}" for k, v in best.params.items()) + ". `best.yaml` repeats it.", ""]
    lines += ["| trial | run | state | " + metric + " | " + " | ".join(f"`{d.key}`" for d in dims) + " |",
              "|---|---|---|---|" + "---|" * len(dims)]
    for r in rows:
        value = f"{r['value']:.4f}" if isinstance(r["value"], float) else "-"
        lines.append(f"| {r['trial']} | {r['run']} | {r['state']} | {value} | " + " | ".join(str(r["params"].get(d.key, "-")) for d in dims) + " |")
    if summary.get("importances"):
        lines += ["", "Parameter importances (Optuna's default evaluator): " + ", ".join(f"`{k}` {v:.2f}" for k, v in summary["importances"].items())]
    lines += ["", "![optimization history](search-history.png)", ""]
    (folder / "search.md").write_text("\n".join(lines))
    print(f"search {folder}: " + (f"best trial {best.number} {metric}={best.value:.4f} -> {folder / 'best.yaml'}" if done else "no trial finished"),
          flush=True)


def importances(study) -> dict:
    """Each searched key's importance for the metric (Optuna's default evaluator); empty with too few trials."""
    import optuna

    try:
        return {k: round(v, 4) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def history_plot(study, path: Path, metric: str) -> None:
    """Each finished trial's value and the best so far, over trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if done:
        xs, ys = [t.number for t in done], [t.value for t in done]
        better = max if study.direction.name == "MAXIMIZE" else min
        best = [better(ys[:k + 1]) for k in range(len(ys))]
        ax.plot(xs, ys, "o", label=metric)
        ax.step(xs, best, where="post", label="best so far")
        ax.legend()
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title("optimization history")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
