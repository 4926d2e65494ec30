"""Floors: what the libraries the bridge is built on cost per event on the pinned core,
before any of the bridge's own work (`--paced-floors`, part of the paced section).

Each floor runs open loop at the paced rates on the core the system under test uses, with
everything else on the other cores, as the bridge does in the paced section:

- `wake-up`: an asyncio echo server (uvloop) answering one small request per event from a
  paced client on the other core: one wake-up, one read and one write; the least any
  process that reacts to a message pays;
- `Starlette 202`: the ingest baseline (bench/baselines.py noop), Starlette on uvicorn
  served as `bridge web` is, answering 202 to the same signed webhooks and doing nothing;
- `Starlette 202 + LPUSH`: the same with one Redis LPUSH of the body per request (the
  least a web that stores before it answers does);
- `httpx POST`: one process that posts the paced benchmark's JSON body to the sink with
  httpx on the bridge's own transport (bridge.clients.netstream), paced by its own timer:
  the least an `http.post` action costs.

The floor of one event of the paced scenario (half of the events match and post) is then
`Starlette 202` + `wake-up` (the worker learns of the job) + half an `httpx POST`: no
Redis at all, no claim, no finish, no rule, no template, no trace; a lower bound for any
design on these libraries. It is printed beside the target and the bridge's own figure.
(The LPUSH baseline writes with redis-py's generic command path, which costs more than
the bridge's own ingest script; it is shown, not counted.)

    python bench/floors.py echo PORT               # the echo server (run pinned)
    python bench/floors.py post URL RATE COUNT     # the paced httpx client (run pinned)
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from bench import loadgen
from bench.procs import cpu_seconds, free_port, wait_until

if TYPE_CHECKING:
    from bench.paced import Setup
    from bench.run import Stack

FLOOR_SECONDS = 10.0  # per rate; a floor's CPU per request settles well within it
ANSWER_TIMEOUT = 10.0  # seconds an echo or a POST may take before the floor's run fails
ECHO_REQUEST = b"x" * 64
POST_BODY = {"event": "ev-floor-000000", "text": "Asset ev-floor-000000 was approved"}


@dataclass
class FloorRow:
    floor: str
    rate: float
    requests: int
    answered: int
    cpu_us_per_request: float
    p99_ms: float


# --------------------------------------------------------------------------- the processes


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _echo_server(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def _post(url: str, rate: float, count: int) -> dict[str, Any]:
    """Post `count` bodies at `rate`/s, one at a time as they fall due; CPU per request."""
    import httpx

    from bridge.clients.netstream import http_transport

    body = json.dumps(POST_BODY).encode()
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    async with httpx.AsyncClient(transport=http_transport(), timeout=ANSWER_TIMEOUT) as client:
        await client.post(url, content=body, headers=headers)  # the connection, opened
        cpu0, start = time.process_time(), time.perf_counter()
        for i in range(count):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            response = await client.post(url, content=body, headers=headers)
            response.raise_for_status()
            latencies.append(time.perf_counter() - due)
        cpu = time.process_time() - cpu0
    return {
        "answered": len(latencies),
        "cpu_us_per_request": cpu / count * 1e6,
        "p99_ms": loadgen.percentile(latencies, 99) * 1000,
    }


def _run_loop(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


# --------------------------------------------------------------------------- the series


async def _echo_open_loop(port: int, rate: float, count: int) -> tuple[int, list[float]]:
    """One request at a time as it falls due, on one connection (an echo answers at once)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies: list[float] = []
    try:
        start = time.perf_counter()
        for i in range(count):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(ECHO_REQUEST)
            # Bounded: an echo that stopped answering ends the run with an error.
            await asyncio.wait_for(reader.readexactly(len(ECHO_REQUEST)), ANSWER_TIMEOUT)
            latencies.append(time.perf_counter() - due)
    finally:
        writer.close()
    return len(latencies), latencies


