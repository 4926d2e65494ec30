"""Serve an ASGI app with uvicorn in a background thread on 127.0.0.1 (sandboxes, tests)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ThreadedServer:
    """A uvicorn server running in a daemon thread; `url` is its base URL."""

    def __init__(self, app: Any, port: int = 0, host: str = "127.0.0.1") -> None:
        self.port = port or free_port()
        self.host = host
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            # As `bridge web`: the app, not uvicorn, decides whose forwarded headers count.
            proxy_headers=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)  # waiting for a thread we own to bind; bounded by the deadline

    def stop(self, timeout: float = 10.0, grace: float = 1.0) -> None:
        """Stop serving; requests still open after `grace` seconds are cut off."""
        self._server.should_exit = True
        if self._thread.ident is None:
            return  # never started
        self._thread.join(grace)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)


def stop_all(servers: Iterable[ThreadedServer]) -> None:
    """Stop several servers side by side: each is told to stop before any is waited for."""
    servers = list(servers)
    for server in servers:
        server._server.should_exit = True
    for server in servers:
        server.stop()


@contextmanager
def serve_in_thread(app: Any, port: int = 0) -> Iterator[ThreadedServer]:
    """Run `app` on 127.0.0.1 for the duration of the block."""
    server = ThreadedServer(app, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()
