"""The paced benchmark's HTTP sink: stamps every POST it receives with its receive time.

    python bench/sink.py PORT

A bare asyncio protocol (uvloop when installed), so that a received action costs its own
core as little as possible: it reads HTTP/1.1 requests on keep-alive connections (a
`content-length` body or a chunked one), takes the first benchmark event id
(`ev-<run>-<n>`) found in the body, records it with `time.time()` taken when the whole
body has arrived, and answers `200 {}`.

`GET /_sink/received?since=N` answers `{"received": [[event_id, epoch_seconds], …]}` from
the N-th record on (so a reader can fetch what is new); `DELETE /_sink/received` forgets
them. Any other request is recorded as a delivery.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from typing import Any

EVENT_ID = re.compile(rb"ev-[0-9a-zA-Z]+-\d+")
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


def _answer(status: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


class Sink(asyncio.Protocol):
    received: list[tuple[str, float]] = []  # shared by every connection of the process

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            request = self._take_request()
            if request is None:
                return
            head, body = request
            self.transport.write(self._handle(head, body))

    def _take_request(self) -> tuple[bytes, bytes] | None:
        """One whole request off the buffer, or None while it is incomplete."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = self.buffer[:end].lower()
        start = end + 4
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            if len(self.buffer) < start + length:
                return None
            body = self.buffer[start : start + length]
            self.buffer = self.buffer[start + length :]
            return head, body
        if b"\r\ntransfer-encoding: chunked" in head:
            return self._take_chunked(head, start)
        self.buffer = self.buffer[start:]
        return head, b""

    def _take_chunked(self, head: bytes, at: int) -> tuple[bytes, bytes] | None:
        parts = []
        while True:
            eol = self.buffer.find(b"\r\n", at)
            if eol < 0:
                return None
            size = int(self.buffer[at:eol].split(b";")[0], 16)
            if len(self.buffer) < eol + 2 + size + 2:
                return None
            parts.append(self.buffer[eol + 2 : eol + 2 + size])
            at = eol + 2 + size + 2
            if size == 0:  # no trailers expected
                self.buffer = self.buffer[at:]
                return head, b"".join(parts)

    def _handle(self, head: bytes, body: bytes) -> bytes:
        if b" /_sink/received" in head[: head.find(b"\r\n")]:
            line = head[: head.find(b"\r\n")].decode()
            if line.startswith("delete"):
                Sink.received.clear()
                return _answer("200 OK", b"{}")
            since = re.search(r"since=(\d+)", line)
            start = int(since.group(1)) if since else 0
            return _answer("200 OK", json.dumps({"received": Sink.received[start:]}).encode())
        found = EVENT_ID.search(body)
        Sink.received.append((found.group().decode() if found else "", time.time()))
        return OK


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, "127.0.0.1", port, backlog=2048)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(int(argv[0])))
    else:
        uvloop.run(serve(int(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
