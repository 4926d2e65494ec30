"""An outbound request over loopback, as `http.post` sends it, finds every module it looks
for: httpcore asks sniffio which async library runs on every request, and a module that
is missing is searched for on sys.path again each time (a tenth of a worker's CPU per
http.post, docs/performance.md)."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import pytest

from bridge.clients.outbound import guarded_client


async def _answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # the client closed its connection
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            await writer.drain()
    finally:
        writer.close()


async def test_an_outbound_request_imports_nothing_it_cannot_find(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await asyncio.start_server(_answer_ok, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = guarded_client(["127.0.0.1"])
    missing: list[str] = []
    real_import = builtins.__import__

    def spying_import(name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return real_import(name, *args, **kwargs)
        except ImportError:
            missing.append(name)
            raise

    try:
        first = await client.post(f"http://127.0.0.1:{port}/sink", json={"n": 0})
        assert first.status_code == 200  # the client's own first-use imports are done
        monkeypatch.setattr(builtins, "__import__", spying_import)
        for n in range(1, 4):
            response = await client.post(f"http://127.0.0.1:{port}/sink", json={"n": n})
            assert response.status_code == 200
        assert missing == []
    finally:
        monkeypatch.undo()
        await client.aclose()
        server.close()
        await server.wait_closed()
