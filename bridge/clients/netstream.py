"""httpx on plain asyncio streams: the network layer of every outbound HTTP client (→ clients).

httpx sends through httpcore, whose default network layer goes through anyio: each read
and write is wrapped in a cancel scope and an exception map, and every time a pooled
connection is looked at (`is_readable`) anyio builds its attribute table and polls the
socket. At 600 `http.post`/s that was a fifth of a worker's CPU (docs/performance.md).
`AsyncioBackend` is httpcore's documented extension point (`network_backend`) done with
asyncio's own streams, mapping errors to httpcore's exceptions as its anyio backend does.

A request's head and body are written by httpcore as two writes; small writes wait for the
end of the event loop's turn and go out as one system call (and one TCP segment). A read,
a large write or a close sends what waits first.
"""

# The methods' `timeout` parameters are httpcore's interface (AsyncNetworkStream/Backend).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx
from httpcore import (
    AsyncNetworkBackend,
    AsyncNetworkStream,
    ConnectError,
    ConnectTimeout,
    ReadError,
    ReadTimeout,
    WriteError,
    WriteTimeout,
)

# Writes up to this size wait for the end of the loop's turn to go out with the next one.
COALESCE_BYTES = 64 * 1024

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


@contextlib.contextmanager
def _mapped(on_timeout: type[Exception], on_error: type[Exception]) -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:
        raise on_timeout(str(exc) or "timed out") from exc
    except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
        raise on_error(str(exc) or type(exc).__name__) from exc


class AsyncioStream(AsyncNetworkStream):
    """One connection: an asyncio reader and writer (TLS upgraded in place)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._waiting: list[bytes] = []
        self._flush_soon: asyncio.Handle | None = None

    def _flush(self) -> None:
        self._flush_soon = None
        if self._waiting:
            data, self._waiting = b"".join(self._waiting), []
            if not self._writer.transport.is_closing():
                self._writer.write(data)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._flush()
        with _mapped(ReadTimeout, ReadError):
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._writer.transport.is_closing():
            raise WriteError("the connection is closed")
        self._waiting.append(buffer)
        if sum(map(len, self._waiting)) <= COALESCE_BYTES:
            if self._flush_soon is None:
                self._flush_soon = asyncio.get_running_loop().call_soon(self._flush)
            return
        if self._flush_soon is not None:
            self._flush_soon.cancel()
        self._flush()
        with _mapped(WriteTimeout, WriteError):
            async with asyncio.timeout(timeout):
                await self._writer.drain()

    async def aclose(self) -> None:
        if self._flush_soon is not None:
            self._flush_soon.cancel()
        with contextlib.suppress(Exception):
            self._flush()
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> AsyncNetworkStream:
        self._flush()
        try:
            # A failed handshake (ssl.SSLError) is an OSError: a ConnectError, as in httpcore.
            with _mapped(ConnectTimeout, ConnectError):
                await self._writer.start_tls(
                    ssl_context, server_hostname=server_hostname, ssl_handshake_timeout=timeout
                )
        except BaseException:
            await self.aclose()
            raise
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # An idle pooled connection is readable only when the server closed it or sent
            # something unasked: the event loop has seen either by the time it is reused.
            reader = self._reader
            return (
                reader.at_eof()
                or bool(getattr(reader, "_buffer", b""))
                or (self._writer.transport.is_closing())
            )
        name = {"client_addr": "sockname", "server_addr": "peername"}.get(info, info)
        if name not in ("ssl_object", "sockname", "peername", "socket"):
            return None
        return self._writer.get_extra_info(name)


class AsyncioBackend(AsyncNetworkBackend):
    """httpcore's network layer on asyncio streams (TCP_NODELAY is asyncio's default)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> AsyncNetworkStream:
        with _mapped(ConnectTimeout, ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None
                )
        _set_options(writer, socket_options)
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> AsyncNetworkStream:
        with _mapped(ConnectTimeout, ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path)
        _set_options(writer, socket_options)
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _set_options(writer: asyncio.StreamWriter, options: Iterable[SocketOption] | None) -> None:
    sock: socket.socket | None = writer.get_extra_info("socket")
    for option in options or ():
        if sock is not None:
            sock.setsockopt(*option)


def http_transport(**options: Any) -> httpx.AsyncHTTPTransport:
    """httpx's transport (its TLS settings, limits, retries: `options`) on AsyncioBackend."""
    transport = httpx.AsyncHTTPTransport(**options)
    pool = transport._pool
    if type(pool) is httpcore.AsyncConnectionPool:  # not a proxy's: that keeps httpx's layer
        pool._network_backend = AsyncioBackend()
    return transport
