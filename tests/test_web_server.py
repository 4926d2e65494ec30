"""`bridge web` against slow and hostile clients, over raw loopback sockets: a read timeout
per request, a connection limit, bounded headers, and one answer for a request followed by
junk (issue 12, items 4 and 5)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.helpers import SECRET, signed_headers, wait_for

pytestmark = pytest.mark.slow


@dataclass
class Web:
    port: int
    prefix: str
    redis: redis.Redis
    log: Path

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        # A safety net only: every read below waits for the server to answer or close.
        sock.settimeout(60)
        return sock

    def stored(self) -> int:
        return int(self.redis.zcard(f"{self.prefix}events"))

    def post(self, event_id: str) -> httpx.Response:
        raw = json.dumps({"id": event_id, "type": "a.b"}).encode()
        return httpx.post(
            f"http://127.0.0.1:{self.port}/hooks/demo",
            content=raw,
            headers=signed_headers(raw),
            timeout=30,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(redis_url: str, key_prefix: str, tmp_path: Path, **env: str) -> Iterator[Web]:
    port = _free_port()
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "templates").mkdir(exist_ok=True)
    full = {
        **os.environ,
        "REDIS_URL": redis_url,
        "BRIDGE_KEY_PREFIX": key_prefix,
        "BRIDGE_WEBHOOK_SECRET": SECRET,
        "BRIDGE_RULES_DIR": str(tmp_path / "rules"),
        "BRIDGE_TEMPLATES_DIR": str(tmp_path / "templates"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        **env,
    }
    log_path = tmp_path / "web.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "web"],
            env=full,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    client = redis.Redis.from_url(redis_url)
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=30, what="bridge web on its port")
        yield Web(port, key_prefix, client, log_path)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        client.close()


@pytest.fixture
def web(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Web]:
    yield from _start(
        redis_url,
        key_prefix,
        tmp_path,
        BRIDGE_WEB_READ_TIMEOUT="1",
        BRIDGE_WEB_MAX_CONNECTIONS="20",
    )


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection.

    A close that finds bytes the server did not read (a trickler's, sent just before) is a
    reset, not an end of file; what the server sent before it is still read in full (Linux
    keeps received data readable), so a reset ends the reading like an end of file."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


class Trickle(threading.Thread):
    """Sends one byte at a time, a little apart, until the server closes the connection."""

    def __init__(self, sock: socket.socket, head: bytes, byte: bytes) -> None:
        super().__init__(daemon=True)
        self.sock, self.head, self.byte = sock, head, byte
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        try:
            self.sock.sendall(self.head)
            while not self.stop.wait(0.1):  # ok-sleep: the client's own pace, not a wait
                self.sock.sendall(self.byte)
                self.sent += 1
        except OSError:
            pass  # the server closed the connection


def raw_request(body: bytes, headers: dict[str, str]) -> bytes:
    lines = [b"POST /hooks/demo HTTP/1.1", b"host: 127.0.0.1"]
    lines += [f"{k}: {v}".encode() for k, v in headers.items()]
    lines.append(f"content-length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def assert_timed_out(answer: bytes) -> None:
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert answer.endswith(b"the request did not arrive in full within 1 s")


def test_trickling_and_silent_connections_are_closed_while_others_are_served(web: Web) -> None:
    head_trickle = web.connect()
    headers = Trickle(head_trickle, b"POST /hooks/demo HTTP/1.1\r\nx-slow: ", b"a")
    headers.start()
    blank_trickle = web.connect()  # blank lines, which the parser skips, count too
    blanks = Trickle(blank_trickle, b"", b"\r\n")
    blanks.start()
    # The body's last 200 bytes (JSON's trailing blanks) come one per 0.1 s: 20 s to finish,
    # far past the 1 s timeout even on a loaded machine (10 bytes could finish first).
    raw = json.dumps({"id": "slow-body", "type": "a.b"}).encode() + b" " * 200
    body_trickle = web.connect()
    body = Trickle(body_trickle, raw_request(raw, signed_headers(raw))[:-200], b" ")
    body.start()
    silent = web.connect()  # never sends a byte
    try:
        # Meanwhile, a normal request is served.
        assert web.post("normal").status_code == 202
        for sock in (head_trickle, blank_trickle, body_trickle, silent):
            assert_timed_out(read_to_close(sock))
        assert headers.sent > 0 and blanks.sent > 0 and body.sent > 0
    finally:
        for trickle in (headers, blanks, body):
            trickle.stop.set()
        for sock in (head_trickle, blank_trickle, body_trickle, silent):
            sock.close()
    # The trickled body was never stored: only the normal request's event was.
    assert web.stored() == 1
    assert web.redis.get(f"{web.prefix}event:slow-body") is None
    # The server still serves new connections.
    assert web.post("after").status_code == 202


def test_past_the_connection_limit_requests_get_503_until_connections_free_up(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    for web in _start(
        redis_url,
        key_prefix,
        tmp_path,
        BRIDGE_WEB_READ_TIMEOUT="1",
        BRIDGE_WEB_MAX_CONNECTIONS="3",
    ):
        held = [web.connect() for _ in range(3)]
        try:
            refused = web.post("over-the-limit")
            assert refused.status_code == 503
            assert web.stored() == 0
            # The held connections never send a request: the read timeout closes them.
            for sock in held:
                assert_timed_out(read_to_close(sock))
            assert web.post("under-the-limit").status_code == 202
        finally:
            for sock in held:
                sock.close()


def test_headers_past_64_kib_are_431(web: Web) -> None:
    sock = web.connect()
    try:
        sock.sendall(b"POST /hooks/demo HTTP/1.1\r\n" + b"x-big: " + b"a" * 70_000 + b"\r\n")
        answer = read_to_close(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:80]
    assert answer.endswith(b"the request line and headers are over 65536 bytes")
    assert web.stored() == 0


def test_junk_after_a_valid_request_gets_that_requests_answer(web: Web) -> None:
    raw = json.dumps({"id": "pipelined", "type": "a.b"}).encode()
    sock = web.connect()
    try:
        sock.sendall(raw_request(raw, signed_headers(raw)) + b"\x00\x01 NOT HTTP\r\n\r\n")
        answer = read_to_close(sock)
    finally:
        sock.close()
    # One answer, the request's own, and it agrees with what happened: the event is stored.
    assert answer.startswith(b"HTTP/1.1 202 Accepted\r\n"), answer
    assert answer.count(b"HTTP/1.1") == 1
    assert b"connection: close\r\n" in answer
    assert answer.endswith(b'{"accepted":["pipelined"],"duplicates":[]}')
    assert web.stored() == 1


def test_junk_alone_or_after_an_answered_request_is_400(web: Web) -> None:
    raw = json.dumps({"id": "first", "type": "a.b"}).encode()
    sock = web.connect()
    try:
        sock.sendall(raw_request(raw, signed_headers(raw)))
        first = b""
        while not first.endswith(b'{"accepted":["first"],"duplicates":[]}'):
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 202 Accepted\r\n")
        sock.sendall(b"\x00\x01 NOT HTTP\r\n\r\n")
        answer = read_to_close(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert web.stored() == 1


def test_a_loopback_client_cannot_name_its_own_address_to_the_login_throttle(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """`bridge web` itself (uvicorn's proxy_headers off): X-Forwarded-For from a client
    that is no trusted proxy changes nothing, so spoofed addresses share one count."""
    gen = _start(redis_url, key_prefix, tmp_path, BRIDGE_ADMIN_TOKEN="web-admin-token-0123456789")
    web = next(gen)
    try:
        codes = [
            httpx.get(
                f"http://127.0.0.1:{web.port}/api/rules",
                headers={
                    "authorization": "Bearer wrong-token",
                    "x-forwarded-for": f"203.0.113.{i}",
                },
                timeout=30,
            ).status_code
            for i in range(12)
        ]
        assert codes == [401] * 10 + [429] * 2
    finally:
        gen.close()


def test_uvicorns_own_lines_follow_the_log_format_and_level(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """With BRIDGE_LOG_FORMAT=json every line of `bridge web` is JSON, uvicorn's own
    included (a text line in a JSON stream breaks a log drain's parser)."""
    started = _start(redis_url, key_prefix, tmp_path, BRIDGE_LOG_FORMAT="json")
    web = next(started)
    assert web.post("json-logs").status_code == 202
    started.close()  # stops the server (SIGTERM) and waits for it
    lines = [line for line in web.log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # each line is one JSON object
    messages = [r["message"] for r in records]
    assert any(m.startswith("Started server process") for m in messages), messages
    assert "Shutting down" in messages, messages
    # At BRIDGE_LOG_LEVEL=warning, uvicorn's info lines are left out as the bridge's are.
    (tmp_path / "quiet").mkdir()
    quiet = _start(redis_url, key_prefix, tmp_path / "quiet", BRIDGE_LOG_LEVEL="warning")
    web = next(quiet)
    quiet.close()
    assert "Started server process" not in web.log.read_text()
