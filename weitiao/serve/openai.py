"""POST /v1/chat/completions in the OpenAI format, so OpenAI's clients work against a causal LM run.

Not streamed, the request joins the micro-batcher with others of the same settings. Streamed
(`"stream": true`), the answer's text goes out as server-sent events while it is generated
(`chat.completion.chunk` objects, then `data: [DONE]`), from a transformers streamer.
"""


import json
import threading
import time
import uuid
from typing import Literal

ROLES = ("system", "user", "assistant")


def add_chat_routes(app, run, batcher, name: str) -> None:
    from fastapi import HTTPException
    from fastapi.responses import StreamingResponse
    from pydantic import BaseModel, Field

    from weitiao.predict import default_sampling

    class Message(BaseModel):
        role: Literal["system", "user", "assistant"]
        content: str = Field(..., max_length=100_000)

    class ChatRequest(BaseModel):
        model: str | None = None
        messages: list[Message] = Field(..., min_length=1, max_length=256)
        max_tokens: int | None = Field(None, ge=1, le=4096)
        max_completion_tokens: int | None = Field(None, ge=1, le=4096)
        temperature: float | None = Field(None, ge=0, le=2)
        top_p: float | None = Field(None, gt=0, le=1)
        n: int = Field(1, ge=1, le=1)
        stream: bool = False

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest):
        import asyncio

        conv = tuple((m.role, m.content) for m in request.messages)
        if conv[-1][0] != "user":
            raise HTTPException(422, "messages: the last message must be the user's (the model answers it)")
        given = {"max_new_tokens": request.max_completion_tokens or request.max_tokens, "temperature": request.temperature, "top_p": request.top_p}
        sampling = default_sampling(run.opts, {k: v for k, v in given.items() if v is not None})
        if run.opts.system and conv[0][0] != "system":
            conv = (("system", run.opts.system),) + conv
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if request.stream:
            return StreamingResponse(_stream(run, batcher, conv, sampling, ident, created, name), media_type="text/event-stream")
        row = (await asyncio.wrap_future(batcher.submit([conv], sampling)))[0]
        prompt, completion = _token_counts(run, conv, row["generation"])
        return {"id": ident, "object": "chat.completion", "created": created, "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": row["generation"]},
                             "finish_reason": "length" if completion >= sampling.max_new_tokens else "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}}


def _chunk(ident: str, created: int, name: str, delta: dict, finish: str | None = None) -> str:
    body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def _stream(run, batcher, conv, sampling, ident: str, created: int, name: str):
    """Server-sent events: the role, then the text as the streamer yields it, then the finish reason and [DONE]."""
    from starlette.concurrency import run_in_threadpool
    from transformers import TextIteratorStreamer

    from weitiao.data.examples import Examples

    streamer = TextIteratorStreamer(run.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    result: dict = {}

    def generate() -> None:
        try:
            with batcher.lock:  # the model serves one generation or batch at a time
                result["row"] = run.task.answer(run, Examples([conv], None, None, [1], "messages"), sampling, 1, streamer=streamer)[0]
        except Exception as e:  # noqa: BLE001  (ends the stream; the server goes on)
            result["error"] = e
            streamer.end()

    threading.Thread(target=generate, name="weitiao-stream", daemon=True).start()
    yield _chunk(ident, created, name, {"role": "assistant", "content": ""})
    sent = ""
    while True:
        piece = await run_in_threadpool(next, streamer, None)
        if piece is None:
            break
        if piece:
            sent += piece
            yield _chunk(ident, created, name, {"content": piece})
    if "error" in result:
        yield f"data: {json.dumps({'error': {'message': str(result['error'])}})}\n\n"
    else:
        completion = _token_counts(run, conv, result.get("row", {}).get("generation", sent))[1]
        yield _chunk(ident, created, name, {}, "length" if completion >= sampling.max_new_tokens else "stop")
    yield "data: [DONE]\n\n"


def _token_counts(run, conv, answer: str) -> tuple[int, int]:
    """(prompt tokens, answer tokens) as the run's tokenizer counts them."""
    from weitiao.tasks.causal_lm.lm_text import prompt_text

    tok = run.tokenizer
    prompt = len(tok(prompt_text(tok, conv), add_special_tokens=False)["input_ids"]) if getattr(tok, "chat_template", None) else 0
    return prompt, len(tok(answer, add_special_tokens=False)["input_ids"])
