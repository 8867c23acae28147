"""The HTTP API of one run: FastAPI routes over a loaded run and a micro-batcher.

    GET  /health              always open (no API key): {"status": "ok"}
    GET  /v1/model            task, labels, base model, validation metrics, weitiao's version
    POST /v1/predict          {"inputs": [...]} -> {"predictions": [...]}: one object per input, in order,
                              each what `weitiao predict` prints for it (images: base64 strings)
    POST /v1/predict/files    image runs: the same for image files sent as multipart form data
    POST /v1/chat/completions OpenAI chat completions, streaming or not (causal LM runs; see openai.py)

With WEITIAO_API_KEY set, every route but /health wants `Authorization: Bearer <key>` (401
otherwise; compared in constant time). Bad requests are 422 with a message; bodies over the
size limit 413; a request that fails is a 500 for that request alone.
"""


import base64
import binascii
import contextlib
import hmac
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from weitiao.errors import UserError
from weitiao.rundir import METRICS

API_KEY_ENV = "WEITIAO_API_KEY"


@dataclass
class Settings:
    max_batch: int = 32  # inputs scored together at most
    max_wait_ms: float = 0.0  # how long a batch waits for more requests; 0: it takes those queued while the last batch ran
    batching: bool = True
    bucket: int = 8  # a batch is scored in sub-batches of this many rows of similar length (less padding)
    max_inputs: int = 256  # inputs in one request
    max_chars: int = 20_000  # characters in one text input
    max_image_chars: int = 28_000_000  # base64 characters in one image (about 20 MB of file)
    max_body_bytes: int = 32 * 1024 * 1024
    hosts: frozenset[str] | None = None  # the Host names answered (allowed_hosts); None: any


from starlette.exceptions import HTTPException as _HTTPException  # noqa: E402  (this module is imported only to serve)


