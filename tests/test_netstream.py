"""httpx on asyncio streams (bridge/clients/netstream.py), over loopback: keep-alive, a
connection the server closed, TLS with a real handshake, timeouts and refusals surface as
the httpx errors the clients handle."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpcore
import httpx
import pytest

from bridge.clients.netstream import AsyncioBackend, http_transport
from bridge.clients.outbound import guarded_client
from bridge.operate.context import build_context
from bridge.settings import Settings

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A loopback HTTP/1.1 server answering each request `200 {"n": <its count>}`."""

    def __init__(self, *, close_after_answer: bool = False, silent: bool = False) -> None:
        self.connections = 0
        self.bodies: list[bytes] = []
        self.close_after_answer = close_after_answer
        self.silent = silent
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.handlers: list[asyncio.Task[None]] = []

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        """Stop listening, close every connection and wait for their handlers to end (a
        connection left open would warn when collected, in whichever test runs then)."""
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        self.handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.bodies.append(await reader.readexactly(length))
                if self.silent:
                    await reader.read()  # never answer; wait for the client to go
                    return
                body = b'{"n": %d}' % len(self.bodies)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                if self.close_after_answer:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for 127.0.0.1 (openssl), and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    yield cert, key


async def test_requests_go_over_one_kept_alive_connection() -> None:
    server = Server()
    port = await server.start()
    async with httpx.AsyncClient(transport=http_transport()) as client:
        for n in (1, 2, 3):
            response = await client.post(f"http://127.0.0.1:{port}/x", json={"i": n})
            assert (response.status_code, response.json()) == (200, {"n": n})
    await server.stop()
    assert server.bodies == [b'{"i":1}', b'{"i":2}', b'{"i":3}']
    assert server.connections == 1


async def test_a_connection_the_server_closed_is_seen_and_replaced() -> None:
    server = Server(close_after_answer=True)
    port = await server.start()
    transport = http_transport()
    async with httpx.AsyncClient(transport=transport) as client:
        first = await client.get(f"http://127.0.0.1:{port}/a")
        assert first.json() == {"n": 1}
        pool = transport._pool

        def seen() -> bool:  # the pool dropped it, or it reports itself expired
            return not pool.connections or pool.connections[0].has_expired()

        for _ in range(10_000):  # the event loop's turns until the close reaches the stream
            if seen():
                break
            await asyncio.sleep(0.001)  # ok-sleep: a loop turn, bounded by the count
        assert seen()  # an idle connection the server closed is readable: not reused
        second = await client.get(f"http://127.0.0.1:{port}/b")
        assert second.json() == {"n": 2}
    await server.stop()
    assert server.connections == 2


async def test_tls_verifies_the_server_and_refuses_a_certificate_it_does_not_trust(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    server = Server()
    port = await server.start(served)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(transport=http_transport(verify=trusting)) as client:
        response = await client.post(f"https://127.0.0.1:{port}/x", json={"i": 1})
        assert response.json() == {"n": 1}
        stream = response.extensions["network_stream"]
        assert stream.get_extra_info("ssl_object").version().startswith("TLS")
    async with httpx.AsyncClient(transport=http_transport()) as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(f"https://127.0.0.1:{port}/x")
    await server.stop()
    assert server.bodies == [b'{"i":1}']


async def test_a_silent_server_times_out_and_a_closed_port_refuses() -> None:
    server = Server(silent=True)
    port = await server.start()
    async with httpx.AsyncClient(transport=http_transport(), timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"http://127.0.0.1:{port}/x", json={"i": 1})
    await server.stop()
    async with httpx.AsyncClient(transport=http_transport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/x")
    assert server.bodies == [b'{"i":1}']


async def test_the_outbound_clients_use_it() -> None:
    guarded = guarded_client(["127.0.0.1"])
    guard = guarded._transport
    assert isinstance(guard.inner._pool._network_backend, AsyncioBackend)  # type: ignore[attr-defined]
    context = await build_context(Settings.from_env({}), load_rules=False)
    try:
        pool = context.http._transport._pool  # type: ignore[attr-defined]
        assert isinstance(pool, httpcore.AsyncConnectionPool)
        assert isinstance(pool._network_backend, AsyncioBackend)
    finally:
        await guarded.aclose()
        await context.close()