def series(stack: Stack, sink_url: str, setup: Setup, rates: Sequence[float]) -> list[FloorRow]:
    """Every floor at each of `rates` (the paced section's seconds, FLOOR_SECONDS at most)."""
    from bench.paced import on_cores, open_loop, pin

    rows: list[FloorRow] = []
    seconds = min(setup.seconds, FLOOR_SECONDS)
    log = setup.log

    def pinned(name: str, args: list[str], ready: Callable[[], object]) -> Any:
        with on_cores(setup.cores.sut):
            process = stack.launcher.start(name, args)
        if setup.cores.pinned:
            pin(process.pid, setup.cores.sut)
        wait_until(lambda: process.check() or ready(), 30, name)
        return process

    # wake-up: the echo server on the pinned core, the client here.
    port = free_port()
    echo = pinned("floor-echo", ["bench/floors.py", "echo", str(port)], lambda: _open(port))
    try:
        for rate in rates:
            count = max(1, round(rate * seconds))
            cpu0 = cpu_seconds(echo.pid)
            answered, latencies = asyncio.run(_echo_open_loop(port, rate, count))
            cpu = cpu_seconds(echo.pid) - cpu0
            rows.append(_row("wake-up (echo)", rate, count, answered, cpu, latencies))
            log(f"floors: {rows[-1].floor} {rate:g}/s: {rows[-1].cpu_us_per_request:.0f} µs")
    finally:
        echo.stop()

    # The web baselines, with the paced section's own signed webhooks.
    for kind, name in (("noop", "Starlette 202"), ("lpush", "Starlette 202 + LPUSH")):
        port = free_port()
        args = ["bench/baselines.py", kind, str(port), stack.redis_server.url]
        web = pinned(f"floor-{kind}", args, lambda port=port: _open(port))  # type: ignore[misc]
        try:
            for rate in rates:
                count = max(1, round(rate * seconds))
                requests = loadgen.build_requests("127.0.0.1", port, setup.secret, count)
                cpu0 = cpu_seconds(web.pid)
                run = asyncio.run(
                    open_loop(
                        "127.0.0.1", port, requests, rate, max_connections=setup.max_connections
                    )
                )
                cpu = cpu_seconds(web.pid) - cpu0
                acks = [lat for status, lat in run.acks.values() if 200 <= status < 300]
                rows.append(_row(name, rate, count, len(acks), cpu, acks))
                log(f"floors: {name} {rate:g}/s: {rows[-1].cpu_us_per_request:.0f} µs")
        finally:
            web.stop()

    # httpx: its own paced loop on the pinned core, posting to the sink.
    for rate in rates:
        count = max(1, round(rate * seconds))
        args = ["bench/floors.py", "post", sink_url + "/sink", str(rate), str(count)]
        with on_cores(setup.cores.sut):
            poster = stack.launcher.start("floor-post", args)
        if setup.cores.pinned:
            pin(poster.pid, setup.cores.sut)
        try:
            poster.popen.wait(seconds + 60)  # bounded: a stuck client is stopped below
        except subprocess.TimeoutExpired:
            pass  # no figures: reported below
        finally:
            poster.stop()
        found = _last_json(poster.log.read_text(errors="replace"))
        if found is None:
            log(f"floors: httpx POST {rate:g}/s gave no figures (see {poster.log})")
            continue
        rows.append(
            FloorRow(
                "httpx POST",
                rate,
                count,
                int(found["answered"]),
                float(found["cpu_us_per_request"]),
                float(found["p99_ms"]),
            )
        )
        log(f"floors: httpx POST {rate:g}/s: {rows[-1].cpu_us_per_request:.0f} µs")
    return rows


def _row(
    floor: str, rate: float, count: int, answered: int, cpu: float, latencies: Sequence[float]
) -> FloorRow:
    p99 = loadgen.percentile(list(latencies), 99) * 1000 if latencies else float("nan")
    return FloorRow(floor, rate, count, answered, cpu / count * 1e6, p99)


def _open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                found: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            return found
    return None


# --------------------------------------------------------------------------- the report


def event_floor(rows: Sequence[FloorRow], rate: float) -> float | None:
    """The floor of one paced event at `rate` in µs (module doc), None when a part is missing."""
    at = {r.floor: r.cpu_us_per_request for r in rows if r.rate == rate}
    parts = ("Starlette 202", "wake-up (echo)", "httpx POST")
    if not all(p in at for p in parts):
        return None
    return at[parts[0]] + at[parts[1]] + at[parts[2]] / 2


def table(
    rows: Sequence[FloorRow], measured: dict[float, float], target_us: float
) -> list[list[str]]:
    """One line per floor and rate, then the event floor against the target and the
    bridge's CPU per event measured at the same rate (`measured`, µs, when it ran)."""
    out = [["floor", "rate/s", "requests", "answered", "CPU µs/request", "p99 ms"]]
    for r in rows:
        out.append(
            [
                r.floor,
                f"{r.rate:g}",
                f"{r.requests:,}",
                f"{r.answered:,}",
                f"{r.cpu_us_per_request:,.0f}",
                f"{r.p99_ms:.1f}",
            ]
        )
    for rate in sorted({r.rate for r in rows}):
        floor = event_floor(rows, rate)
        if floor is None:
            continue
        bridge = measured.get(rate)
        beside = f"; lytbridge measured {bridge:,.0f} µs" if bridge is not None else ""
        out.append(
            [
                f"event floor at {rate:g}/s (Starlette 202 + wake-up + ½ POST): {floor:,.0f} µs, "
                f"target {target_us:,.0f} µs{beside}",
                "",
                "",
                "",
                "",
                "",
            ]
        )
    return out


def as_json(rows: Sequence[FloorRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


def main(argv: Sequence[str]) -> int:
    if len(argv) >= 2 and argv[0] == "echo":
        _run_loop(_echo_server(int(argv[1])))
        return 0
    if len(argv) >= 4 and argv[0] == "post":
        figures = _run_loop(_post(argv[1], float(argv[2]), int(argv[3])))
        print(json.dumps(figures), flush=True)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