class BodyTooLarge(_HTTPException):
    """A body (sent in chunks, with no Content-Length) that grew past the limit while it was read: 413.
    An HTTPException, so FastAPI's body parsing passes it on instead of answering 400."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body over {limit} bytes")


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def allowed_hosts(host: str) -> frozenset[str] | None:
    """The Host names a server bound to `host` answers: loopback names (and `host`) when bound to
    this machine or one address; None (any) when bound to every address (0.0.0.0, ::)."""
    return None if host in ("0.0.0.0", "::", "") else LOOPBACK | {host}


def _hostname(value: str) -> str:
    """'127.0.0.1:8000' -> '127.0.0.1', '[::1]:8000' -> '::1', 'http://a.b:1' -> 'a.b'."""
    value = value.split("://", 1)[-1].split("/", 1)[0].lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """ASGI middleware in front of every route: who may call, and how much they may send.

    - `hosts`: the Host header (and a browser's Origin) must name this server: a page elsewhere that
      rebinds its own name to 127.0.0.1 (DNS rebinding) is refused (403). None: any.
    - `key`: `Authorization: Bearer <key>` on every route but /health (401), as `weitiao serve` wants.
    - `token`: the dashboard's per-start token, from `?token=` (which also sets a SameSite=Strict
      cookie, so the page's own links and calls carry it) or that cookie (403).
    - `limit`: the body size; past it 413, also for a chunked body without Content-Length.
    """

    def __init__(self, app, key: str | None, limit: int, hosts: frozenset[str] | None = None, token: str | None = None,
                 cookie: str = "weitiao_token"):
        self.app, self.key, self.limit, self.hosts, self.token, self.cookie = app, key, limit, hosts, token, cookie

    def _refusal(self, scope, headers: dict):
        """(status, detail, extra headers) when the caller may not call, else None; and whether the token came in the URL."""
        if self.hosts is not None:
            host = _hostname(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.hosts:
                return (403, f"Host '{host}' is not this server's: open it by its own address", {}), False
            origin = headers.get(b"origin")
            if origin is not None and _hostname(origin.decode("latin-1")) not in self.hosts:
                return (403, "a request from another site is refused", {}), False
        if self.key and scope["path"] != "/health":
            given = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.key}".encode()):
                return (401, "missing or wrong API key: send Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"}), False
        if self.token:
            from urllib.parse import parse_qs

            query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
            cookies = dict(part.strip().split("=", 1) for part in headers.get(b"cookie", b"").decode("latin-1").split(";") if "=" in part)
            if hmac.compare_digest(query.encode(), self.token.encode()):
                return None, True
            if not hmac.compare_digest(cookies.get(self.cookie, "").encode(), self.token.encode()):
                return (403, "missing or wrong token: open the address `weitiao ui` printed (it ends in ?token=...)", {}), False
        return None, False

    async def __call__(self, scope, receive, send):
        from starlette.responses import JSONResponse

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        refusal, token_in_url = self._refusal(scope, headers)
        if refusal:
            status, detail, extra = refusal
            return await JSONResponse({"detail": detail}, status, headers=extra)(scope, receive, send)
        if token_in_url:
            send = self._setting_cookie(send)
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await JSONResponse({"detail": f"request body over {self.limit} bytes"}, 413)(scope, receive, send)
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge(self.limit)
            return message

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if not started:
                await JSONResponse({"detail": f"request body over {self.limit} bytes"}, 413)(scope, receive, send)

    def _setting_cookie(self, send):
        cookie = f"{self.cookie}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode("latin-1")

        async def with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        return with_cookie


def create_app(run, settings: Settings | None = None, name: str = "weitiao"):
    """The FastAPI app serving `run` (a predict.LoadedRun)."""
    from fastapi import FastAPI, HTTPException, Request
    from pydantic import BaseModel, Field

    from weitiao.serve.batching import MicroBatcher
    from weitiao.version import __version__

    settings = settings or Settings()
    generative = run.task.generates
    image = run.task.takes_images
    batcher = MicroBatcher(lambda items, key: _score(run, items, key, settings.bucket), settings.max_batch, settings.max_wait_ms / 1000, settings.batching)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()  # after uvicorn has finished the requests in flight

    app = FastAPI(title=f"weitiao: {name}", version=__version__, lifespan=lifespan,
                  description=f"A {run.opts.type} model fine-tuned by weitiao. POST /v1/predict with {{\"inputs\": [...]}}.")
    app.state.batcher, app.state.run = batcher, run
    what = "base64-encoded image files" if image else "prompts" if generative else "texts"
    limit = settings.max_image_chars if image else settings.max_chars

    class PredictRequest(BaseModel):
        inputs: list[str] = Field(..., min_length=1, max_length=settings.max_inputs,
                                  description=f"{what}, 1 to {settings.max_inputs}; each at most {limit} characters")

    class PredictResponse(BaseModel):
        predictions: list[dict] = Field(..., description="one object per input, in order: what `weitiao predict` prints for it")

    @app.get("/health")
    def health():
        from fastapi.responses import JSONResponse

        if not batcher.alive:
            return JSONResponse({"status": "error", "detail": "the batching thread has stopped: restart the server"}, 503)
        return {"status": "ok"}

    info = describe(run, name, settings)  # now: an --backend onnx scratch folder is gone once serving starts

    @app.get("/v1/model")
    def model_info() -> dict:
        return info | {"batches_scored": batcher.batches}

    body_schema = {"requestBody": {"required": True, "content": {"application/json": {"schema": PredictRequest.model_json_schema()}}}}

    @app.post("/v1/predict", response_model=PredictResponse, openapi_extra=body_schema)
    async def predict(raw: Request) -> dict:
        import asyncio

        request = parse_bounded(await raw.body(), PredictRequest, settings.max_inputs)

        check_lengths(request.inputs, limit)
        for i, text in enumerate(request.inputs):
            if not text.strip():
                raise HTTPException(422, f"inputs[{i}]: empty {'image' if image else 'text'}")
        if not image:
            return {"predictions": await asyncio.wrap_future(batcher.submit(list(request.inputs), "predict"))}
        rows = await asyncio.wrap_future(batcher.submit([_image_bytes(t, i) for i, t in enumerate(request.inputs)], "predict"))
        return {"predictions": [{**r, "image": f"inputs[{i}]"} for i, r in enumerate(rows)]}

    if image:
        from fastapi import File, UploadFile

        @app.post("/v1/predict/files", response_model=PredictResponse)
        async def predict_files(files: list[UploadFile] = File(..., description="image files, as `curl -F files=@a.jpg -F files=@b.png`")) -> dict:
            """The same predictions for image files sent as multipart form data; each names its file."""
            import asyncio

            if not 1 <= len(files) <= settings.max_inputs:
                raise HTTPException(422, f"files: {len(files)} files; send 1 to {settings.max_inputs}")
            data = [await f.read() for f in files]
            for i, d in enumerate(data):
                if not d:
                    raise HTTPException(422, f"files[{i}] ({files[i].filename}): empty file")
            rows = await asyncio.wrap_future(batcher.submit(data, "predict"))
            return {"predictions": [{**r, "image": f.filename or f"files[{i}]"} for i, (f, r) in enumerate(zip(files, rows))]}

    @app.exception_handler(UserError)
    async def bad_input(request, e: UserError):
        from fastapi.responses import JSONResponse

        return JSONResponse({"detail": e.line()}, 422)

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def bad_body(request, e: RequestValidationError):
        """FastAPI's own answer echoes the input back, and fails on a body that is not UTF-8: one line instead."""
        from fastapi.responses import JSONResponse

        first = e.errors()[0] if e.errors() else {"loc": ("body",), "msg": "not a valid request"}
        where = ".".join(str(x) for x in first.get("loc", ())) or "body"
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'not valid')}"}, 422)

    if run.task.chat:
        from weitiao.serve.openai import add_chat_routes

        add_chat_routes(app, run, batcher, name)

    app.add_middleware(Guard, key=os.environ.get(API_KEY_ENV) or None, limit=settings.max_body_bytes, hosts=settings.hosts)
    return app


