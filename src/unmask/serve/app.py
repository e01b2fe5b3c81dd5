"""``unmask serve``: an OpenAI-compatible HTTP server over the continuous-batching engine.

Endpoints: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (the model's
chat template), both with ``stream: true`` as server-sent events; ``GET /health``; ``GET /metrics``
(Prometheus text); the playground page at ``GET /`` and its ``/v1/playground/*`` endpoints
(``serve/playground.py``). Errors have OpenAI's body ``{"error": {"message", "type", "param", "code"}}``.

Besides OpenAI's fields (``max_tokens``, ``temperature`` (default 0: greedy), ``seed``, ``stop``,
``stream``, ``stream_options.include_usage``), a request may carry unmask's decoding fields: ``spec``
(e.g. ``"threshold:0.9+credit@dual"``), ``policy`` and its option (``threshold``, ``factor``,
``margin``, ``steps``), ``credit`` (true or ``{alpha, beta, gamma, adaptive}``), ``cache``,
``block_length``; they replace the server's defaults (``--spec``). ``max_tokens`` is rounded up to a
multiple of ``block_length`` for decoding and the text is cut at ``max_tokens`` tokens and at the first
stop string. ``usage`` adds ``forwards``: the model forwards the answer took (NFE).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from unmask.api import DiffusionLM
from unmask.decoding.config import DEFAULT_SPEC, DecodeConfig
from unmask.decoding.credit import CreditConfig
from unmask.decoding.policies import knob_names
from unmask.eval.spec import parse_spec
from unmask.serve.engine import Engine, QueueFull, Ticket, Update
from unmask.serve.playground import add_playground

# OpenAI fields a client may send that do not change a diffusion decode here; anything else unknown is an error
IGNORED_FIELDS = {"frequency_penalty", "presence_penalty", "logit_bias", "user", "suffix", "parallel_tool_calls",
                  "service_tier", "store", "metadata"}
SAMPLING_FIELDS = ("top_p", "top_k")  # Dream's sampling filters (DecodeConfig), checked there
MAX_STOP_STRINGS = 4
MAX_TEMPERATURE = 2.0  # OpenAI's range


class APIError(Exception):
    """An error answered with OpenAI's error body."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class CreditFields(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    alpha: float = 0.65
    beta: float = 0.7
    gamma: float = 0.2
    adaptive: bool = False


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)
    include_usage: bool = False


