"""A bounded asyncio load generator for signed webhooks over loopback.

Requests are built and signed (Standard Webhooks) before the clock starts. `concurrency`
connections each send one request at a time (a closed loop) over keep-alive HTTP/1.1, or
paced at `rate` requests per second (an open loop, still at most `concurrency` in flight).
With `settle`, a connection sends its next request only once `settle` says the previous
event is done (a closed loop end to end: at most `concurrency` events in flight anywhere).
Every run is bounded by its request count and by a deadline.

Two clients: `raw` writes the pre-serialized request bytes on an asyncio stream and
parses only the status line and content-length (the least CPU per request, which matters
when the load generator shares 2 cores with the server), and `aiohttp`.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.ingress.signatures import sign_standard


@dataclass(frozen=True)
class Request:
    event_id: str
    path: str
    headers: dict[str, str]
    body: bytes
    raw: bytes  # the whole HTTP/1.1 request, for the raw client


@dataclass
class Result:
    event_id: str
    status: int
    sent_at: float  # wall clock (time.time()) when the request was written
    latency: float  # seconds until the whole response was read


@dataclass
class Run:
    """The results of one load run and its wall time."""

    results: list[Result] = field(default_factory=list)
    elapsed: float = 0.0
    errors: int = 0
    timed_out: bool = False

    @property
    def ok(self) -> list[Result]:
        return [r for r in self.results if 200 <= r.status < 300]

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        return counts

    def throughput(self) -> float:
        return len(self.ok) / self.elapsed if self.elapsed else 0.0

    def latency_ms(self, q: float) -> float:
        return percentile([r.latency for r in self.ok], q) * 1000


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def asset_event(event_id: str, approved: bool) -> dict[str, Any]:
    """The benchmark scenario's event: half of them approved (set by the caller)."""
    return {
        "id": event_id,
        "type": "lytho.asset.updated",
        "subject": f"asset/{event_id}",
        "data": {
            "id": event_id,
            "status": "approved" if approved else "in_review",
            "name": "Spring campaign hero banner",
            "tags": ["spring", "hero"],
            "fileName": "hero-banner-1200x628.png",
        },
    }


def build_requests(
    host: str, port: int, secret: str, count: int, *, source: str = "bench", tag: str = ""
) -> list[Request]:
    """`count` signed webhook requests with unique event ids; every second one approved."""
    run = tag or uuid.uuid4().hex[:8]
    stamp = int(time.time())
    out = []
    for i in range(count):
        event_id = f"ev-{run}-{i:06d}"
        body = json.dumps(asset_event(event_id, approved=i % 2 == 0)).encode()
        msg_id = f"msg_{run}_{i:06d}"
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign_standard(secret, msg_id, stamp, body),
        }
        path = f"/hooks/{source}"
        head = f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        out.append(Request(event_id, path, headers, body, head.encode() + body))
    return out


class _Feed:
    """Hands out requests to the connections, pacing them when a rate is set."""

    def __init__(self, requests: Sequence[Request], rate: float | None) -> None:
        self._it: Iterator[tuple[int, Request]] = iter(enumerate(requests))
        self.rate = rate
        self.start = time.perf_counter()

    async def next(self) -> Request | None:
        item = next(self._it, None)
        if item is None:
            return None
        index, request = item
        if self.rate:
            delay = self.start + index / self.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        return request


Settle = Callable[[Request], Awaitable[None]]


async def _raw_connection(
    host: str, port: int, feed: _Feed, run: Run, request_timeout: float, settle: Settle | None
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while (request := await feed.next()) is not None:
            if writer is None or reader is None:
                reader, writer = await asyncio.open_connection(host, port)
            sent_at = time.time()
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(request_timeout):
                    writer.write(request.raw)
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    lowered = head.lower()
                    at = lowered.find(b"\r\ncontent-length:")
                    if at >= 0:
                        end = lowered.index(b"\r\n", at + 2)
                        length = int(lowered[at + 17 : end])
                    if length:
                        await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                run.errors += 1
                writer.close()
                reader = writer = None
                continue
            status = int(head[9:12])
            run.results.append(Result(request.event_id, status, sent_at, time.perf_counter() - t0))
            if b"\r\nconnection: close" in lowered:
                writer.close()
                reader = writer = None
            if settle is not None and 200 <= status < 300:
                try:
                    await asyncio.wait_for(settle(request), request_timeout)
                except TimeoutError:
                    run.errors += 1
    finally:
        if writer is not None:
            writer.close()


async def _aiohttp_connection(
    session: Any, base: str, feed: _Feed, run: Run, request_timeout: float
) -> None:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=request_timeout)
    while (request := await feed.next()) is not None:
        sent_at = time.time()
        t0 = time.perf_counter()
        try:
            async with session.post(
                base + request.path, data=request.body, headers=request.headers, timeout=timeout
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            run.errors += 1
            continue
        run.results.append(Result(request.event_id, status, sent_at, time.perf_counter() - t0))


async def drive(
    host: str,
    port: int,
    requests: Sequence[Request],
    *,
    concurrency: int,
    rate: float | None = None,
    deadline: float = 120.0,
    request_timeout: float = 10.0,
    client: str = "raw",
    settle: Settle | None = None,
) -> Run:
    """Send every request (or stop at `deadline` seconds); the results and the wall time."""
    run = Run()
    feed = _Feed(requests, rate)
    start = time.perf_counter()
    feed.start = start
    session = None
    if client == "aiohttp":
        import aiohttp

        if settle is not None:
            raise ValueError("settle works with the raw client only")

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, force_close=False)
        )
        tasks = [
            asyncio.create_task(
                _aiohttp_connection(session, f"http://{host}:{port}", feed, run, request_timeout)
            )
            for _ in range(concurrency)
        ]
    else:
        tasks = [
            asyncio.create_task(_raw_connection(host, port, feed, run, request_timeout, settle))
            for _ in range(concurrency)
        ]
    try:
        done, pending = await asyncio.wait(tasks, timeout=deadline)
        for task in pending:
            task.cancel()
        if pending:
            run.timed_out = True
            await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                run.errors += 1
    finally:
        if session is not None:
            await session.close()
    run.elapsed = time.perf_counter() - start
    return run
