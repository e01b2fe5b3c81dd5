"""The playground: a page at ``/`` that shows a diffusion model unmask an answer, step by step.

``POST /v1/playground/stream`` decodes one prompt through the server's engine (the same slots, graphs and
policies as the OpenAI endpoints) with its row *traced*: after every step the engine reports what the step
committed, and the answer streams as server-sent events, one JSON object per ``data:`` line:

- ``{"type": "start", "spec", "gen_length", "block_length", "prompt_tokens"}``;
- ``{"type": "step", "forward", "block", "elapsed_s", "commits": [{"pos", "id", "text", "conf"}, ...],
  "remasked": [pos, ...]}``: the answer positions committed by this step (their token ids, token texts and
  confidences; a position committed again was edited) and those a revocable policy (WINO) sent back to mask;
- ``{"type": "done", "text", "finish_reason", "forwards", "completion_tokens", "elapsed_s"}``: the answer
  as ``generate`` gives it for the same spec (the server's answer equals the prompt decoded alone);
- ``{"type": "error", "message"}`` if the decode fails after the stream has started.

A bad request (unknown spec, empty prompt, a length out of range) is answered 400 with OpenAI's error body
before any event. ``GET /v1/playground/options`` lists the policies, cache modes and defaults for the
page's pickers. The page, its script and style sheet are files of this package (no CDN, works offline).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from unmask.decoding.policies import REGISTRY
from unmask.models.cache import CACHE_KINDS

ASSETS = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
DEFAULT_SPECS = ("topk", "threshold:0.9+credit@dual")  # the page's two columns to begin with
MAX_GEN_LENGTH = 1024


class PlaygroundRequest(BaseModel):
    """One playground decode: the prompt (a user message through the chat template if ``chat``) and the spec."""

    model_config = ConfigDict(extra="forbid", strict=True)
    prompt: str
    spec: str | None = None
    gen_length: int = 128
    block_length: int | None = None
    chat: bool = True


def asset(name: str) -> bytes:
    return resources.files("unmask.serve").joinpath("static", name).read_bytes()


def options(settings: Any, max_length: int) -> dict:
    """What the page's pickers offer: every registered policy with its knob, every cache mode with its knobs."""
    policies = [{"name": name, "knob": cls.knob.name, "default": cls.knob.default, "allowed": cls.knob.allowed,
                 "help": cls.knob.help,
                 "options": [{"name": o.name, "default": o.default, "allowed": o.allowed} for o in cls.options]}
                for name, cls in REGISTRY.items()]
    caches = [{"name": kind.name, "help": kind.help,
               "knobs": [{"name": k.name, "default": k.default, "allowed": k.allowed} for k in kind.knobs]}
              for kind in CACHE_KINDS.values()]
    return {"model": settings.model_name, "spec": settings.spec, "block_length": settings.block_length,
            "max_length": max_length, "max_gen_length": MAX_GEN_LENGTH, "compare": list(DEFAULT_SPECS),
            "policies": policies, "caches": caches}


def event(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def add_playground(app: FastAPI, lm: Any, engine: Any, settings: Any, max_length: int,
                   encode_prompt: Any, decode_config: Any, api_error: type) -> None:
    """Register the page, its assets and the two playground endpoints on ``app``.

    ``encode_prompt(text, chat) -> ids`` (checked), ``decode_config(fields, settings, prompt_length, max_length)``
    and ``api_error`` are the server's own, so a playground request is checked as an API request is."""
    from unmask.serve.app import CompletionRequest
    from unmask.serve.engine import QueueFull, Ticket, Update

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return Response(asset("index.html"), media_type=ASSETS["index.html"])

    @app.get("/playground/{name}", include_in_schema=False)
    async def playground_asset(name: str) -> Response:
        if name not in ASSETS:
            raise api_error(404, f"no playground file {name!r}", "not_found_error")
        return Response(asset(name), media_type=ASSETS[name])

    @app.get("/v1/playground/options")
    async def playground_options() -> dict:
        return options(settings, max_length)

    @app.post("/v1/playground/stream")
    async def playground_stream(request: Request, req: PlaygroundRequest) -> StreamingResponse:
        if not 1 <= req.gen_length <= MAX_GEN_LENGTH:
            raise api_error(400, f"gen_length must be in [1, {MAX_GEN_LENGTH}], got {req.gen_length}",
                            param="gen_length")
        ids = await encode_prompt(req.prompt, req.chat)
        fields = CompletionRequest(model=settings.model_name, prompt=req.prompt, spec=req.spec,
                                   max_tokens=req.gen_length, block_length=req.block_length)
        config, max_tokens, _ = decode_config(fields, settings, len(ids), max_length)
        if config.gen_length != req.gen_length:
            raise api_error(400, f"gen_length {req.gen_length} is not a multiple of block_length "
                                 f"{config.block_length}", param="gen_length")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Update] = asyncio.Queue()

        def sink(update: Update) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, update)
            except RuntimeError:  # the event loop is gone
                pass

        ticket = Ticket(ids, config, max_tokens, sink, (), settings.request_timeout_s, trace=True)
        try:
            engine.submit(ticket)
        except QueueFull as err:
            raise api_error(429, f"server busy: {err}; retry later", "rate_limit_error", code="queue_full",
                            headers={"Retry-After": "1"}) from None
        label = req.spec if req.spec is not None else settings.spec

        async def events() -> AsyncIterator[str]:
            start, text = time.perf_counter(), ""
            decode = lm.tokenizer.decode
            yield event({"type": "start", "spec": label, "gen_length": config.gen_length,
                         "block_length": config.block_length, "prompt_tokens": len(ids)})
            try:
                while True:
                    try:
                        update = await asyncio.wait_for(queue.get(), timeout=0.5)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            return
                        continue
                    if update.commits is not None:
                        c = update.commits
                        commits = [{"pos": p, "id": t, "text": decode([t]), "conf": round(conf, 4)}
                                   for p, t, conf in zip(c.positions, c.tokens, c.confidences, strict=True)]
                        yield event({"type": "step", "forward": c.forward, "block": c.block,
                                     "elapsed_s": time.perf_counter() - start, "commits": commits,
                                     "remasked": c.remasked})
                    text += update.text
                    if update.finish_reason is not None:
                        if update.error is not None:
                            yield event({"type": "error", "message": update.error})
                        else:
                            yield event({"type": "done", "text": text, "finish_reason": update.finish_reason,
                                         "forwards": update.usage.forwards,
                                         "completion_tokens": update.usage.completion_tokens,
                                         "elapsed_s": time.perf_counter() - start})
                        return
            finally:
                ticket.cancel()  # a stopped run (client gone) frees its row before the next step

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
