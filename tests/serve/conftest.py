"""A real ``unmask serve`` (uvicorn on a free port, in a thread) around the embedded model."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn

import unmask
from unmask.api import DiffusionLM
from unmask.serve.app import ServerSettings, create_app

API_KEY = "test-key"


@dataclass
class RunningServer:
    url: str
    lm: DiffusionLM
    app: object

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(lm: DiffusionLM, settings: ServerSettings, **kwargs) -> tuple[uvicorn.Server, threading.Thread, str]:
    app = create_app(lm, settings, **kwargs)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def lm() -> DiffusionLM:
    return unmask.load()


@pytest.fixture(scope="module")
def server(lm) -> Iterator[RunningServer]:
    settings = ServerSettings(spec="threshold:0.9@dual", default_max_tokens=64, api_key=API_KEY)
    uv, thread, url = start_server(lm, settings, max_batch=8, max_queue=64)
    yield RunningServer(url, lm, uv.config.app)
    uv.should_exit = True
    thread.join(timeout=30)
