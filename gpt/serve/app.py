"""The OpenAI-compatible HTTP API of `tinygpt serve` (FastAPI + pydantic) and the chat page at GET /.

Follows OpenAI's API reference for the shapes: GET /v1/models; POST /v1/completions and /v1/chat/completions
(`stream: true`: server-sent events, one `data: {chunk}` per piece of text, then `data: [DONE]`); `usage` token
counts; errors as {"error": {"message", "type", "param", "code"}} with a 4xx status (5xx only for 503 busy /
shutting down). The body is read and checked here (size, JSON, pydantic schema, model name, context length)
before anything reaches the engine (gpt/serve/engine.py), which generates every request in one batch.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Literal

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .engine import Engine, EngineStopped, GenerationRequest, QueueFull
from .prompts import TextStream, encode_prompt, render_chat

PAGE_DIR = Path(__file__).resolve().parent / "page"
DEFAULT_COMPLETION_TOKENS = 16   # OpenAI's default max_tokens for /v1/completions


@dataclass
class ServedModel:
    """What the routes serve: the engine, the tokenizer and the limits requests are checked against."""

    engine: Engine
    tokenizer: Any
    name: str                               # the only `model` id requests may name
    eos_id: int | None = None               # generation stops before it (finish_reason "stop")
    chat_format: str = "alpaca"             # gpt/serve/prompts.py CHAT_FORMATS
    max_body_bytes: int = 1 << 20           # larger request bodies get 413
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def context_length(self) -> int:
        return self.engine.context_length


class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.body = status, {"message": message, "type": type, "param": param, "code": code}


def error_response(status: int, message: str, **kw: Any) -> JSONResponse:
    """A JSONResponse of `status` with OpenAI's error body."""
    return JSONResponse({"error": APIError(status, message, **kw).body}, status_code=status)


# ---- request schemas (pydantic, strict: "3" is not a number) --------------------------------------------------------

class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False   # one last chunk with `usage` and no choices


class SamplingParams(BaseModel):
    """The parameters both endpoints take; None means the default."""

    model_config = ConfigDict(strict=True, extra="ignore")
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)   # OpenAI's range; default 1, 0 is greedy
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)                     # an extension of OpenAI's API
    stop: str | list[str] | None = None                       # up to 4 strings, not part of the answer
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)                             # one choice per request


class CompletionRequest(SamplingParams):
    prompt: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(SamplingParams):
    messages: list[ChatMessage] = Field(min_length=1)


# ---- checking a request ---------------------------------------------------------------------------------------------

async def _read_json(request: Request, limit: int) -> Any:
    """The request's JSON body, or an APIError: 413 past `limit` bytes, 400 when it is not JSON."""
    declared = request.headers.get("content-length", "")
    too_big = APIError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    try:
        return json.loads(body)
    except ValueError as e:
        raise APIError(400, f"the request body is not valid JSON ({e})", code="invalid_json") from None


async def _parse(request: Request, schema: type[SamplingParams], served: ServedModel) -> Any:
    """The body as `schema`, or the APIError naming the first bad field; the model must be the served one."""
    data = await _read_json(request, served.max_body_bytes)
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        params = schema.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise APIError(400, f"{param}: {err['msg']}", param=param, code=err["type"]) from None
    if params.model != served.name:
        raise APIError(404, f"the model {params.model!r} does not exist; this server serves {served.name!r} "
                            f"(GET /v1/models)", param="model", code="model_not_found")
    return params


class _Job:
    """A submitted request seen from the event loop: the engine thread's events arrive on an asyncio queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, prompt_tokens: int):
        self.loop, self.queue = loop, asyncio.Queue()
        self.prompt_tokens, self.completion_tokens, self.finish_reason = prompt_tokens, 0, "stop"
        self.error: str | None = None   # the engine's message when a step failed (finish_reason "error")
        self.request: GenerationRequest | None = None

    def emit(self, kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):   # the loop has closed: nobody is listening any more
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    async def text(self, stream: TextStream) -> AsyncIterator[str]:
        """The answer's text in pieces as tokens arrive; sets finish_reason and the token count."""
        while True:
            kind, value = await self.queue.get()
            if kind == "token":
                self.completion_tokens += 1
                piece = stream.push(value)
                if piece:
                    yield piece
                if stream.stopped:          # a stop string: the rest is not wanted
                    self.request.cancel()
                    self.finish_reason = "stop"
                    return
                continue
            tail = stream.finish()
            if tail:
                yield tail
            self.finish_reason, _, message = value.partition(": ")
            self.error = message or None
            return