class DecodeFields(BaseModel):
    """OpenAI's sampling fields and unmask's decoding fields, shared by both endpoints. Strict types: ``"64"``
    for an integer or ``"yes"`` for a boolean is a 400, not a silent coercion."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: str
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    logprobs: bool | int | None = None
    echo: bool = False
    best_of: int | None = None
    spec: str | None = None
    policy: str | None = None
    credit: bool | CreditFields | None = None
    cache: str | None = None
    block_length: int | None = None


class CompletionRequest(DecodeFields):
    prompt: str | list[str]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(400, f"message content part of type {part.get('type')!r} is not supported "
                                    "(allowed: text)", param="messages")
            parts.append(part["text"])
        return "".join(parts)


class ChatRequest(DecodeFields):
    messages: list[ChatMessage] = Field(min_length=1)


@dataclass
class ServerSettings:
    """What ``unmask serve`` fixes for every request (request fields override the decoding defaults)."""

    model_name: str = "unmask-testbed"
    spec: str = DEFAULT_SPEC
    block_length: int = 32
    default_max_tokens: int = 256
    api_key: str | None = None
    request_timeout_s: float = 600.0
    max_body_bytes: int = 8 << 20  # larger request bodies get 413 before they are read


def decode_config(req: DecodeFields, settings: ServerSettings, prompt_length: int, max_length: int,
                  ) -> tuple[DecodeConfig, int, tuple[str, ...]]:
    """(the request's DecodeConfig, max_tokens, stop strings), every value checked (``APIError`` 400)."""
    if req.n != 1:
        raise APIError(400, f"n={req.n} is not supported (allowed: 1)", param="n")
    if req.best_of not in (None, 1):
        raise APIError(400, f"best_of={req.best_of} is not supported (allowed: 1)", param="best_of")
    if req.logprobs not in (None, False, 0):
        raise APIError(400, "logprobs are not supported by a diffusion decode", param="logprobs")
    if req.echo:
        raise APIError(400, "echo is not supported", param="echo")
    knobs = knob_names()
    extra = dict(req.model_extra or {})
    unknown = sorted(k for k in extra if k not in knobs and k not in IGNORED_FIELDS and k not in SAMPLING_FIELDS)
    if unknown:
        raise APIError(400, f"unknown field(s) {', '.join(unknown)} (decoding fields: spec, policy, "
                            f"{', '.join(sorted(knobs))}, credit, cache, block_length)", param=unknown[0])
    for name, value in extra.items():
        if name in knobs and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise APIError(400, f"{name} must be a number, got {value!r}", param=name)
    if req.spec is not None and (req.policy is not None or any(k in knobs for k in extra)):
        given = ", ".join(["policy"] * (req.policy is not None) + sorted(k for k in extra if k in knobs))
        raise APIError(400, f"give either spec or policy and its option, not both (spec {req.spec!r} with {given})",
                       param="spec")
    if req.max_tokens is not None and req.max_completion_tokens is not None \
            and req.max_tokens != req.max_completion_tokens:
        raise APIError(400, f"max_tokens ({req.max_tokens}) and max_completion_tokens ({req.max_completion_tokens}) "
                            "disagree: give one", param="max_completion_tokens")
    if req.temperature is not None and not 0 <= req.temperature <= MAX_TEMPERATURE:
        raise APIError(400, f"temperature must be in [0, {MAX_TEMPERATURE:g}], got {req.temperature}",
                       param="temperature")
    max_tokens = req.max_tokens if req.max_tokens is not None else req.max_completion_tokens
    max_tokens = settings.default_max_tokens if max_tokens is None else max_tokens
    if isinstance(max_tokens, bool) or max_tokens < 1:
        raise APIError(400, f"max_tokens must be an integer >= 1, got {max_tokens}", param="max_tokens")
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    if len(stop) > MAX_STOP_STRINGS:
        raise APIError(400, f"stop has {len(stop)} strings (allowed: at most {MAX_STOP_STRINGS})", param="stop")
    try:
        spec = parse_spec(req.spec if req.spec is not None else settings.spec)
    except ValueError as err:
        raise APIError(400, str(err), param="spec") from None
    fields: dict[str, Any] = spec.generate_kwargs()
    if req.policy is not None and req.policy != fields["policy"]:  # another policy: the default's option goes
        fields = {k: v for k, v in fields.items() if k not in knobs}
        fields["policy"] = req.policy
    fields.update({k: v for k, v in extra.items() if k in knobs})
    if req.credit is not None:
        try:
            fields["credit"] = CreditConfig(**req.credit.model_dump()) if isinstance(req.credit, CreditFields) \
                else req.credit
        except ValueError as err:
            raise APIError(400, str(err), param="credit") from None
    if req.cache is not None:
        fields["cache"] = req.cache
    block_length = settings.block_length if req.block_length is None else req.block_length
    if isinstance(block_length, bool) or block_length < 1:
        raise APIError(400, f"block_length must be an integer >= 1, got {block_length}", param="block_length")
    gen_length = -(-max_tokens // block_length) * block_length
    if prompt_length + gen_length > max_length:
        raise APIError(400, f"prompt ({prompt_length} tokens) + max_tokens rounded up to the block length "
                            f"({gen_length}) exceeds the model's context of {max_length} tokens",
                       param="max_tokens", code="context_length_exceeded")
    try:
        config = DecodeConfig.create(
            gen_length=gen_length, block_length=block_length, early_stop=True, compile=None,
            temperature=0.0 if req.temperature is None else req.temperature, seed=req.seed,
            top_p=None if extra.get("top_p") in (None, 1, 1.0) else extra["top_p"], top_k=extra.get("top_k"),
            **fields)
    except (ValueError, TypeError) as err:
        raise APIError(400, str(err)) from None
    return config, max_tokens, stop


class Metrics:
    """Request counters by endpoint and status, and the engine's gauges, in Prometheus text format."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()

    def render(self, engine: Engine) -> str:
        stats = engine.stats
        lines = ["# HELP unmask_requests_total HTTP requests by endpoint and status.",
                 "# TYPE unmask_requests_total counter"]
        for (path, status), count in sorted(self.requests.items()):
            lines.append(f'unmask_requests_total{{endpoint="{path}",status="{status}"}} {count}')
        gauges = [
            ("queue_depth", "gauge", "Requests waiting for a slot.", len(engine.waiting)),
            ("active_rows", "gauge", "Rows decoding now.", engine.active_rows),
            ("batch_occupancy", "gauge", "Rows decoding / max batch.", engine.active_rows / engine.max_batch),
            ("completions_total", "counter", "Finished answers.", stats.finished),
            ("generated_tokens_total", "counter", "Tokens of finished answers.", stats.completion_tokens),
            ("batch_forwards_total", "counter", "Model forwards (one per batch step).", stats.steps),
            ("row_forwards_total", "counter", "Row forwards (NFE summed over answers).", stats.row_forwards),
            ("tokens_per_second", "gauge", "Tokens of answers finished in the last 60 s, per second.",
             stats.tokens_per_second()),
            ("forwards_per_token", "gauge", "Row forwards per generated token since start.", stats.forwards_per_token),
        ]
        for name, kind, help_text, value in gauges:
            lines += [f"# HELP unmask_{name} {help_text}", f"# TYPE unmask_{name} {kind}", f"unmask_{name} {value:g}"]
        return "\n".join(lines) + "\n"


def create_app(lm: DiffusionLM, settings: ServerSettings | None = None, max_batch: int = 8,
               max_queue: int = 64, warm_prompt_tokens: int | None = None,
               admission_wait_s: float = 0.0) -> FastAPI:
    """The FastAPI app; the engine thread starts and stops with the app's lifespan. ``warm_prompt_tokens``:
    before serving, capture the default spec's steps for every batch bucket (``Engine.warm``) over canvases of
    that many prompt tokens plus the default ``max_tokens`` (on CUDA; a request that needs more grows them).
    ``admission_wait_s``: an idle engine's wait for a burst to gather (``Engine``)."""
    settings = settings or ServerSettings()
    engine = Engine(lm, max_batch=max_batch, max_queue=max_queue, admission_wait_s=admission_wait_s)
    metrics = Metrics()
    max_length = lm.model.config.max_sequence_length
    max_token_chars = longest_token_chars(lm)
    if warm_prompt_tokens is not None and warm_prompt_tokens < 0:
        raise ValueError(f"warm_prompt_tokens must be >= 0, got {warm_prompt_tokens}")

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if warm_prompt_tokens is not None:
            prompt = min(warm_prompt_tokens, max_length - settings.block_length)
            config, _, _ = decode_config(CompletionRequest(model=settings.model_name, prompt=""), settings,
                                         prompt, max_length)
            engine.warm(config, prompt + config.gen_length)
        engine.start()
        yield
        engine.shutdown()

    app = FastAPI(title="unmask", version="0.1.0", lifespan=lifespan)
    app.state.engine, app.state.settings, app.state.metrics = engine, settings, metrics

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError) -> JSONResponse:
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        if first.get("type") == "json_invalid":
            return APIError(400, f"request body is not valid JSON: {first.get('ctx', {}).get('error', '')}").response()
        location = ".".join(str(p) for p in first.get("loc", ())[1:])
        return APIError(400, f"{location or 'body'}: {first.get('msg', 'invalid value')}",
                        param=location or None).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return APIError(err.status_code, str(err.detail), kind).response()

    app.add_middleware(Gate, settings=settings, metrics=metrics)

    def check_model(name: str) -> None:
        if name != settings.model_name:
            raise APIError(404, f"model {name!r} is not served here (served: {settings.model_name!r})",
                           "not_found_error", param="model", code="model_not_found")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": settings.model_name, "active_rows": engine.active_rows,
                "queue_depth": len(engine.waiting)}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(engine), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0,
                                            "owned_by": "unmask"}]}

    async def run(request: Request, prompts: list[str], req: DecodeFields, chat: bool) -> Any:
        check_model(req.model)
        encoded = []
        for i, prompt in enumerate(prompts):
            if not prompt.strip():
                raise APIError(400, f"prompt {i} is empty", param="prompt")
            check_text(prompt, "prompt")
            if len(prompt) > max_length * max_token_chars:  # more tokens than the context for sure: no tokenizing
                raise APIError(400, f"prompt {i} ({len(prompt)} characters) exceeds the model's context of "
                                    f"{max_length} tokens", param="prompt", code="context_length_exceeded")
            encoded.append(await asyncio.to_thread(lm.tokenizer.encode, prompt))  # the event loop keeps serving
        configs = [decode_config(req, settings, len(ids), max_length) for ids in encoded]
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, Update]] = asyncio.Queue()
        tickets = []
        for index, (ids, (config, max_tokens, stop)) in enumerate(zip(encoded, configs, strict=True)):
            def sink(update: Update, index: int = index) -> None:
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, (index, update))
                except RuntimeError:  # the event loop is gone
                    pass
            tickets.append(Ticket(ids, config, max_tokens, sink, stop, settings.request_timeout_s))
        try:
            for ticket in tickets:
                engine.submit(ticket)
        except QueueFull as err:
            for ticket in tickets:
                ticket.cancel()
            raise APIError(429, f"server busy: {err}; retry later", "rate_limit_error", code="queue_full",
                           headers={"Retry-After": "1"}) from None
        created = int(time.time())
        prefix = "chatcmpl" if chat else "cmpl"
        ident = f"{prefix}-{secrets.token_hex(12)}"
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        prompt_tokens = sum(len(ids) for ids in encoded)
        if req.stream:
            stream = sse_events(request, queue, tickets, ident, created, settings.model_name, chat, include_usage,
                                prompt_tokens)
            return StreamingResponse(stream, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        texts = [""] * len(tickets)
        finals: list[Update | None] = [None] * len(tickets)
        checked = time.monotonic()
        try:
            while any(f is None for f in finals):
                if time.monotonic() - checked > 0.5:  # however busy the queue: a gone client frees its rows now
                    checked = time.monotonic()
                    if await request.is_disconnected():
                        return JSONResponse({}, status_code=499)
                try:
                    index, update = await asyncio.wait_for(queue.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    continue
                texts[index] += update.text
                if update.finish_reason is not None:
                    finals[index] = update
        finally:
            for ticket in tickets:
                ticket.cancel()  # no effect on finished rows; a gone client frees its rows
        for update in finals:
            if update.error is not None:
                status = 504 if update.finish_reason == "timeout" else 500
                raise APIError(status, update.error, "server_error", code=update.finish_reason)
        usage = usage_body([u.usage for u in finals], prompt_tokens)
        if chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": u.finish_reason,
                        "logprobs": None} for i, (t, u) in enumerate(zip(texts, finals, strict=True))]
            return {"id": ident, "object": "chat.completion", "created": created, "model": settings.model_name,
                    "choices": choices, "usage": usage}
        choices = [{"index": i, "text": t, "finish_reason": u.finish_reason, "logprobs": None}
                   for i, (t, u) in enumerate(zip(texts, finals, strict=True))]
        return {"id": ident, "object": "text_completion", "created": created, "model": settings.model_name,
                "choices": choices, "usage": usage}

    @app.post("/v1/completions")
    async def completions(request: Request, req: CompletionRequest) -> Any:
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        if not prompts:
            raise APIError(400, "prompt is an empty list", param="prompt")
        return await run(request, prompts, req, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, req: ChatRequest) -> Any:
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in req.messages]
        if not any(m["content"].strip() for m in messages):
            raise APIError(400, "every message is empty", param="messages")
        for m in messages:
            check_text(m["content"], "messages")
        try:
            prompt = await asyncio.to_thread(lm.tokenizer.apply_chat_template, messages)
        except Exception as err:  # a template that rejects the roles or their order
            raise APIError(400, f"the chat template rejected the messages: {err}", param="messages") from None
        return await run(request, [prompt], req, chat=True)

    async def encode_prompt(text: str, chat: bool) -> list[int]:
        """A prompt's token ids (through the chat template as one user message if ``chat``), checked as ``run``."""
        if not text.strip():
            raise APIError(400, "prompt is empty", param="prompt")
        check_text(text, "prompt")
        if len(text) > max_length * max_token_chars:
            raise APIError(400, f"prompt ({len(text)} characters) exceeds the model's context of {max_length} "
                                "tokens", param="prompt", code="context_length_exceeded")
        if chat:
            text = await asyncio.to_thread(lm.tokenizer.apply_chat_template, [{"role": "user", "content": text}])
        return await asyncio.to_thread(lm.tokenizer.encode, text)

    add_playground(app, lm, engine, settings, max_length, encode_prompt, decode_config, APIError)
    return app


