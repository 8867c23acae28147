"""The Python API, beside the command line (for notebooks and scripts).

    import weitiao
    run = weitiao.train("examples/sst2.yaml", overrides={"training.epochs": 1})
    run.metrics["validation"]["accuracy"]
    run.predict(["a gripping, funny film"])      # the objects `weitiao predict` prints
    weitiao.load("runs/demo").predict([...])

Every mistake the CLI reports in one line raises `WeitiaoError` with that same line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from weitiao.errors import TrainingStopped, UserError
from weitiao.rundir import CONFIG, METRICS, MODEL


class WeitiaoError(Exception):
    """What went wrong, in the one line the CLI prints; `exit_code`: the CLI's (2 bad input, 3 stopped)."""

    def __init__(self, line: str, exit_code: int):
        super().__init__(line)
        self.exit_code = exit_code


def _plain_errors(fn):
    """Turn weitiao's own errors into WeitiaoError (one type, the CLI's line)."""
    import functools

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise WeitiaoError(e.line(), 2) from None
        except TrainingStopped as e:
            raise WeitiaoError(str(e), 3) from None

    return call


class Run:
    """A finished run folder: its path, its metrics and a `predict` that keeps the model loaded."""

    def __init__(self, path: Path, trust_format: tuple[str, ...] = ()):
        self.path = Path(path)
        self._loaded = None
        self._trust = tuple(trust_format)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def metrics(self) -> dict:
        """metrics.json: validation (and test) scores, the training summary, the probe."""
        return json.loads((self.path / METRICS).read_text())

    @_plain_errors
    def predict(self, inputs: list[str] | str, batch_size: int | None = None, **generation) -> list[dict]:
        """One object per input, in order, as `weitiao predict` prints them. A causal LM run answers each
        prompt; `generation`: max_new_tokens, temperature, top_p, num_beams (default: the run's task.generate)."""
        from weitiao.predict import check_texts, predict_rows
        from weitiao.rundir.opening import open_run

        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, (list, tuple)) or not inputs:
            raise UserError("inputs", f"{type(inputs).__name__} {inputs!r:.40} is not a list of texts", "pass a non-empty list of strings")
        check_texts(list(inputs))
        if self._loaded is None:
            self._loaded = open_run(str(self.path), trust=self._trust)
        unknown = set(generation) - {"max_new_tokens", "temperature", "top_p", "num_beams"}
        if unknown:
            raise UserError(sorted(unknown)[0], "is not a generation option", "use max_new_tokens, temperature, top_p or num_beams")
        return predict_rows(self._loaded, list(inputs), None, batch_size, generation or None)


@_plain_errors
def train(config: str | Path | dict, name: str | None = None, overrides: dict | None = None, overwrite: bool = False) -> Run:
    """Fine-tune as `config` (a YAML path, or the same sections as a dict) says, with `overrides`
    ({"training.lr": 3e-5}: dotted keys as `--set` takes them). Returns the finished run."""
    from weitiao.config import config_from
    from weitiao.train.recipe import train as run_training

    if not isinstance(config, (str, Path, dict)):
        raise UserError("config", f"{type(config).__name__} {config!r:.60} is not a config", "give a YAML path or a dict of sections")
    if overrides is not None and not isinstance(overrides, dict):
        raise UserError("overrides", f"a {type(overrides).__name__}, not a dict", 'give {"training.lr": 3e-5}: dotted keys as --set takes them')
    if name is not None and not isinstance(name, str):
        raise UserError("name", f"{name!r} is not a run name", "give a string (the run folder's name)")
    cfg = config_from(config, overrides)
    stem = Path(config).stem if not isinstance(config, dict) else "run"
    name = name or f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Run(run_training(cfg, name, overwrite))


@_plain_errors
def load(run_dir: str | Path, trust_format: tuple[str, ...] = ()) -> Run:
    """A finished run folder (with model/ and metrics.json), or a folder `weitiao export` wrote, as a `Run`.

    `trust_format`: code-carrying export formats (("pt2",)) to open anyway, as `--trust-format`;
    only for folders you made yourself."""
    if not isinstance(run_dir, (str, Path)):
        raise UserError("run_dir", f"{type(run_dir).__name__} {run_dir!r:.60} is not a folder path", "give the run folder's path, e.g. runs/demo")
    path = Path(run_dir)
    from weitiao.formats import check_trusted

    check_trusted(tuple(trust_format))
    if not (path / CONFIG).is_file():
        raise UserError("run_dir", f"'{run_dir}' is not a run folder (no config.yaml)", "give a folder written by `weitiao train`, e.g. runs/demo")
    from weitiao.formats import is_export

    if is_export(path):
        return Run(path, trust_format)
    if not (path / MODEL / "config.json").is_file() or not (path / METRICS).is_file():
        raise UserError("run_dir", f"'{run_dir}' has no finished model (model/ or metrics.json is missing)", "let the run finish, or resume it")
    return Run(path)
