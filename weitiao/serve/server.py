"""`weitiao serve`: load the run (or export it to ONNX first), build the app, run uvicorn until
SIGTERM or Ctrl-C (uvicorn stops taking connections, finishes the requests in flight, then exits)."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path

from weitiao.errors import UserError


def serve(run_dir: str, host: str = "127.0.0.1", port: int = 8000, backend: str | None = None, max_batch: int = 32,
          max_wait_ms: float = 0.0, batching: bool = True, max_inputs: int = 256, trust=()) -> None:
    import uvicorn

    from weitiao.serve.app import API_KEY_ENV, Settings, allowed_hosts, create_app

    for field, value, low in (("--port", port, 0), ("--max-batch", max_batch, 1), ("--max-inputs", max_inputs, 1)):
        if value < low or (field == "--port" and value > 65535):
            raise UserError(field, f"{value} is out of range", "give a port from 0 to 65535" if field == "--port" else "give a whole number of 1 or more")
    if not 0 <= max_wait_ms <= 10_000:  # also NaN
        raise UserError("--max-wait-ms", f"{max_wait_ms} is out of range", "give 0 to 10000 milliseconds")
    _check_port(host, port)
    if allowed_hosts(host) is None and not os.environ.get(API_KEY_ENV):
        print(f"warning: serving on every address ({host}) without {API_KEY_ENV}: anyone who can reach this machine can call the model",
              file=sys.stderr, flush=True)
    # --backend onnx exports into a scratch folder; the session and the app read what they need from it at once, and
    # it is gone before serving starts: uvicorn re-raises SIGTERM when it stops, which no cleanup after it would survive.
    with tempfile.TemporaryDirectory(prefix="weitiao-serve-") as tmp:
        run = _load(run_dir, backend, Path(tmp), trust)
        settings = Settings(max_batch=max_batch, max_wait_ms=max_wait_ms, batching=batching, max_inputs=max_inputs, hosts=allowed_hosts(host))
        app = create_app(run, settings, Path(run_dir).resolve().name)
    print(f"serving {run_dir} ({run.opts.type}, {run.backend}) at http://{host}:{port}  (docs: /docs; stop: Ctrl-C or SIGTERM)",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)


def _load(run_dir: str, backend: str | None, scratch: Path, trust=()):
    from weitiao.formats import is_export
    from weitiao.rundir.opening import open_run

    if backend == "onnx" and not is_export(run_dir):
        from weitiao.export import export

        print("exporting to ONNX for --backend onnx (with the parity check)", file=sys.stderr, flush=True)
        run_dir = export(run_dir, "onnx", str(scratch / "onnx"))
    run = open_run(run_dir, trust=trust)
    if backend and run.backend.split("-")[0] != backend:
        raise UserError("--backend", f"'{run_dir}' is an export run by {run.backend}, not {backend}", "leave out --backend, or serve the run folder")
    return run


def _check_port(host: str, port: int) -> None:
    """Refuse a port out of range, a host that is not this machine's, or a port that is taken, before
    the model loads (uvicorn would fail after it)."""
    import errno

    if not 0 <= port <= 65535:
        raise UserError("--port", f"{port} is not a port", "give a number from 1 to 65535")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except (socket.gaierror, UnicodeError) as e:
            raise UserError("--host", f"'{host}' is not an address this machine can listen on ({getattr(e, 'strerror', None) or e})",
                            "give 127.0.0.1 (the default) or an address of this machine") from None
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise UserError("--host", f"'{host}' is not an address of this machine ({e.strerror})",
                                "give 127.0.0.1 (the default) or an address of this machine") from None
            raise UserError("--port", f"cannot listen on {host}:{port} ({e.strerror})", "give a free --port, or stop what uses it") from None
