"""Load test of ``unmask serve`` in the style of ``vllm bench serve``: rising request rates, streaming clients.

For each request rate (Poisson arrivals; ``inf`` = all at once) N streaming completions are sent and
timed on the client: throughput (requests/s, output tokens/s), time to first chunk (TTFC: the first
settled text), time per output token (TPOT = (latency - TTFC) / (tokens - 1)) and end-to-end latency,
p50 and p99, plus the server's forwards per token from ``usage.forwards``.

The server runs in this process (uvicorn on a free port, the real HTTP path) around:
- the embedded model (default; real prompts from the synthetic math/code tasks), or
- ``--random-weights SHAPE`` (e.g. llada-8b on a GPU): random weights at the real shape with a
  stand-in tokenizer whose prompts are random tokens and whose answers never stop early, so every
  request decodes exactly ``--max-tokens`` (speed does not depend on weight values).

    python benchmarks/serve_load.py --rates 1,2,4,inf -n 32 --max-tokens 64 -o docs/benchmarks/serve_cpu
    python benchmarks/serve_load.py --random-weights llada-8b --rates 0.5,1,2,inf -n 32 --max-tokens 256 \\
        --prompt-length 256 --max-batch 8 -o docs/benchmarks/serve_h100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import socket
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch
import uvicorn

import unmask
from unmask.api import DiffusionLM
from unmask.serve.app import ServerSettings, create_app


class RandomTokenizer:
    """A stand-in tokenizer for random-weight models: word ``t<id>`` <-> token id, no stop token ever
    produced by the decode (the stop id is outside the model's vocabulary)."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab
        self.eos_id = self.pad_id = vocab + 7  # never predicted: answers run to max_tokens
        self.eot_id = None
        self.stop_ids = (self.eos_id,)
        self.chat_template = None

    def encode(self, text: str) -> list[int]:
        return [int(word[1:]) % self.vocab for word in text.split()]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return " ".join(f"t{i}" for i in ids)

    def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> str:
        return " ".join(m["content"] for m in messages)

    def batch_encode(self, texts: list[str], device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.tensor([self.encode(t) for t in texts], device=device)  # equal lengths here
        return ids, torch.ones_like(ids)


def random_weight_lm(shape: str, device: str | None, dtype: str | None) -> DiffusionLM:
    from unmask.eval.speed import SHAPES
    from unmask.models.loading import parse_dtype, random_model, resolve_device

    dev = resolve_device(device)
    torch_dtype = parse_dtype(dtype) or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    model = random_model(SHAPES[shape], dtype=torch_dtype, device=dev)
    if hasattr(model, "fuse_projections"):
        model.fuse_projections()
    vocab = min(model.config.vocab_size, model.config.mask_token_id)
    return DiffusionLM(model, RandomTokenizer(vocab), compile=False)


@dataclass
class Result:
    ok: bool
    latency_s: float = 0.0
    ttfc_s: float = 0.0
    tokens: int = 0
    forwards: int = 0
    error: str = ""


async def one_request(client: httpx.AsyncClient, url: str, body: dict) -> Result:
    start = time.perf_counter()
    ttfc = None
    usage = None
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                return Result(False, error=f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return Result(False, error=chunk["error"]["message"])
                if chunk.get("usage"):
                    usage = chunk["usage"]
                if ttfc is None and any(c.get("text") for c in chunk.get("choices", [])):
                    ttfc = time.perf_counter() - start
    except httpx.HTTPError as err:
        return Result(False, error=f"{type(err).__name__}: {err}")
    latency = time.perf_counter() - start
    tokens = usage["completion_tokens"] if usage else 0
    return Result(True, latency, ttfc if ttfc is not None else latency, tokens, usage["forwards"] if usage else 0)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


async def run_rate(url: str, bodies: list[dict], rate: float, seed: int) -> dict:
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=len(bodies) + 8)
    async with httpx.AsyncClient(timeout=3600, limits=limits) as client:
        start = time.perf_counter()
        tasks = []
        for body in bodies:
            tasks.append(asyncio.create_task(one_request(client, url, body)))
            if math.isfinite(rate):
                await asyncio.sleep(rng.expovariate(rate))
        results = await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
    ok = [r for r in results if r.ok]
    tpot = [(r.latency_s - r.ttfc_s) / (r.tokens - 1) for r in ok if r.tokens > 1]
    tokens = sum(r.tokens for r in ok)
    row = {
        "rate": rate, "requests": len(bodies), "completed": len(ok), "failed": len(results) - len(ok),
        "duration_s": duration, "request_throughput": len(ok) / duration, "output_tokens_per_s": tokens / duration,
        "forwards_per_token": sum(r.forwards for r in ok) / max(tokens, 1),
    }
    for name, values in (("ttfc_ms", [r.ttfc_s * 1e3 for r in ok]), ("tpot_ms", [t * 1e3 for t in tpot]),
                         ("latency_ms", [r.latency_s * 1e3 for r in ok])):
        row[f"{name}_mean"] = statistics.fmean(values) if values else math.nan
        row[f"{name}_p50"] = percentile(values, 50)
        row[f"{name}_p99"] = percentile(values, 99)
    errors = [r.error for r in results if not r.ok]
    if errors:
        row["first_error"] = errors[0]
    return row


def prompts_for(lm: DiffusionLM, n: int, prompt_length: int, seed: int) -> list[str]:
    if isinstance(lm.tokenizer, RandomTokenizer):
        rng = random.Random(seed)
        return [" ".join(f"t{rng.randrange(lm.tokenizer.vocab)}" for _ in range(prompt_length)) for _ in range(n)]
    from unmask.tasks.registry import get_task

    math_prompts = [e.prompt for e in get_task("math").examples("test", n, seed=seed)]
    code_prompts = [e.prompt for e in get_task("code").examples("test", n, seed=seed)]
    return [p for pair in zip(math_prompts, code_prompts, strict=True) for p in pair][:n]


def solo_baseline(lm: DiffusionLM, prompt: str, spec: str, max_tokens: int, chat: bool) -> dict[str, float]:
    """Milliseconds for the first request decoded alone by ``generate`` (median of 3), in the same process:
    eager, and with the static step in CUDA graphs (``fused``) on a GPU."""
    from unmask.eval.spec import parse_spec

    settings = parse_spec(spec).generate_kwargs()
    gen_length = -(-max_tokens // 32) * 32
    modes = ["off"] + (["fused"] if lm.device.type == "cuda" else [])
    out = {}
    for mode in modes:
        times = []
        for _ in range(4):
            tic = time.perf_counter()
            lm.generate([prompt], gen_length=gen_length, chat=chat, compile=mode, **settings)
            if lm.device.type == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - tic) * 1e3)
        out[mode] = statistics.median(times[1:])  # the first run captures graphs / warms up
    return out


def offline_baseline(lm: DiffusionLM, texts: list[str], spec: str, max_tokens: int, max_batch: int,
                     chat: bool) -> dict[str, float]:
    """The same requests decoded offline by ``generate(texts, slots=max_batch)`` in the same process (the
    server's engine, fed from a list instead of HTTP): output tok/s and ms per engine step, second of two runs."""
    from unmask.eval.spec import parse_spec

    settings = parse_spec(spec).generate_kwargs()
    gen_length = -(-max_tokens // 32) * 32
    for _ in range(2):
        tic = time.perf_counter()
        out = lm.generate(texts, gen_length=gen_length, chat=chat, slots=max_batch, **settings)
        if lm.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - tic
    tokens = float(out.lengths.clamp(max=max_tokens).sum())
    return {"output_tokens_per_s": tokens / seconds, "step_ms": 1e3 * seconds / max(out.nfe, 1),
            "seconds": seconds, "steps": out.nfe}


def trace_engine(events: list[dict]) -> None:
    """Record every admission and engine step of the server (wall time, rows, rows at a block start) into
    ``events``: where the time between a burst's arrival and its first tokens goes."""
    from unmask.serve.engine import SlotBatch

    admit, step = SlotBatch.admit, SlotBatch.step

    def traced_admit(self, ticket):
        admit(self, ticket)
        events.append({"t": time.perf_counter(), "kind": "admit", "active": self.active})

    def traced_step(self):
        fresh = sum(1 for s in self.engine.slots if s is not None and s.refresh)
        tic = time.perf_counter()
        out = step(self)
        events.append({"t": tic, "kind": "step", "ms": 1e3 * (time.perf_counter() - tic), "active": self.active,
                       "hi": self.engine.hi, "fresh": fresh})
        return out

    SlotBatch.admit, SlotBatch.step = traced_admit, traced_step


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="folder or hub id (default: the embedded model)")
    parser.add_argument("--random-weights", default=None, help="a shape of unmask bench, e.g. llada-8b")
    parser.add_argument("--rates", default="1,2,4,inf", help="request rates per second (inf: all at once)")
    parser.add_argument("-n", "--num-requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompt-length", type=int, default=256, help="random-token prompt length")
    parser.add_argument("--spec", default="threshold:0.9@dual")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", default=None,
                        help="fused | exact | off for the server and the offline baseline (default: fused on CUDA)")
    parser.add_argument("-o", "--out", type=Path, default=None, help="write OUT.json and OUT.md")
    parser.add_argument("--no-warm", action="store_true",
                        help="start the server without capturing every bucket first (unmask serve --no-warm)")
    parser.add_argument("--admission-wait-ms", type=float, default=0.0,
                        help="an idle server's wait for a burst to gather (unmask serve --admission-wait-ms)")
    parser.add_argument("--trace", type=Path, default=None, help="write the server's admissions and steps (JSON)")
    args = parser.parse_args(argv)
    events: list[dict] = []
    if args.trace:
        trace_engine(events)
    rates = [float(r) for r in args.rates.split(",")]
    if args.random_weights:
        lm = random_weight_lm(args.random_weights, args.device, args.dtype)
        name = args.random_weights
    else:
        lm = unmask.load(args.model, device=args.device, dtype=args.dtype, compile=False)
        name = args.model or "unmask-testbed"
    if args.compile is not None or args.random_weights:
        lm.compile = args.compile or ("fused" if lm.device.type == "cuda" else "off")
    settings = ServerSettings(model_name=name, spec=args.spec, default_max_tokens=args.max_tokens)
    app = create_app(lm, settings, max_batch=args.max_batch, max_queue=args.num_requests * 2,
                     warm_prompt_tokens=None if args.no_warm else args.prompt_length,
                     admission_wait_s=args.admission_wait_ms / 1e3)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/v1/completions"
    chat = not isinstance(lm.tokenizer, RandomTokenizer)
    texts = prompts_for(lm, args.num_requests, args.prompt_length, args.seed)
    if chat:  # the testbed answers chat-formatted prompts
        texts = [lm.tokenizer.apply_chat_template([{"role": "user", "content": t}]) for t in texts]
    bodies = [{"model": name, "prompt": t, "max_tokens": args.max_tokens, "stream": True,
               "stream_options": {"include_usage": True}} for t in texts]
    # warm-up: one full burst, so every slot and refresh bucket's graph is captured before the measured runs (the
    # offline baseline is likewise its second run); the cold burst is kept in the record
    cold = asyncio.run(run_rate(url, bodies, math.inf, args.seed))
    print(f"cold burst: {cold['output_tokens_per_s']:.1f} tok/s, TTFC p50 {cold['ttfc_ms_p50']:.0f} ms", flush=True)
    rows = []
    for rate in rates:
        row = asyncio.run(run_rate(url, bodies, rate, args.seed))
        rows.append(row)
        print(f"rate {rate:>5}: {row['completed']}/{row['requests']} ok, {row['request_throughput']:.2f} req/s, "
              f"{row['output_tokens_per_s']:.1f} tok/s, TTFC p50 {row['ttfc_ms_p50']:.0f} ms "
              f"p99 {row['ttfc_ms_p99']:.0f} ms, TPOT p50 {row['tpot_ms_p50']:.1f} ms, "
              f"latency p50 {row['latency_ms_p50']:.0f} ms p99 {row['latency_ms_p99']:.0f} ms, "
              f"forwards/token {row['forwards_per_token']:.2f}", flush=True)
    server.should_exit = True
    if args.trace:
        args.trace.parent.mkdir(parents=True, exist_ok=True)
        args.trace.write_text(json.dumps(events) + "\n")
    thread.join(timeout=30)
    baseline = solo_baseline(lm, texts[0], args.spec, args.max_tokens, chat=False)
    offline = offline_baseline(lm, texts, args.spec, args.max_tokens, args.max_batch, chat=False)
    print(f"offline through generate(slots={args.max_batch}): {offline['output_tokens_per_s']:.1f} tok/s, "
          f"{offline['step_ms']:.1f} ms per step", flush=True)
    for row in rows:
        row["over_offline"] = row["output_tokens_per_s"] / offline["output_tokens_per_s"]
        row["tpot_over_offline_step"] = row["tpot_ms_p50"] / offline["step_ms"]
    for mode, ms in baseline.items():
        print(f"alone through generate ({mode}): {ms:.0f} ms per request", flush=True)
    device = str(lm.device) + (f" ({torch.cuda.get_device_name(lm.device)})" if lm.device.type == "cuda" else "")
    meta = {"command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "model": name, "device": device, "spec": args.spec, "max_batch": args.max_batch,
            "max_tokens": args.max_tokens, "num_requests": args.num_requests, "torch": torch.__version__,
            "alone_ms": baseline, "offline": offline, "compile": lm.compile,
            "cold_burst": {k: cold[k] for k in ("completed", "output_tokens_per_s", "ttfc_ms_p50", "latency_ms_p50")}}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        lines = [f"# unmask serve load test: {name} on {device}", "", f"`{meta['command']}`", "",
                 f"spec `{args.spec}`, max batch {args.max_batch}, {args.num_requests} requests per rate, "
                 f"max_tokens {args.max_tokens}, streaming clients. The first request decoded alone through "
                 "`generate` in the same process (median of 3): "
                 + ", ".join(f"{mode} {ms:.0f} ms" for mode, ms in baseline.items())
                 + f". The same {args.num_requests} "
                 f"requests decoded offline (`generate(slots={args.max_batch})`, same process): "
                 f"{offline['output_tokens_per_s']:.1f} tok/s, {offline['step_ms']:.1f} ms per engine step.", "",
                 "| rate (req/s) | ok | req/s | output tok/s | TTFC p50 / p99 (ms) | TPOT p50 / p99 (ms) | "
                 "latency p50 / p99 (ms) | forwards/token |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['rate']:g} | {r['completed']}/{r['requests']} | {r['request_throughput']:.2f} | "
                         f"{r['output_tokens_per_s']:.1f} | {r['ttfc_ms_p50']:.0f} / {r['ttfc_ms_p99']:.0f} | "
                         f"{r['tpot_ms_p50']:.1f} / {r['tpot_ms_p99']:.1f} | {r['latency_ms_p50']:.0f} / "
                         f"{r['latency_ms_p99']:.0f} | {r['forwards_per_token']:.2f} |")
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
