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
import contextlib
import binascii
import hmac
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from weitiao.errors import UserError

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


from starlette.exceptions import HTTPException as _HTTPException  # noqa: E402  (this module is imported only to serve)


class BodyTooLarge(_HTTPException):
    """A body (sent in chunks, with no Content-Length) that grew past the limit while it was read: 413.
    An HTTPException, so FastAPI's body parsing passes it on instead of answering 400."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body over {limit} bytes")


class Guard:
    """ASGI middleware: the API key (when set) on every route but /health, and the body-size limit."""

    def __init__(self, app, key: str | None, limit: int):
        self.app, self.key, self.limit = app, key, limit

    async def __call__(self, scope, receive, send):
        from starlette.responses import JSONResponse

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.key and scope["path"] != "/health":
            given = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.key}".encode()):
                return await JSONResponse({"detail": "missing or wrong API key: send Authorization: Bearer <key>"}, 401,
                                          headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
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


def create_app(run, settings: Settings | None = None, name: str = "weitiao"):
    """The FastAPI app serving `run` (a predict.LoadedRun)."""
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel, Field

    import weitiao
    from weitiao.serve.batching import MicroBatcher

    settings = settings or Settings()
    generative = hasattr(run.task, "answer")
    image = run.opts.type == "image_classification"
    batcher = MicroBatcher(lambda items, key: _score(run, items, key, settings.bucket), settings.max_batch, settings.max_wait_ms / 1000, settings.batching)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()  # after uvicorn has finished the requests in flight

    app = FastAPI(title=f"weitiao: {name}", version=weitiao.__version__, lifespan=lifespan,
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
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model")
    def model_info() -> dict:
        return describe(run, name, settings) | {"batches_scored": batcher.batches}

    @app.post("/v1/predict", response_model=PredictResponse)
    async def predict(request: PredictRequest) -> dict:
        import asyncio

        for i, text in enumerate(request.inputs):
            if len(text) > limit:
                raise HTTPException(422, f"inputs[{i}]: {len(text)} characters, over the limit of {limit}")
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

    if generative and run.opts.type == "causal_lm":
        from weitiao.serve.openai import add_chat_routes

        add_chat_routes(app, run, batcher, name)

    app.add_middleware(Guard, key=os.environ.get(API_KEY_ENV) or None, limit=settings.max_body_bytes)
    return app


def describe(run, name: str, settings: Settings) -> dict:
    """What /v1/model answers: the task, its labels, the base model, validation metrics, versions."""
    import weitiao

    cfg, metrics = run.config, {}
    root = Path(getattr(run, "root", "") or "")
    if (root / "metrics.json").is_file():
        metrics = run.task.headline(json.loads((root / "metrics.json").read_text()).get("validation", {}))
    return {"name": name, "task": run.opts.type, "labels": run.names, "base_model": cfg.model, "strategy": cfg.strategy.method,
            "metrics": metrics, "backend": getattr(run, "backend", "torch"), "weitiao_version": weitiao.__version__,
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
