"""A real server on a free port of 127.0.0.1 (uvicorn in a thread, the tiny model) and clients for it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import http.client
import json
from dataclasses import dataclass
from urllib.parse import urlparse

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(lm, **settings) -> Iterator[str]:
    """Serve ``lm`` with ``ServerConfig(**settings)``; yields the base URL; stops the server afterwards."""
    import uvicorn

    from hindsight.serve import ServerConfig, create_app

    app = create_app(ServerConfig(**settings), lm)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="package")
def lm():
    from hindsight.lm.toy import tiny_model

    return tiny_model()


@pytest.fixture(scope="package")
def base_url(lm) -> Iterator[str]:
    with running(lm, max_batch_rows=32, max_queue=256, method_workers=2) as url:
        yield url


@pytest.fixture()
def client(base_url):
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    def json(self):
        return json.loads(self.text)


class Raw:
    """Plain HTTP (the stdlib client), for what the openai client would refuse to send."""

    def __init__(self, base_url: str) -> None:
        u = urlparse(base_url)
        self.host, self.port = u.hostname, u.port

    def connect(self, timeout: float = 120) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body=None, headers: dict[str, str] | None = None) -> Reply:
        conn = self.connect()
        try:
            if body is not None and not isinstance(body, (bytes, str)):
                body = json.dumps(body)
            conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
            r = conn.getresponse()
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode())
        finally:
            conn.close()

    def get(self, path: str, **kw) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body, **kw) -> Reply:
        return self.request("POST", path, body, **kw)


@pytest.fixture()
def raw(base_url) -> Raw:
    return Raw(base_url)


def metric(raw: Raw, name: str) -> float:
    """One unlabelled sample's value from /metrics (0 when it is absent)."""
    for line in raw.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for(cond, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False