class Gate:
    """Plain ASGI middleware (it leaves ``receive`` unwrapped, so a handler sees its client disconnect): the API
    key on ``/v1``, the body size limit (413 before the body is read), and request counts by endpoint and status."""

    def __init__(self, app: Any, settings: ServerSettings, metrics: Metrics) -> None:
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = dict(scope["headers"])
        refusal = None
        if self.settings.api_key and path.startswith("/v1/"):
            header = headers.get(b"authorization", b"").decode("latin-1")
            if not secrets.compare_digest(header, f"Bearer {self.settings.api_key}"):
                refusal = APIError(401, "invalid or missing API key (send 'Authorization: Bearer KEY')",
                                   "authentication_error", code="invalid_api_key")
        size = headers.get(b"content-length")
        if refusal is None and size is not None and (not size.isdigit() or int(size) > self.settings.max_body_bytes):
            refusal = APIError(413, f"request body of {size.decode('latin-1')} bytes is over the limit of "
                                    f"{self.settings.max_body_bytes} bytes (unmask serve --max-body-mb)",
                               code="request_too_large")
        status = 500

        async def send_counted(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if refusal is not None:
                await refusal.response()(scope, receive, send_counted)
            else:
                await self.app(scope, receive, send_counted)
        finally:
            if path.startswith("/v1/"):
                self.metrics.requests[(endpoint(path), status)] += 1


def longest_token_chars(lm: DiffusionLM) -> int:
    """A bound on the characters one token stands for: the longest token string of the vocabulary (a byte-level or
    sentencepiece token decodes to at most as many characters as its string has), so a prompt longer than context x
    this holds more tokens than the context, known without tokenizing it; 64 where the vocabulary cannot be read."""
    try:
        return max(8, max(len(token) for token in lm.tokenizer.tokenizer.get_vocab()))
    except Exception:  # a tokenizer without a readable vocabulary
        return 64


ENDPOINTS = ("/v1/models", "/v1/completions", "/v1/chat/completions")


def endpoint(path: str) -> str:
    """The metrics label of a path: a served endpoint, else ``other`` (unknown paths make no new series)."""
    return path if path in ENDPOINTS else "other"


def check_text(text: str, param: str) -> None:
    """A 400 for text that is not valid Unicode (a lone surrogate such as ``"\\ud800"`` cannot be encoded)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise APIError(400, f"{param} is not valid Unicode ({err.reason} at character {err.start})",
                       param=param) from None


def usage_body(usages: list, prompt_tokens: int) -> dict[str, int]:
    completion = sum(u.completion_tokens for u in usages if u is not None)
    forwards = sum(u.forwards for u in usages if u is not None)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion, "forwards": forwards}


async def sse_events(request: Request, queue: asyncio.Queue, tickets: list[Ticket], ident: str, created: int,
                     model: str, chat: bool, include_usage: bool, prompt_tokens: int) -> AsyncIterator[str]:
    """Server-sent events: one chunk per newly settled text, a last chunk with the finish reason, [DONE]."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices: list[dict], usage: dict | None = None) -> str:
        body: dict[str, Any] = {"id": ident, "object": kind, "created": created, "model": model, "choices": choices}
        if include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    def choice(index: int, text: str | None, finish: str | None, role: bool = False) -> dict:
        if chat:
            delta: dict[str, str] = {"role": "assistant"} if role else {}
            if text:
                delta["content"] = text
            return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}

    finals: list[Update | None] = [None] * len(tickets)
    try:
        if chat:
            for index in range(len(tickets)):
                yield chunk([choice(index, None, None, role=True)])
        while any(f is None for f in finals):
            index, update = await queue.get()
            if update.error is not None:
                error = {"message": update.error, "type": "server_error", "param": None, "code": update.finish_reason}
                yield f"data: {json.dumps({'error': error})}\n\n"
                finals[index] = update
                continue
            if update.text or update.finish_reason is not None:
                yield chunk([choice(index, update.text, update.finish_reason)])
            if update.finish_reason is not None:
                finals[index] = update
        if include_usage:
            yield chunk([], usage_body([u.usage for u in finals], prompt_tokens))
        yield "data: [DONE]\n\n"
    finally:  # the client went away (or we are done): free the rows
        for ticket in tickets:
            ticket.cancel()