def check_lengths(inputs: list[str], limit: int) -> None:
    """422 for the first input over `limit` characters (serve's and the dashboard's texts)."""
    from fastapi import HTTPException

    for i, text in enumerate(inputs):
        if len(text) > limit:
            raise HTTPException(422, f"inputs[{i}]: {len(text)} characters, over the limit of {limit}")


def parse_bounded(body: bytes, model, max_inputs: int):
    """`body` as `model`, refused at once (422) when it holds more strings than `max_inputs` allow.

    Counting the quotes that open or close a string is a pass over the bytes in C; parsing 5
    million tiny strings into objects first would hold the server (and /health) for seconds."""
    from fastapi import HTTPException
    from pydantic import ValidationError

    strings = (body.count(b'"') - body.count(b'\\"')) // 2  # a text's escaped quotes do not count
    if strings > max_inputs + 8:
        raise HTTPException(422, f"inputs: about {strings} strings in the body, over the limit of {max_inputs} inputs")
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        raise HTTPException(422, f"{where}: {first['msg']}") from None


def describe(run, name: str, settings: Settings) -> dict:
    """What /v1/model answers: the task, its labels, the base model, validation metrics, versions."""
    from weitiao.version import __version__

    model, metrics = run.settings["model"], {}
    root = Path(getattr(run, "root", "") or "")
    if (root / METRICS).is_file():
        metrics = run.task.headline(json.loads((root / METRICS).read_text()).get("validation", {}))
    base = Path(model).name if ("/" in model and Path(model).exists()) else model  # a name, never this machine's paths
    return {"name": name, "task": run.opts.type, "labels": run.names, "base_model": base, "strategy": run.settings["strategy"]["method"],
            "metrics": metrics, "backend": getattr(run, "backend", "torch"), "weitiao_version": __version__,
            "max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms, "max_inputs": settings.max_inputs}


def _image_bytes(text: str, i: int) -> bytes:
    """An image sent as base64 (optionally a data: URL) as bytes."""
    data = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"inputs[{i}]", "is not base64", "send each image file's bytes base64-encoded") from None


def _score(run, items: list, key, bucket: int) -> list[dict]:
    """What `weitiao predict` gives for each input: texts (or prompts) as they are, images through files.

    Rows are sorted by length and scored `bucket` at a time: 32 random SST-2 sentences in one padded
    batch score at 149/s on 2 cores, in sub-batches of 8 at 246/s (benchmarks/serve_load.py)."""
    from weitiao.predict import check_texts, predict_rows

    if key == "predict" and items and isinstance(items[0], bytes):
        return _score_images(run, items, bucket)
    if key != "predict":  # a generation request: conversations with their settings (openai.py)
        from weitiao.data.examples import Examples

        return run.task.answer(run, Examples(list(items), None, None, list(range(1, len(items) + 1)), "messages"), key, bucket)
    check_texts(items, "inputs")
    return predict_rows(run, items, None, bucket)


def _score_images(run, images: list[bytes], bucket: int) -> list[dict]:
    from weitiao.predict import predict_rows

    with tempfile.TemporaryDirectory(prefix="weitiao-serve-") as tmp:
        paths = []
        for i, data in enumerate(images):
            path = Path(tmp) / f"{i}"
            path.write_bytes(data)
            paths.append(str(path))
        rows = predict_rows(run, paths, None, bucket)
    if len(rows) != len(paths):
        raise UserError("inputs", f"{len(paths) - len(rows)} of {len(paths)} images could not be read", "send PNG, JPEG or other image files Pillow reads")
    return rows  # in input order; each route names its own inputs
