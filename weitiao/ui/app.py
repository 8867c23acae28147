"""`weitiao ui [--runs DIR] [--port 7860]`: a local web page over a folder of runs.

The runs table (refreshed every 2 s, so a run that trains moves), each run's report, two or more
runs compared, and a box that sends text (or image files, for image runs) to a run's model.
Built on what serving already uses (FastAPI on uvicorn) and one page of plain HTML and
JavaScript: no front-end build, nothing more to install, and the same code path as `weitiao
serve` for predictions.

Who may call: it binds 127.0.0.1 unless told otherwise; every request needs the token made at
start (the printed address carries it, as Jupyter's does, and sets a SameSite=Strict cookie); the
Host header must name this machine (DNS rebinding is refused), and a form posted from another
site is refused by its Origin. A run's own report.html is served under a sandboxing
Content-Security-Policy: no script in a handed run's files runs in the dashboard's origin.
Image runs take uploaded files only (never a path on this machine), and the body and text limits
are `weitiao serve`'s.
"""


import tempfile
import threading
from pathlib import Path

from weitiao.errors import UserError
from weitiao.rundir import CONFIG, METRICS_LOG, MODEL

PAGE = Path(__file__).with_name("page.html")


# A page from a run folder (its report, a comparison) shows; it runs nothing and fetches nothing.
MAX_INPUTS = 64  # texts or files in one request from the box
SANDBOX = {"Content-Security-Policy": "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"}


def create_app(root: Path, token: str | None = None, hosts: frozenset[str] | None = None, port: int = 0):
    """The dashboard over the run folders in `root`; `token`: the per-start secret (None: made here,
    on app.state.token); `hosts`: the Host names answered (default: this machine's loopback names)."""
    import secrets

    from fastapi import FastAPI, File, HTTPException, Query, UploadFile
    from fastapi.responses import HTMLResponse
    from pydantic import BaseModel, Field

    from weitiao.evaluate.runs import describe_run, find_runs
    from weitiao.serve.app import LOOPBACK, Guard, Settings, check_lengths
    from weitiao.version import __version__

    limits = Settings()
    app = FastAPI(title="weitiao dashboard", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.token = token or secrets.token_urlsafe(24)
    app.add_middleware(Guard, key=None, limit=limits.max_body_bytes, hosts=LOOPBACK if hosts is None else hosts,
                       token=app.state.token, cookie=f"weitiao_ui_{port}")
    loaded: dict[str, object] = {}
    lock = threading.Lock()

    def folder(name: str) -> Path:
        path = (root / name).resolve()
        if not path.is_relative_to(root.resolve()) or not (path / CONFIG).is_file():
            raise HTTPException(404, f"no run '{name}' in {root}")
        return path

    def model_of(name: str):
        from weitiao.rundir.opening import open_run

        path = folder(name)
        key = f"{name}:{(path / 'model' / 'config.json').stat().st_mtime if (path / 'model' / 'config.json').is_file() else 0}"
        with lock:
            if key not in loaded:
                try:
                    loaded[key] = open_run(str(path))
                except UserError as e:
                    raise HTTPException(409, e.line()) from None
            return loaded[key]

    class PredictRequest(BaseModel):
        inputs: list[str] = Field(..., min_length=1, max_length=MAX_INPUTS)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/api/runs")
    def runs() -> list[dict]:
        from dataclasses import asdict

        rows = sorted((describe_run(f, root) for f in find_runs(root)), key=lambda r: r.date, reverse=True)
        return [asdict(r) | {"has_model": (Path(r.path) / MODEL / "config.json").is_file()} for r in rows]

    @app.get("/runs/{name:path}/report", response_class=HTMLResponse)
    def report(name: str) -> HTMLResponse:
        from weitiao.evaluate.report import REPORT, write_report

        path = folder(name)
        page = path / REPORT
        log = path / METRICS_LOG
        if not page.is_file() or (log.is_file() and log.stat().st_mtime > page.stat().st_mtime):
            write_report(path)  # missing, or older than the run's log (a run that trains)
        return HTMLResponse(page.read_text(encoding="utf-8", errors="replace"), headers=SANDBOX)

    @app.get("/compare", response_class=HTMLResponse)
    def compare(run: list[str] = Query(..., min_length=2)) -> HTMLResponse:
        import contextlib
        import io

        from weitiao.evaluate.runs import compare as compare_runs

        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            out = Path(tmp) / "compare.html"
            compare_runs([str(folder(n)) for n in run], str(out))
            return HTMLResponse(out.read_text(encoding="utf-8"), headers=SANDBOX)

    @app.post("/api/runs/{name:path}/predict")
    def predict(name: str, request: PredictRequest) -> dict:
        from weitiao.predict import check_texts, predict_rows

        run = model_of(name)
        if run.task.takes_images:
            raise HTTPException(422, "inputs: an image run takes uploaded image files (POST them to predict_files), not text")
        check_lengths(request.inputs, limits.max_chars)
        try:
            check_texts(request.inputs, "inputs")
            return {"predictions": predict_rows(run, list(request.inputs))}
        except UserError as e:
            raise HTTPException(422, e.line()) from None

    @app.post("/api/runs/{name:path}/predict_files")
    async def predict_files(name: str, files: list[UploadFile] = File(...)) -> dict:
        from weitiao.predict import predict_rows

        run = model_of(name)
        if not run.task.takes_images:
            raise HTTPException(422, f"files: a {run.opts.type} run takes text (POST it to predict), not files")
        if len(files) > MAX_INPUTS:
            raise HTTPException(422, f"files: {len(files)} files, over the limit of {MAX_INPUTS}")
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i, f in enumerate(files):
                path = Path(tmp) / f"{i}-{Path(f.filename or 'image').name}"
                path.write_bytes(await f.read())
                paths.append(str(path))
            try:
                rows = predict_rows(run, paths)
            except UserError as e:
                raise HTTPException(422, e.line()) from None
        for row in rows:
            row["image"] = Path(row["image"]).name.split("-", 1)[1]
        return {"predictions": rows}

    return app


def ui(runs: str = "runs", host: str = "127.0.0.1", port: int = 7860) -> None:
    import sys

    import uvicorn

    from weitiao.serve.app import allowed_hosts
    from weitiao.serve.server import _check_port

    root = Path(runs)
    if not root.is_dir():
        raise UserError("--runs", f"'{runs}' is a file, not a folder" if root.exists() else f"folder '{runs}' does not exist",
                        "give the folder your runs are in (output.dir, default runs)")
    _check_port(host, port)
    app = create_app(root, hosts=allowed_hosts(host), port=port)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    print(f"dashboard of {root} at http://{shown}:{port}/?token={app.state.token}  (stop: Ctrl-C)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
