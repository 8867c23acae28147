"""`weitiao runs [DIR]` (a table of run folders) and `weitiao compare RUN_A RUN_B [...]` (config and
metric differences side by side, and their curves overlaid in one HTML page)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from weitiao.errors import UserError
from weitiao.rundir import CONFIG, METRICS, METRICS_LOG


@dataclass
class RunRow:
    name: str
    path: str
    task: str
    model: str
    strategy: str
    metric: str
    value: float | None
    seconds: float | None
    date: str
    status: str


def find_runs(root: Path) -> list[Path]:
    """Run folders under `root`: its children with a config.yaml and metrics.jsonl, and the trials of search folders in it."""
    out = []
    for config in sorted(root.glob("*/config.yaml")) + sorted(root.glob("*/*/config.yaml")):
        folder = config.parent
        if (folder / METRICS_LOG).is_file() and "checkpoints" not in folder.parts:
            out.append(folder)
    return out


def describe_run(folder: Path, root: Path | None = None) -> RunRow:
    """One row of the runs table; a run whose files do not read (a truncated metrics.json, a config
    that is not YAML) is a row with status 'broken: ...', so one bad folder never hides the others."""
    import yaml

    try:
        return _describe(folder, root)
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError) as e:
        name = str(folder.relative_to(root)) if root else folder.name
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:80]}" if str(e) else type(e).__name__
        return RunRow(name, str(folder), "?", "?", "?", "?", None, None, "?", f"broken: {reason}")


def _describe(folder: Path, root: Path | None) -> RunRow:
    import yaml

    from weitiao.evaluate.report import read_records
    from weitiao.rundir import status

    cfg = yaml.safe_load((folder / CONFIG).read_text(encoding="utf-8")) or {}
    task = cfg.get("task") or {}
    task = task.get("type", "?") if isinstance(task, dict) else str(task)
    strategy = cfg.get("strategy") or {}
    strategy = strategy.get("method", "?") if isinstance(strategy, dict) else str(strategy)
    metric = (cfg.get("training") or {}).get("metric") or "?"
    final = json.loads((folder / METRICS).read_text()) if (folder / METRICS).is_file() else {}
    value = final.get("validation", {}).get(metric)
    records = read_records(folder)
    if value is None:  # a run still training or stopped: the best evaluation so far
        bests = [r.get("best") for r in records if "eval" in r and isinstance(r.get("best"), (int, float))]
        value = bests[-1] if bests else None
    seconds = final.get("train", {}).get("seconds")
    started = (folder / CONFIG).stat().st_mtime
    if seconds is None and records:
        seconds = round((folder / METRICS_LOG).stat().st_mtime - started, 1)
    name = str(folder.relative_to(root)) if root else folder.name
    return RunRow(name, str(folder), task, str(cfg.get("model", "?")), strategy, metric, value, seconds,
                  time.strftime("%Y-%m-%d %H:%M", time.localtime(started)), status(folder))


def runs_table(root: str = "runs", as_json: bool = False) -> list[RunRow]:
    """Print (and return) one row per run under `root`, newest first."""
    path = Path(root)
    if not path.is_dir():
        raise UserError("DIR", f"'{root}' is a file, not a folder" if path.exists() else f"folder '{root}' does not exist",
                        "give the folder your runs are in (output.dir, default runs)")
    rows = sorted((describe_run(f, path) for f in find_runs(path)), key=lambda r: r.date, reverse=True)
    if as_json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return rows
    header = ["name", "task", "model", "strategy", "metric", "value", "time", "date", "status"]
    cells = [[r.name, r.task, _short(r.model), r.strategy, r.metric, f"{r.value:.4f}" if isinstance(r.value, float) else "-",
              f"{r.seconds:.0f}s" if r.seconds is not None else "-", r.date, r.status] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)))
    if not rows:
        print(f"(no runs in {root})")
    return rows


def _short(model: str) -> str:
    return model if len(model) <= 40 else "..." + model[-37:]


def compare(runs: list[str], out: str = "compare.html") -> dict:
    """Config keys that differ, each run's validation metrics side by side (and their difference from
    the first run), printed; the curves of every run overlaid, with the tables, in `out` (HTML)."""
    import yaml

    from weitiao.config import flat_config
    from weitiao.evaluate.report import read_records

    from weitiao.rundir import owner

    if len(runs) < 2:
        raise UserError("RUN", "compare needs two runs or more", "give two or more run folders")
    if Path(out).is_dir():
        raise UserError("--out", f"'{out}' is a folder", "give a file name, e.g. compare.html")
    if owner(out) is not None:
        raise UserError("--out", f"'{out}' is one of the files of the run '{owner(out)}'", "write the comparison under another name, or elsewhere")
    folders = [Path(r) for r in runs]
    for f in folders:
        if not (f / CONFIG).is_file():
            raise UserError("RUN", f"'{f}' is not a run folder (no config.yaml)", "give folders written by `weitiao train`")
    configs, finals = [], []
    for f in folders:
        try:
            configs.append(flat_config(yaml.safe_load((f / CONFIG).read_text(encoding="utf-8")) or {}))
            finals.append(json.loads((f / METRICS).read_text()) if (f / METRICS).is_file() else {})
        except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError) as e:
            raise UserError("RUN", f"the config.yaml or metrics.json of '{f}' cannot be read ({type(e).__name__})",
                            "leave out the damaged run (weitiao runs marks it 'broken')") from None
    keys = sorted({k for c in configs for k in c} - {"output.dir"})
    differ = {k: [c.get(k) for c in configs] for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1}
    metrics = []
    for final in finals:
        metrics.append({k: v for k, v in final.get("validation", {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    names = sorted({k for m in metrics for k in m})
    result = {"runs": [str(f) for f in folders], "config_differences": differ,
              "metrics": {k: [m.get(k) for m in metrics] for k in names}}
    print("config differences:" if differ else "config: the same (apart from output.dir)")
    for k, values in differ.items():
        print(f"  {k}: " + " | ".join(json.dumps(v, default=str) for v in values))
    print("validation metrics:")
    for k in names:
        values = result["metrics"][k]
        first = values[0]
        print(f"  {k}: " + " | ".join(
            (f"{v:.4f}" + (f" ({v - first:+.4f})" if i and isinstance(first, (int, float)) else "")) if isinstance(v, (int, float)) else "-"
            for i, v in enumerate(values)))
    _write_page(Path(out), folders, [read_records(f) for f in folders], result)
    print(f"curves: {out}")
    return result


def _write_page(path: Path, folders: list[Path], records: list[list[dict]], result: dict) -> None:
    """One HTML page: the two tables and overlaid curves (training loss, each evaluation metric)."""
    import base64
    import html
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f.name for f in folders]
    series = {"training loss": [[(r["step"], r["loss"]) for r in recs if "loss" in r and "step" in r and "eval" not in r] for recs in records]}
    metric_keys = sorted({k for recs in records for r in recs if "eval" in r for k, v in r["eval"].items() if isinstance(v, float)})
    for k in metric_keys:
        series[f"validation {k}"] = [[(r["step"], r["eval"][k]) for r in recs if "eval" in r and isinstance(r["eval"].get(k), float)] for recs in records]
    images = []
    for title, per_run in series.items():
        fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=100)
        for name, points in zip(names, per_run):
            if points:
                ax.plot(*zip(*points), "-" if title == "training loss" else "o-", label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        images.append((title, base64.b64encode(buf.getvalue()).decode()))
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    config_rows = "".join(f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td>{html.escape(json.dumps(v, default=str))}</td>" for v in values) + "</tr>"
                          for k, values in result["config_differences"].items())
    metric_rows = "".join(f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td>{v:.4f}</td>" if isinstance(v, (int, float)) else "<td>-</td>" for v in values) + "</tr>"
                          for k, values in result["metrics"].items())
    page = ["<!doctype html><html><head><meta charset='utf-8'><title>weitiao: compare</title><style>body{font-family:sans-serif;max-width:1000px;"
            "margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:100%}</style></head><body>",
            "<h1>Compare</h1>", f"<h2>Config differences</h2><table><tr><th>key</th>{head}</tr>{config_rows}</table>",
            f"<h2>Validation metrics</h2><table><tr><th>metric</th>{head}</tr>{metric_rows}</table>"]
    page += [f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' src='data:image/png;base64,{data}'>" for t, data in images]
    from weitiao.files import write_text

    write_text(path, "\n".join(page) + "</body></html>")
