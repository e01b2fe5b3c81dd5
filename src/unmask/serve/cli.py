"""``unmask serve``: the OpenAI-compatible server on uvicorn, and ``unmask playground``: the same server with its
page opened in a browser (both mounted by ``unmask.cli``)."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import webbrowser
from pathlib import Path

import typer

from unmask.checks import check_float
from unmask.cli_errors import friendly_errors
from unmask.decoding.config import DEFAULT_SPEC
from unmask.eval.cli import QUANTIZE_HELP
from unmask.threads import THREADS_HELP, set_cpu_threads


def check_listen(host: str, port: int) -> None:
    """Fail with one line, before the model loads, where ``host:port`` cannot be listened on (in use, no such
    address)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ValueError(f"--host {host!r} is not an address this machine can listen on ({err.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            raise ValueError(f"cannot listen on {host}:{port}: {err.strerror}") from None


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
MAX_COUNT = 1 << 20  # batch rows, queued requests, tokens


@friendly_errors
def serve_command(
    model: str | None = typer.Option(None, "--model", "-m", help="Folder or hub id; default: the embedded model."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    spec: str = typer.Option(DEFAULT_SPEC, "--spec", "-s",
                             help="Default decoding spec (a request's own fields override it); the fast default, "
                                  "accuracy-safe on the testbeds; for throughput e.g. threshold:0.9@dual."),
    block_length: int = typer.Option(32, "--block-length", help="Default block length."),
    max_tokens: int = typer.Option(256, "--max-tokens", help="max_tokens of a request that gives none."),
    max_batch: int = typer.Option(8, "--max-batch", help="Rows decoding at once (continuous batching)."),
    max_queue: int = typer.Option(64, "--max-queue", help="Waiting requests beyond which the server answers 429."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="UNMASK_API_KEY",
                                       help="Require 'Authorization: Bearer KEY' on /v1. Prefer the environment "
                                            "(UNMASK_API_KEY) or --api-key-file: a command line is readable by every "
                                            "local process."),
    api_key_file: Path | None = typer.Option(None, "--api-key-file",
                                             help="Read the API key from this file (first line)."),
    model_name: str | None = typer.Option(None, "--model-name",
                                          help="The id clients send as 'model' (default: --model or unmask-testbed)."),
    request_timeout: float = typer.Option(600.0, "--request-timeout", help="Seconds before a request is dropped."),
    max_body_mb: float = typer.Option(8.0, "--max-body-mb", help="Request bodies over this many MiB get 413 unread."),
    compile: str = typer.Option("auto", "--compile",
                                help="fused | exact | off | auto (fused CUDA graphs on a GPU, eager on the CPU)."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
    dtype: str | None = typer.Option(None, help="float32, bfloat16, float16 (default: bf16 on GPU, fp32 on CPU)."),
    log_level: str = typer.Option("info", "--log-level", help=f"uvicorn log level: {', '.join(LOG_LEVELS)}."),
    threads: int | None = typer.Option(None, "--threads", help=THREADS_HELP),
    quantize: str | None = typer.Option(None, "--quantize", help=QUANTIZE_HELP),
    warm: bool = typer.Option(True, "--warm/--no-warm",
                              help="On a GPU, capture the default spec's CUDA graphs for every batch size before "
                                   "serving (start-up takes longer; no request waits for a capture)."),
    warm_prompt_tokens: int = typer.Option(256, "--warm-prompt-tokens",
                                           help="Prompt tokens the warmed canvases hold (plus --max-tokens); a "
                                                "longer request grows them once."),
    admission_wait_ms: float = typer.Option(0.0, "--admission-wait-ms",
                                            help="When nothing is decoding, wait up to this long for a burst to "
                                                 "gather (up to --max-batch requests) so that its rows start "
                                                 "together and share each block's refresh (vLLM's scheduler "
                                                 "delay); 0: start at once."),
) -> None:
    """Serve a model over HTTP with OpenAI's completions and chat API (streaming, continuous batching)."""

    import unmask
    from unmask.eval.spec import parse_spec
    from unmask.serve.app import ServerSettings, create_app
    from unmask.serve.engine import MAX_ADMISSION_WAIT_S

    parse_spec(spec)  # a bad default fails now, not at the first request
    for name, value in (("--max-batch", max_batch), ("--max-tokens", max_tokens), ("--block-length", block_length)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    for name, value in (("--max-batch", max_batch), ("--max-tokens", max_tokens), ("--block-length", block_length),
                        ("--max-queue", max_queue)):
        if value > MAX_COUNT:
            raise ValueError(f"{name} must be <= {MAX_COUNT}, got {value}")
    if max_queue < 0:
        raise ValueError(f"--max-queue must be >= 0, got {max_queue}")
    if not 0 <= warm_prompt_tokens <= MAX_COUNT:
        raise ValueError(f"--warm-prompt-tokens must be in 0..{MAX_COUNT}, got {warm_prompt_tokens}")
    if not 0 < port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {port}")
    check_float("--request-timeout", request_timeout, 0, low_open=True)
    check_float("--max-body-mb", max_body_mb, 0, low_open=True)
    check_float("--admission-wait-ms", admission_wait_ms, 0, 1e3 * MAX_ADMISSION_WAIT_S)
    if compile not in ("auto", "fused", "exact", "off"):
        raise ValueError(f"--compile must be one of auto, fused, exact, off; got {compile!r}")
    if log_level.lower() not in LOG_LEVELS:
        raise ValueError(f"--log-level {log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    if api_key_file is not None:
        if api_key is not None:
            raise ValueError("give the API key once: --api-key (or UNMASK_API_KEY) or --api-key-file")
        try:
            api_key = api_key_file.read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError, UnicodeDecodeError) as err:
            raise ValueError(f"--api-key-file {str(api_key_file)!r} cannot be read as a key: {err}") from None
        if not api_key:
            raise ValueError(f"--api-key-file {str(api_key_file)!r} holds no key on its first line")
    elif any(a == "--api-key" or a.startswith("--api-key=") for a in sys.argv):
        print("warning: --api-key on the command line is readable by every local process; prefer UNMASK_API_KEY "
              "or --api-key-file", file=sys.stderr)
    check_listen(host, port)
    set_cpu_threads(device, threads)
    lm = unmask.load(model, device=device, dtype=dtype, compile=None if compile == "auto" else compile,
                     quantize=quantize)
    limit = lm.model.config.max_sequence_length
    for name, value in (("--max-tokens", max_tokens), ("--block-length", block_length)):
        if value > limit:
            raise ValueError(f"{name} {value} exceeds the model's max_sequence_length {limit}")
    name = model_name or (model.rstrip("/").split("/")[-1] if model and os.path.isdir(model) else model)
    settings = ServerSettings(model_name=name or "unmask-testbed", spec=spec, block_length=block_length,
                              default_max_tokens=max_tokens, api_key=api_key, request_timeout_s=request_timeout,
                              max_body_bytes=int(max_body_mb * (1 << 20)))
    app = create_app(lm, settings, max_batch=max_batch, max_queue=max_queue,
                     warm_prompt_tokens=warm_prompt_tokens if warm else None,
                     admission_wait_s=admission_wait_ms / 1e3)
    run_server(app, host, port, log_level.lower())


def page_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def run_server(app: object, host: str, port: int, log_level: str, open_browser: bool = False) -> None:
    """Run ``app`` on uvicorn until interrupted; with ``open_browser`` open the page once the server listens."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
    if open_browser:
        def open_when_started() -> None:
            deadline = time.monotonic() + 60
            while not server.started and time.monotonic() < deadline and not server.should_exit:
                time.sleep(0.1)
            if server.started:
                webbrowser.open(page_url(host, port))

        threading.Thread(target=open_when_started, daemon=True).start()
    server.run()


@friendly_errors
def playground_command(
    model: str | None = typer.Option(None, "--model", "-m", help="Folder or hub id; default: the embedded model."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(7860, help="Port to listen on."),
    spec: str = typer.Option("threshold:0.9@dual", "--spec", "-s",
                             help="The server's default spec (the page picks its own per column)."),
    block_length: int = typer.Option(32, "--block-length", help="Default block length."),
    max_batch: int = typer.Option(8, "--max-batch", help="Rows decoding at once (two columns take two)."),
    browser: bool = typer.Option(True, "--browser/--no-browser", help="Open the page in the default browser."),
    compile: str = typer.Option("auto", "--compile",
                                help="fused | exact | off | auto (fused CUDA graphs on a GPU, eager on the CPU)."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
    dtype: str | None = typer.Option(None, help="float32, bfloat16, float16 (default: bf16 on GPU, fp32 on CPU)."),
    log_level: str = typer.Option("warning", "--log-level", help=f"uvicorn log level: {', '.join(LOG_LEVELS)}."),
    threads: int | None = typer.Option(None, "--threads", help=THREADS_HELP),
    quantize: str | None = typer.Option(None, "--quantize", help=QUANTIZE_HELP),
) -> None:
    """Open the playground: watch a model unmask its answer step by step, two specs side by side.

    The page is ``unmask serve``'s own ``/`` (the same engine and endpoints); this command serves
    the embedded model by default and opens the page in a browser."""
    import unmask
    from unmask.eval.spec import parse_spec
    from unmask.serve.app import ServerSettings, create_app

    parse_spec(spec)
    if not 0 < port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {port}")
    for name, value in (("--max-batch", max_batch), ("--block-length", block_length)):
        if not 1 <= value <= MAX_COUNT:
            raise ValueError(f"{name} must be in [1, {MAX_COUNT}], got {value}")
    if compile not in ("auto", "fused", "exact", "off"):
        raise ValueError(f"--compile must be one of auto, fused, exact, off; got {compile!r}")
    if log_level.lower() not in LOG_LEVELS:
        raise ValueError(f"--log-level {log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    check_listen(host, port)
    set_cpu_threads(device, threads)
    lm = unmask.load(model, device=device, dtype=dtype, compile=None if compile == "auto" else compile,
                     quantize=quantize)
    if block_length > lm.model.config.max_sequence_length:
        raise ValueError(f"--block-length {block_length} exceeds the model's max_sequence_length "
                         f"{lm.model.config.max_sequence_length}")
    name = model.rstrip("/").split("/")[-1] if model and os.path.isdir(model) else model
    settings = ServerSettings(model_name=name or "unmask-testbed", spec=spec, block_length=block_length)
    app = create_app(lm, settings, max_batch=max_batch, max_queue=64)
    print(f"unmask playground: {page_url(host, port)}  (Ctrl+C to stop)", file=sys.stderr)
    run_server(app, host, port, log_level.lower(), open_browser=browser)
