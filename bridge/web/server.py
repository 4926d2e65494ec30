"""How `bridge web` serves HTTP: uvicorn's httptools protocol, bounded against slow and
hostile clients (web).

uvicorn closes a connection that idles between requests (`timeout_keep_alive`), but not
one that trickles a request a byte at a time, nor one that never sends a byte; and when a
valid request is followed in the same read by bytes that are not HTTP, it answers 400 at
once, while the valid request goes on to be stored and processed. This protocol gives each
request BRIDGE_WEB_READ_TIMEOUT seconds of reading to arrive in full (408, then the
connection is closed; time in which the server itself does not read it, such as a
pipelined request waiting behind one being answered, does not count), bounds the size of
its request line and headers (431), and answers a request followed by junk with that
request's own response, then closes the connection without reading the junk.
BRIDGE_WEB_MAX_CONNECTIONS bounds the connections one process holds (uvicorn's
`limit_concurrency`: a 503 past it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bridge.settings import Settings

# Request line and headers of one request, at most (what nginx allows by default is 8 KiB
# per line and 32 KiB in all; webhooks need far less).
MAX_HEADER_BYTES = 64 * 1024

_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\n"
_HEADERS_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\n"


class ReadLimits:
    """The read timeout of this process's connections (set once from the settings)."""

    read_timeout: float = 15.0


def configure(settings: Settings) -> None:
    """Take this process's limits from its settings (each `bridge web` process calls it)."""
    ReadLimits.read_timeout = settings.web_read_timeout


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options of `bridge web` that bound what clients can hold."""
    configure(settings)
    return {
        "http": BoundedHttpToolsProtocol,
        # The app decides whose X-Forwarded-For and X-Forwarded-Proto to believe
        # (BRIDGE_TRUSTED_PROXIES, Heroku's router): uvicorn must not replace the
        # connection's address first (it would for any loopback peer by default).
        "proxy_headers": False,
        "limit_concurrency": settings.web_max_connections,
    }


def _plain_response(status_line: bytes, message: str) -> bytes:
    body = message.encode()
    return (
        status_line
        + b"content-type: text/plain; charset=utf-8\r\n"
        + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        + body
    )


class _ObservedFlowControl(FlowControl):
    """uvicorn's read/write flow control, telling its protocol when reading is paused
    and resumed (uvicorn pauses reading for a pipelined request, a large body, ...)."""

    def __init__(
        self,
        transport: asyncio.Transport,
        on_pause: Callable[[], None],
        on_resume: Callable[[], None],
    ) -> None:
        super().__init__(transport)
        self._on_pause = on_pause
        self._on_resume = on_resume

    def pause_reading(self) -> None:
        was_paused = self.read_paused
        super().pause_reading()
        if not was_paused:
            self._on_pause()

    def resume_reading(self) -> None:
        was_paused = self.read_paused
        super().resume_reading()
        if was_paused:
            self._on_resume()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a read timeout per request, a bound on header
    bytes, and no 400 for junk pipelined after a request that is being answered.

    The read timer only counts time in which the server reads the request: while the
    server itself holds reading (reading paused, or the request waits behind an earlier
    one whose response is pending), the client is not late, and a 408 then would also
    drop the earlier request's response. A timer that expires then refuses nothing; the
    request's clock starts again when the server reads it again.
    """

    _read_timer: asyncio.TimerHandle | None = None
    # A request is under way whose clock must start again once the server reads again.
    _read_clock_held = False
    _header_bytes = 0
    _in_headers = False
    _junk = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _ObservedFlowControl(
            transport, self._on_reading_paused, self._restart_held_read_clock
        )
        # A connection that never sends a byte is a request that never arrives.
        self._arm_read_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._junk:
            return
        self._unset_keepalive_if_required()
        if self._read_timer is None and (self.cycle is None or self.cycle.response_complete):
            # Between requests, any byte (even the blank lines a parser skips) starts the
            # clock of the next request.
            self._arm_read_timer()
        try:
            self.parser.feed_data(data)
            if self._in_headers:
                # The whole read went into a request line or headers still unfinished.
                self._header_bytes += len(data)
                if self._header_bytes > MAX_HEADER_BYTES:
                    self._refuse(
                        _HEADERS_TOO_LARGE,
                        f"the request line and headers are over {MAX_HEADER_BYTES} bytes",
                    )
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if not self._junk:  # (a refusal from a callback has answered already)
                self._on_junk()

    def _on_junk(self) -> None:
        """Bytes that are not HTTP. If they follow a request that is still being
        answered, that request gets its own answer and the connection then closes:
        the client must not read a 400 for a request that was stored. Otherwise (the
        junk is the request) a 400."""
        self._cancel_read_timer()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.more_body:
            self._junk = True
            self.flow.pause_reading()
            cycle.keep_alive = False
            return
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    # Parser callbacks: the timer runs from a request's first byte until its last.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0
        if self._read_timer is None:
            self._arm_read_timer()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_read_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._junk:
            # Requests queued behind the junk are neither run nor answered.
            self.pipeline.clear()
        super().on_response_complete()
        if self._junk and not self.transport.is_closing():
            self.transport.close()
        # uvicorn resumed reading above before starting the next pipelined request: only
        # now is no earlier response pending.
        self._restart_held_read_clock()

    # The read clock of the request under way.

    def _server_holds_reading(self) -> bool:
        """Whether the server, not the client, keeps the request under way from arriving:
        reading is paused, or an earlier request's response is still pending (the request
        is queued in the pipeline, or its request line and headers are still arriving)."""
        if self.flow.read_paused or self.pipeline:
            return True
        cycle = self.cycle
        return self._in_headers and cycle is not None and not cycle.response_complete

    def _on_reading_paused(self) -> None:
        if self._read_timer is not None:
            self._read_clock_held = True

    def _restart_held_read_clock(self) -> None:
        """The server reads again: a request held meanwhile gets a full read timeout."""
        if not self._read_clock_held or self._server_holds_reading() or self.transport.is_closing():
            return
        self._arm_read_timer()

    def _arm_read_timer(self) -> None:
        self._cancel_read_timer()
        self._read_clock_held = self._server_holds_reading()
        self._read_timer = self.loop.call_later(ReadLimits.read_timeout, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        self._read_clock_held = False
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self._server_holds_reading():
            # Not the client's delay; never a 408 before an earlier response.
            self._read_clock_held = True
            return
        self._refuse(
            _REQUEST_TIMEOUT,
            f"the request did not arrive in full within {ReadLimits.read_timeout:g} s",
        )

    def _refuse(self, status_line: bytes, message: str) -> None:
        """Answer (unless a response has begun) and close the connection."""
        if self.transport.is_closing():
            return
        self._junk = True
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(_plain_response(status_line, message))
        # The application, if it is still waiting for the body, sees a disconnect; what it
        # answers then is not written.
        self.transport.close()