def _submit(served: ServedModel, params: SamplingParams, ids: list[int], default_max: int, param: str,
            what: str) -> _Job:
    """Check the prompt (`what`, from field `param`) and max_tokens against the context and queue the request."""
    ctx, n = served.context_length, len(ids)
    if len(_stops(params)) > 4:
        raise APIError(400, f"stop: at most 4 stop strings, got {len(_stops(params))}", param="stop")
    if n == 0:
        raise APIError(400, f"the {what} is empty; give at least one token of text", param=param)
    if n >= ctx:
        raise APIError(400, f"the {what} is {n} tokens long, but the model's context is {ctx} tokens (at least "
                            f"one is needed for the answer); shorten it", param=param, code="context_length_exceeded")
    max_tokens = params.max_tokens if params.max_tokens is not None else min(default_max, ctx - n)
    if n + max_tokens > ctx:
        raise APIError(400, f"max_tokens={max_tokens} plus the {what}'s {n} tokens exceed the model's context of "
                            f"{ctx} tokens; ask for at most {ctx - n}", param="max_tokens",
                       code="context_length_exceeded")
    job = _Job(asyncio.get_running_loop(), n)
    top_p = None if params.top_p in (None, 1.0) else params.top_p
    job.request = GenerationRequest(ids, max_tokens, job.emit, temperature=1.0 if params.temperature is None
                                    else params.temperature, top_k=params.top_k, top_p=top_p, seed=params.seed,
                                    eos_id=served.eos_id)
    try:
        served.engine.submit(job.request)
    except QueueFull as e:
        raise APIError(503, str(e), type="server_error", code="queue_full") from None
    except EngineStopped as e:
        raise APIError(503, str(e), type="server_error", code="shutting_down") from None
    return job


def _stops(params: SamplingParams) -> list[str]:
    return [params.stop] if isinstance(params.stop, str) else list(params.stop or [])


# ---- responses ------------------------------------------------------------------------------------------------------

def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def _respond(served: ServedModel, params: SamplingParams, job: _Job, chat: bool) -> Any:
    """The whole answer as one JSON object, or (stream) a StreamingResponse of OpenAI chunks."""
    head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": served.name}
    stream = TextStream(served.tokenizer, _stops(params))

    def choice(text: str | None, finish: str | None, delta: bool) -> dict:
        if not chat:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        body = ({"content": text} if text is not None else {}) if delta else {"role": "assistant", "content": text}
        return {"index": 0, "delta" if delta else "message": body, "logprobs": None, "finish_reason": finish}

    if not params.stream:
        async def whole() -> JSONResponse:
            try:
                text = "".join([piece async for piece in job.text(stream)])
            finally:
                job.request.cancel()
            if job.finish_reason == "error":
                raise APIError(500, f"generation failed: {job.error}", type="server_error")
            return JSONResponse({**head, "choices": [choice(text, job.finish_reason, False)], "usage": job.usage()})
        return whole()

    chunk_head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}
    include_usage = bool(params.stream_options and params.stream_options.include_usage)

    async def events() -> AsyncIterator[str]:
        try:
            if chat:
                yield _sse({**chunk_head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                       "logprobs": None, "finish_reason": None}]})
            async for piece in job.text(stream):
                yield _sse({**chunk_head, "choices": [choice(piece, None, True)]})
            yield _sse({**chunk_head, "choices": [choice(None, job.finish_reason, True)]})
            if include_usage:
                yield _sse({**chunk_head, "choices": [], "usage": job.usage()})
            yield "data: [DONE]\n\n"
        finally:   # also when the client went away mid-stream: its row leaves the batch at the next step
            job.request.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


# ---- the app --------------------------------------------------------------------------------------------------------

def create_app(served: ServedModel) -> FastAPI:
    """The FastAPI app over `served`; its lifespan starts the engine and, at shutdown, drains it."""
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not served.engine.started:
            served.engine.start()
        yield
        await asyncio.to_thread(served.engine.stop, True)   # finish what is running, then end the thread

    app = FastAPI(title="tinygpt", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_exception_handler(APIError, lambda request, e: JSONResponse({"error": e.body}, status_code=e.status))
    app.add_exception_handler(StarletteHTTPException, lambda request, e: error_response(
        e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None))
    _add_routes(app, served)
    app.mount("/static", StaticFiles(directory=PAGE_DIR), name="static")
    return app


def _add_routes(app: FastAPI, served: ServedModel) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE_DIR / "index.html")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": served.name, **served.engine.stats()}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": served.created,
                                            "owned_by": "tinygpt", "context_length": served.context_length}]}

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        params = await _parse(request, CompletionRequest, served)
        ids = encode_prompt(served.tokenizer, params.prompt)
        job = _submit(served, params, ids, DEFAULT_COMPLETION_TOKENS, "prompt", "prompt")
        out = _respond(served, params, job, chat=False)
        return out if params.stream else await out

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        params = await _parse(request, ChatCompletionRequest, served)
        try:
            prompt = render_chat([m.model_dump() for m in params.messages], served.chat_format)
        except ValueError as e:
            raise APIError(400, str(e), param="messages") from None
        ids = encode_prompt(served.tokenizer, prompt)
        job = _submit(served, params, ids, served.context_length, "messages", "conversation")
        out = _respond(served, params, job, chat=True)
        return out if params.stream else await out


__all__ = ["ServedModel", "APIError", "create_app", "CompletionRequest", "ChatCompletionRequest", "PAGE_DIR"]
