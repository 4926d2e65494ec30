"""The read timeout of `bridge web` (BoundedHttpToolsProtocol) and pipelined requests: a
request queued behind one that is still being answered is not late while the server itself
is not reading it, and no 408 is ever written while an earlier response is pending. A
uvicorn server in a thread, a raw loopback socket, and a route that answers only when the
test says so; nothing waits on the clock but the server's own read timer."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bridge.web.server import BoundedHttpToolsProtocol, ReadLimits

# A safety net only: every wait below ends when the server acts, long before this.
SAFETY_NET = 60.0


@dataclass
class Served:
    port: int
    release_slow: threading.Event
    timer_expired: threading.Event

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.settimeout(SAFETY_NET)
        return sock

    def wait_for_expired_timer(self) -> None:
        assert self.timer_expired.wait(SAFETY_NET), "the read timer never expired"


def _app(release_slow: threading.Event) -> Starlette:
    async def slow(request: Request) -> PlainTextResponse:
        await asyncio.to_thread(release_slow.wait, SAFETY_NET)
        return PlainTextResponse("slow done")

    async def x(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    return Starlette(routes=[Route("/slow", slow), Route("/x", x, methods=["POST"])])


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.setattr(ReadLimits, "read_timeout", 0.3)
    timer_expired = threading.Event()
    original = BoundedHttpToolsProtocol._read_timed_out

    def observed(self: BoundedHttpToolsProtocol) -> None:
        original(self)
        timer_expired.set()

    monkeypatch.setattr(BoundedHttpToolsProtocol, "_read_timed_out", observed)

    release_slow = threading.Event()
    # The listening socket exists before the server thread starts: a client can connect
    # at once, with no wait for the server to come up.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = int(listener.getsockname()[1])
    config = uvicorn.Config(
        _app(release_slow),
        host="127.0.0.1",
        port=port,
        http=BoundedHttpToolsProtocol,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        yield Served(port, release_slow, timer_expired)
    finally:
        release_slow.set()
        server.should_exit = True
        thread.join(SAFETY_NET)
        listener.close()


def _read_to_close(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pytest.fail(f"the connection was reset after {b''.join(chunks)!r}")
    return b"".join(chunks)


def _responses(raw: bytes) -> list[tuple[bytes, bytes]]:
    """(status line, body) of each response in `raw` (bodies by content-length)."""
    found = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"an incomplete response: {raw!r}"
        lines = head.split(b"\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        found.append((lines[0], rest[:length]))
        raw = rest[length:]
    return found


SLOW = b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"
POST_HEAD = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"


def test_pipelined_request_behind_a_slow_one_is_not_timed_out(served: Served) -> None:
    """Request 2 is queued (reading paused) with half its body while request 1 is being
    answered: its timer expires then, yet both requests are answered in order."""
    with served.connect() as sock:
        sock.sendall(SLOW + POST_HEAD + b"12345")
        served.wait_for_expired_timer()
        # The rest waits in the socket until the server reads again; its clock starts then.
        sock.sendall(b"67890")
        served.release_slow.set()
        answers = _responses(_read_to_close(sock))

    assert answers == [(b"HTTP/1.1 200 OK", b"slow done"), (b"HTTP/1.1 200 OK", b"10")]


def test_request_whose_headers_trail_a_slow_one_is_not_timed_out(served: Served) -> None:
    """Request 2's headers are incomplete while request 1 is being answered (the server
    still reads): its timer expires, but a 408 then would drop request 1's answer."""
    with served.connect() as sock:
        sock.sendall(SLOW + b"POST /x HTTP/1.1\r\nHost: t\r\n")
        served.wait_for_expired_timer()
        sock.sendall(POST_HEAD.removeprefix(b"POST /x HTTP/1.1\r\nHost: t\r\n") + b"1234567890")
        served.release_slow.set()
        answers = _responses(_read_to_close(sock))

    assert answers == [(b"HTTP/1.1 200 OK", b"slow done"), (b"HTTP/1.1 200 OK", b"10")]


def test_pipelined_request_never_completed_gets_408_after_the_earlier_answer(
    served: Served,
) -> None:
    """The clock of the queued request starts again when the server reads again: a client
    that never sends the rest gets request 1's answer, then a 408."""
    with served.connect() as sock:
        sock.sendall(SLOW + POST_HEAD + b"12345")
        served.wait_for_expired_timer()
        served.release_slow.set()
        answers = _responses(_read_to_close(sock))

    assert [status for status, _ in answers] == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 408 Request Timeout",
    ]
    assert answers[0][1] == b"slow done"
