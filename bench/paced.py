"""The `paced` section: open-loop load at fixed rates, the system under test on one core.

Request i is due at start + i/rate whatever happened to the earlier ones: the load
generator takes a free keep-alive connection for it, or opens one more (up to
`--paced-connections`, default 1,000; a request that finds them all busy waits for one and
is counted as held back). Latency runs from the request's due time to the moment the
action's receiver got the message (the sink's or the Slack sandbox's `time.time()`), so a
system that falls behind is charged for it. Half of the events match the rule.

With two cores or more, the system under test (bridge web, its workers and their
children, or Node-RED) runs on the last core (`taskset`), and the load generator (this
process), Redis, the sink and the Slack sandbox on the others.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from bench import floors, loadgen, nodered
from bench.procs import Process, children, cpu_seconds, free_port, http_ok, wait_until

if TYPE_CHECKING:
    from bench.run import Stack

RULE_ID = "bench-asset-approved"
HTTP_RULE = """\
id: {rule_id}
description: "POST each approved asset to the sink (paced benchmark)"
on: lytho.asset.updated
when:
  - {{path: data.status, eq: approved}}
actions:
  - id: notify
    uses: http.post
    with:
      url: "{url}"
      json: {{event: "{{{{ event.id }}}}", text: "Asset {{{{ event.id }}}} was approved"}}
"""
SLACK_TEXT_ID = re.compile(r"Asset (\S+) was approved")
MAX_P99_MS = 100.0
LOST_AFTER = 10.0  # seconds after the last request was due
# A run whose load generator handed requests over later than this (its own core busy, e.g.
# with other tenants) measured the load side, not the system under test: it runs once more.
MAX_SEND_LAG_MS = 20.0
TARGETS = {
    "capacity_eps": 1500,
    "cpu_us_per_event": 500,
    "redis_cmds_per_event": 15,
    "redis_cpu_us_per_event": 100,
    "low_rate_p99_ms": 15,
    "low_rate_core_pct": 5,
}

Log = Callable[[str], None]


# --------------------------------------------------------------------------- cores


@dataclass(frozen=True)
class Cores:
    sut: set[int]  # the system under test
    load: set[int]  # everything else: load generator, Redis, sink, sandbox

    @property
    def pinned(self) -> bool:
        return bool(self.load)


def split_cores() -> Cores:
    """The last core for the system under test, the others for the rest (if there are)."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return Cores(set(available), set())
    return Cores({available[-1]}, set(available[:-1]))


def _cpus(cores: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cores))


def pin(pid: int, cores: set[int]) -> None:
    """Every thread of `pid` and of its descendants onto `cores` (taskset -a -p)."""
    taskset = shutil.which("taskset")
    for current in [pid, *_descendants(pid)]:
        if taskset is not None:
            subprocess.run(
                [taskset, "-a", "-p", "-c", _cpus(cores), str(current)],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            continue
        with contextlib.suppress(OSError):  # what taskset -a does, without util-linux
            for task in Path(f"/proc/{current}/task").iterdir():
                os.sched_setaffinity(int(task.name), cores)


def _descendants(pid: int) -> list[int]:
    found, pending = [], children(pid)
    while pending:
        current = pending.pop()
        found.append(current)
        pending += children(current)
    return found


def affinity(pid: int) -> str:
    try:
        return _cpus(os.sched_getaffinity(pid))
    except OSError:
        return "?"


@contextlib.contextmanager
def on_cores(cores: set[int]) -> Iterator[None]:
    """Run the block (and whatever it starts, which inherits it) on `cores`."""
    before = os.sched_getaffinity(0)
    if cores:
        os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def core_times(cores: set[int]) -> tuple[int, int]:
    """(busy, total) jiffies of `cores` from /proc/stat."""
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]
    return busy, total


def busy_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return 100 * (after[0] - before[0]) / total if total else float("nan")


# --------------------------------------------------------------------------- open loop


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, raw: bytes) -> tuple[int, bool]:
        """Send one request, read its whole answer: (status, whether the server closes)."""
        self.writer.write(raw)
        head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            length = int(head[at + 17 : head.index(b"\r\n", at + 2)])
            if length:
                await self.reader.readexactly(length)
        elif b"\r\ntransfer-encoding: chunked" in head:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        return int(head[9:12]), b"\r\nconnection: close" in head


@dataclass
class OpenLoopRun:
    due: dict[str, float] = field(default_factory=dict)  # event id -> wall clock due time
    acks: dict[str, tuple[int, float]] = field(default_factory=dict)  # status, s from due
    errors: int = 0  # connection errors and acks still missing at the deadline
    held_back: int = 0  # requests that found every allowed connection busy
    connections: int = 0  # connections opened
    last_due: float = 0.0  # wall clock
    send_lag: list[float] = field(default_factory=list)  # s from due to taken up


async def open_loop(
    host: str,
    port: int,
    requests: Sequence[loadgen.Request],
    rate: float,
    *,
    max_connections: int,
    ack_deadline: float = LOST_AFTER,
) -> OpenLoopRun:
    """Send request i at start + i/rate on a free connection; wait for the acks until
    `ack_deadline` seconds after the last was due."""
    run = OpenLoopRun()
    free: asyncio.Queue[_Connection | None] = asyncio.Queue()  # None: a slot to open anew
    tasks: set[asyncio.Task[None]] = set()
    opened = 0

    async def send(conn: _Connection | None, request: loadgen.Request, due: float) -> None:
        try:
            if conn is None:
                conn = _Connection(*await asyncio.open_connection(host, port))
                run.connections += 1
            status, closing = await conn.exchange(request.raw)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            run.errors += 1
            if conn is not None:
                conn.writer.close()
            free.put_nowait(None)
            return
        except asyncio.CancelledError:  # no answer by the deadline
            if conn is not None:
                conn.writer.close()
            raise
        run.acks[request.event_id] = (status, time.perf_counter() - due)
        if closing:
            conn.writer.close()
        free.put_nowait(None if closing else conn)

    start, wall = time.perf_counter(), time.time()
    for i, request in enumerate(requests):
        offset = i / rate
        delay = start + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        run.due[request.event_id] = wall + offset
        # The generator's own lateness; waiting for a connection (held back) is the SUT's.
        run.send_lag.append(time.perf_counter() - start - offset)
        if not free.empty():
            conn = free.get_nowait()
        elif opened < max_connections:
            opened += 1
            conn = None
        else:
            run.held_back += 1
            conn = await free.get()
        task = asyncio.create_task(send(conn, request, start + offset))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    run.last_due = wall + (len(requests) - 1) / rate
    remaining = start + (len(requests) - 1) / rate + ack_deadline - time.perf_counter()
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=max(0.0, remaining))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        run.errors += len(pending)
    while not free.empty():
        conn = free.get_nowait()
        if conn is not None:
            conn.writer.close()
    return run


# --------------------------------------------------------------------------- receivers


class SinkReceiver:
    """The bodies `bench/sink.py` received, with their receive times."""

    def __init__(self, url: str) -> None:
        self.url = url + "/_sink/received"
        self.records: list[tuple[str, float]] = []

    def reset(self) -> None:
        httpx.delete(self.url, timeout=10)
        self.records = []

    def read(self) -> list[tuple[str, float]]:
        response = httpx.get(self.url, params={"since": len(self.records)}, timeout=30)
        self.records += [(str(e), float(t)) for e, t in response.json()["received"]]
        return self.records


class SlackReceiver:
    """The Slack sandbox's messages, stamped `received_at` (bench/baselines.py slack)."""

    def __init__(self, url: str) -> None:
        self.url = url + "/_sandbox/messages"

    def reset(self) -> None:
        httpx.delete(self.url, timeout=10)

    def read(self) -> list[tuple[str, float]]:
        messages = httpx.get(self.url, timeout=30).json()["messages"]
        found = ((SLACK_TEXT_ID.search(str(m.get("text"))), m) for m in messages)
        return [(f.group(1), float(m["received_at"])) for f, m in found if f is not None]


Receiver = SinkReceiver | SlackReceiver


# --------------------------------------------------------------------------- one rate


@dataclass
class Target:
    """A system under test at one configuration: where to send, what to measure."""

    system: str  # "lytbridge" or "Node-RED"
    action: str  # "http.post" or "slack.post"
    workers: int  # 0 for Node-RED
    port: int
    processes: dict[str, int]  # name -> pid, CPU counted with its children
    receiver: Receiver
    stack: Stack | None = None  # its Redis, when the system uses one

    @property
    def label(self) -> str:
        if self.system == "Node-RED":
            return f"Node-RED {self.action}"
        return f"lytbridge {self.workers} worker{'s' if self.workers > 1 else ''} {self.action}"


@dataclass
class PacedRow:
    system: str
    action: str
    workers: int
    rate: float
    seconds: float
    sent: int
    acked: int  # 2xx answers
    errors: int  # connection errors, non-2xx answers, acks missing at the deadline
    held_back: int
    connections: int
    send_lag_p99_ms: float  # the load generator's own lateness (its core busy)
    matched: int
    delivered: int
    lost: int
    duplicates: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    ack_p99_ms: float
    cpu_ms_per_event: dict[str, float]
    cpu_ms_per_event_total: float
    sut_core_busy_pct: float
    load_cores_busy_pct: float
    redis_cmds_per_event: float | None
    redis_cpu_ms_per_event: float | None
    load_cpu_ms_per_event: dict[str, float]  # the load side's processes (other cores)
    redis_top_commands: dict[str, float] = field(default_factory=dict)
    attempts: int = 1  # 2: the first run's load generator was late (MAX_SEND_LAG_MS)

    @property
    def held(self) -> bool:
        return self.lost == 0 and self.p99_ms <= MAX_P99_MS


@dataclass
class Setup:
    """What every run of the section shares."""

    secret: str
    cores: Cores
    rates: list[float]
    seconds: float
    max_connections: int
    log: Log
    load: dict[str, int] = field(default_factory=dict)  # the load side: name -> pid (0: us)


def _load_cpu(load: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) if pid else time.process_time() for name, pid in load.items()}


def measure(target: Target, rate: float, seconds: float, setup: Setup) -> PacedRow:
    """One open-loop run at `rate` for `seconds`, its deliveries waited for up to 10 s."""
    cores = setup.cores
    if target.stack is not None:
        _wait_queue_empty(target.stack)  # what the last run left (events no rule matched)
        target.stack.redis.flushdb()
    target.receiver.reset()
    count = max(1, round(rate * seconds))
    requests = loadgen.build_requests("127.0.0.1", target.port, setup.secret, count)
    matched = {r.event_id for i, r in enumerate(requests) if i % 2 == 0}
    cpu0 = {name: cpu_seconds(pid) for name, pid in target.processes.items()}
    load_cpu0 = _load_cpu(setup.load)
    sut0, load0 = core_times(cores.sut), core_times(cores.load)
    calls0 = _redis_calls(target)
    rcpu0 = target.stack.redis_cpu() if target.stack is not None else 0.0
    run = asyncio.run(
        open_loop("127.0.0.1", target.port, requests, rate, max_connections=setup.max_connections)
    )
    deadline = run.last_due + LOST_AFTER
    records = target.receiver.read()
    while not matched <= {e for e, _ in records} and time.time() < deadline:
        time.sleep(0.1)  # deliveries still arriving; bounded by the deadline
        records = target.receiver.read()
    cpu1 = {name: cpu_seconds(pid) for name, pid in target.processes.items()}
    load_cpu1 = _load_cpu(setup.load)
    sut1, load1 = core_times(cores.sut), core_times(cores.load)
    calls1 = _redis_calls(target)
    rcpu1 = target.stack.redis_cpu() if target.stack is not None else 0.0

    first: dict[str, float] = {}
    duplicates = 0
    for event_id, received_at in records:
        if event_id in first:
            duplicates += 1
        elif received_at <= deadline:
            first[event_id] = received_at
    latencies = [first[e] - run.due[e] for e in matched if e in first]
    acks = [latency for status, latency in run.acks.values() if 200 <= status < 300]
    cpu = {name: (cpu1[name] - cpu0[name]) / count * 1000 for name in cpu0}
    load_cpu = {name: (load_cpu1[name] - load_cpu0[name]) / count * 1000 for name in load_cpu0}
    redis_delta = {
        k: calls1.get(k, 0) - calls0.get(k, 0) for k in calls1 if k != "info"
    }  # INFO is the benchmark's own reading
    top = sorted(((k, v / count) for k, v in redis_delta.items() if v), key=lambda kv: -kv[1])
    return PacedRow(
        target.system,
        target.action,
        target.workers,
        rate,
        seconds,
        count,
        len(acks),
        run.errors + len(run.acks) - len(acks),
        run.held_back,
        run.connections,
        loadgen.percentile(run.send_lag, 99) * 1000,
        len(matched),
        len(matched & first.keys()),
        len(matched - first.keys()),
        duplicates,
        loadgen.percentile(latencies, 50) * 1000,
        loadgen.percentile(latencies, 99) * 1000,
        loadgen.percentile(latencies, 100) * 1000,
        loadgen.percentile(acks, 99) * 1000,
        cpu,
        sum(cpu.values()),
        busy_pct(sut0, sut1),
        busy_pct(load0, load1) if cores.load else float("nan"),
        sum(redis_delta.values()) / count if target.stack is not None else None,
        (rcpu1 - rcpu0) / count * 1000 if target.stack is not None else None,
        load_cpu,
        dict(top[:8]),
    )


def _redis_calls(target: Target) -> dict[str, int]:
    return target.stack.redis_calls() if target.stack is not None else {}


def series(target: Target, setup: Setup) -> list[PacedRow]:
    """The rates in order, up to and including the first one not held."""
    where = ", ".join(f"{name} on CPU {affinity(pid)}" for name, pid in target.processes.items())
    setup.log(f"paced: {target.label} ({where}): warm-up")
    measure(target, 100, 1, setup)
    rows = []
    for rate in setup.rates:
        row = measure(target, rate, setup.seconds, setup)
        if row.send_lag_p99_ms > MAX_SEND_LAG_MS:
            setup.log(
                f"paced: {target.label} {rate:g}/s: the load generator was late "
                f"(p99 {row.send_lag_p99_ms:.0f} ms, load cores {row.load_cores_busy_pct:.0f} %"
                f" busy): once more"
            )
            row = measure(target, rate, setup.seconds, setup)
            row.attempts = 2
        setup.log(
            f"paced: {target.label} {rate:g}/s: delivered {row.delivered}/{row.matched}, "
            f"lost {row.lost}, p50 {row.p50_ms:.1f} ms, p99 {row.p99_ms:.1f} ms, "
            f"CPU {row.cpu_ms_per_event_total:.2f} ms/event, core {row.sut_core_busy_pct:.0f} %"
        )
        rows.append(row)
        if not row.held:
            break
    return rows


def _wait_queue_empty(stack: Stack, timeout: float = 30.0) -> None:
    """Until the workers have taken every queued job (what no rule matched finishes last)."""
    deadline = time.monotonic() + timeout
    while stack.redis.zcard("bridge:queue") and time.monotonic() < deadline:
        time.sleep(0.05)


# --------------------------------------------------------------------------- the section


def run_section(
    stack: Stack,
    args: argparse.Namespace,
    secret: str,
    results: dict[str, Any],
    tables: list[tuple[str, list[list[str]]]],
    log: Log,
) -> None:
    cores = split_cores()
    if cores.pinned:
        log(f"paced: system under test on core {_cpus(cores.sut)}, the rest on {_cpus(cores.load)}")
    else:
        log("paced: one core only: nothing pinned (the load generator shares the core)")
    setup = Setup(
        secret,
        cores,
        [float(r) for r in args.paced_rates.split(",")],
        args.paced_seconds,
        args.paced_connections,
        log,
    )
    actions = [a.strip() for a in args.paced_actions.split(",") if a.strip()]
    worker_counts = [int(w) for w in args.paced_workers.split(",")]
    redis_pid = stack.redis_server.pid
    all_cores = os.sched_getaffinity(0)
    rows: list[PacedRow] = []
    floor_rows: list[floors.FloorRow] = []
    notes: list[str] = []
    with on_cores(cores.load):
        if cores.pinned and redis_pid is not None:
            pin(redis_pid, cores.load)
        try:
            stack.tmp.mkdir(parents=True, exist_ok=True)
            stack.start_slack()
            sandbox = stack.launcher.started[-1]  # the process start_slack just started
            stack.configure(None)
            sink_port = free_port()
            sink = stack.launcher.start("sink", ["bench/sink.py", str(sink_port)])
            sink_url = f"http://127.0.0.1:{sink_port}"
            wait_until(lambda: sink.check() or http_ok(sink_url + "/_sink/received"), 30, "sink")
            setup.load = {"load generator": 0, "sink": sink.pid, "Slack sandbox": sandbox.pid}
            if redis_pid is not None:
                setup.load["Redis"] = redis_pid
            for action in actions:
                for workers in worker_counts:
                    target = start_bridge(stack, action, workers, sink_url, cores)
                    try:
                        rows += series(target, setup)
                    finally:
                        stop_bridge(stack)
            if "http" in actions and not args.no_node_red:
                rows += node_red_series(stack, sink_url, setup, notes)
            elif not args.no_node_red:
                notes.append("Node-RED runs with the http action only (--paced-actions http)")
            if args.paced_floors:
                rates = [float(r) for r in args.paced_floor_rates or setup.rates]
                floor_rows = floors.series(stack, sink_url, setup, rates)
        finally:
            if cores.pinned and redis_pid is not None:
                pin(redis_pid, all_cores)
    results["paced"] = {
        "cores": {"sut": sorted(cores.sut), "load": sorted(cores.load), "pinned": cores.pinned},
        "max_connections": args.paced_connections,
        "rows": [asdict(r) | {"held": r.held} for r in rows],
        "capacity": capacities(rows, setup.rates),
        "notes": notes,
        "floors": floors.as_json(floor_rows),
    }
    where = (
        f"SUT on core {_cpus(cores.sut)}, load generator, Redis, sink and sandbox on "
        f"{_cpus(cores.load)}"
        if cores.pinned
        else "one core: not pinned"
    )
    tables.append((f"Paced, open loop ({where}; latency from due to receipt)", table(rows)))
    if floor_rows:
        # The bridge's own figure beside each floor: 1 worker, http.post, CPU per event.
        measured = {
            r.rate: r.cpu_ms_per_event_total * 1000
            for r in rows
            if r.system == "lytbridge" and r.action == "http.post" and r.workers == 1
        }
        tables.append(
            (
                f"Paced: floors of the libraries on the pinned core ({where})",
                floors.table(floor_rows, measured, TARGETS["cpu_us_per_event"]),
            )
        )
    tables.append(
        (
            "Paced: capacity",
            [["capacity"], [capacity_line(rows, setup.rates, cores.pinned)], *[[n] for n in notes]],
        )
    )


def start_bridge(stack: Stack, action: str, workers: int, sink_url: str, cores: Cores) -> Target:
    rules_dir = stack.tmp / f"rules-{action}"
    rules_dir.mkdir(exist_ok=True)
    if action == "http":
        rule = HTTP_RULE.format(rule_id=RULE_ID, url=sink_url + "/sink")
        receiver: Receiver = SinkReceiver(sink_url)
    elif action == "slack":
        rule = (stack.tmp / "rules" / "bench.yaml").read_text()
        receiver = SlackReceiver(stack.slack_url)
    else:
        raise SystemExit(f"unknown paced action {action!r}; expected http or slack")
    (rules_dir / "bench.yaml").write_text(rule)
    stack.bridge_env["BRIDGE_RULES_DIR"] = str(rules_dir)
    stack.bridge_env["BRIDGE_HTTP_ALLOW"] = "127.0.0.1"  # the sink is on loopback
    stack.redis.flushdb()
    with on_cores(cores.sut):
        web = stack.start_web()
        stack.start_workers(workers)
    processes = {"web": web.pid} | {w.name: w.pid for w in stack.workers}
    if cores.pinned:
        for pid in processes.values():
            pin(pid, cores.sut)
    return Target(
        "lytbridge",
        f"{action}.post",
        workers,
        stack.web_port,
        processes,
        receiver,
        stack,
    )


def stop_bridge(stack: Stack) -> None:
    stack.stop_workers()
    if stack.web is not None:
        stack.web.stop()
        stack.web = None


def node_red_series(stack: Stack, sink_url: str, setup: Setup, notes: list[str]) -> list[PacedRow]:
    cores, log = setup.cores, setup.log
    installed = nodered.install(log)
    if isinstance(installed, str):
        log(f"paced: Node-RED not run: {installed}")
        notes.append(f"Node-RED not run: {installed}")
        return []
    port = free_port()
    try:
        with on_cores(cores.sut):
            process: Process = nodered.start(
                stack.launcher, installed, stack.tmp / "node-red", port, sink_url + "/sink"
            )
    except RuntimeError as error:
        log(f"paced: Node-RED did not start: {error}")
        notes.append(f"Node-RED did not start: {str(error)[-300:]}")
        return []
    if cores.pinned:
        pin(process.pid, cores.sut)
    notes.append(f"Node-RED {nodered.version(installed)}: {nodered.DESCRIPTION}")
    try:
        target = Target(
            "Node-RED", "http.post", 0, port, {"node-red": process.pid}, SinkReceiver(sink_url)
        )
        return series(target, setup)
    finally:
        process.stop()


# --------------------------------------------------------------------------- reporting


def table(rows: Sequence[PacedRow]) -> list[list[str]]:
    out = [
        [
            "system",
            "rate/s",
            "sent",
            "2xx",
            "err",
            "held back",
            "conns",
            "send lag p99 ms",
            "matched",
            "delivered",
            "lost",
            "dup",
            "p50 ms",
            "p99 ms",
            "max ms",
            "ack p99 ms",
            "CPU ms/event",
            "CPU ms/event total",
            "SUT core %",
            "load cores %",
            "redis cmds/event",
            "redis CPU ms/event",
            "load side CPU ms/event",
            "held",
        ]
    ]
    for r in rows:
        label = Target(r.system, r.action, r.workers, 0, {}, SinkReceiver("")).label
        out.append(
            [
                label,
                f"{r.rate:,g}",
                f"{r.sent:,}",
                f"{r.acked:,}",
                str(r.errors),
                str(r.held_back),
                str(r.connections),
                _ms(r.send_lag_p99_ms),
                f"{r.matched:,}",
                f"{r.delivered:,}",
                str(r.lost),
                str(r.duplicates),
                _ms(r.p50_ms),
                _ms(r.p99_ms),
                _ms(r.max_ms),
                _ms(r.ack_p99_ms),
                ", ".join(f"{k} {v:.2f}" for k, v in r.cpu_ms_per_event.items()),
                f"{r.cpu_ms_per_event_total:.2f}",
                f"{r.sut_core_busy_pct:.0f}",
                f"{r.load_cores_busy_pct:.0f}",
                "-" if r.redis_cmds_per_event is None else f"{r.redis_cmds_per_event:.1f}",
                "-" if r.redis_cpu_ms_per_event is None else f"{r.redis_cpu_ms_per_event:.3f}",
                f"{sum(r.load_cpu_ms_per_event.values()):.2f}",
                ("yes" if r.held else "NO")
                + (" (rerun)" if r.attempts > 1 else "")
                + (" (generator late)" if r.send_lag_p99_ms > MAX_SEND_LAG_MS else ""),
            ]
        )
    return out


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 1000 else f"{value:.1f}"


def capacities(rows: Sequence[PacedRow], rates: Sequence[float]) -> dict[str, str]:
    """Per configuration: the highest rate held ('≥' it when the last rate held too)."""
    labels: dict[str, list[PacedRow]] = {}
    for r in rows:
        label = Target(r.system, r.action, r.workers, 0, {}, SinkReceiver("")).label
        labels.setdefault(label, []).append(r)
    out = {}
    for label, runs in labels.items():
        held = [r.rate for r in runs if r.held]
        if not held:
            out[label] = f"< {runs[0].rate:g}/s"
        elif runs[-1].held and runs[-1].rate == max(rates):
            out[label] = f"≥ {held[-1]:g}/s"
        else:
            out[label] = f"{held[-1]:g}/s"
    return out


def capacity_line(rows: Sequence[PacedRow], rates: Sequence[float], pinned: bool) -> str:
    found = capacities(rows, rates)
    body = "; ".join(f"{label} {value}" for label, value in found.items()) or "nothing measured"
    where = "one pinned core" if pinned else "not pinned: one core for everything"
    return f"capacity ({where}, p99 ≤ {MAX_P99_MS:g} ms, nothing lost): {body}"


def target_rows(
    results: dict[str, Any], add: Callable[[str, float | None, float, bool, str], None]
) -> None:
    """The issue's targets for the paced section, through run.py's `add`."""
    paced = results.get("paced")
    if not paced:
        return
    rows = [r for r in paced["rows"] if r["system"] == "lytbridge"]
    by_config: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        by_config.setdefault((r["action"], r["workers"]), []).append(r)
    for (action, workers), runs in by_config.items():
        name = f"paced {workers}w {action}"
        held = [r for r in runs if r["held"]]
        add(
            f"{name} capacity",
            held[-1]["rate"] if held else 0.0,
            TARGETS["capacity_eps"],
            True,
            "events/s",
        )
        at = {r["rate"]: r for r in [r for r in runs if r["rate"] == 250] + held[-1:]}
        for r in at.values():
            where = f"{name} at {r['rate']:g}/s"
            add(
                f"{where} CPU",
                r["cpu_ms_per_event_total"] * 1000,
                TARGETS["cpu_us_per_event"],
                False,
                "µs/event",
            )
            add(
                f"{where} Redis",
                r["redis_cmds_per_event"],
                TARGETS["redis_cmds_per_event"],
                False,
                "cmds/event",
            )
            add(
                f"{where} Redis CPU",
                r["redis_cpu_ms_per_event"] * 1000,
                TARGETS["redis_cpu_us_per_event"],
                False,
                "µs/event",
            )
        for r in runs:
            if r["rate"] == 50:
                add(f"{name} at 50/s p99", r["p99_ms"], TARGETS["low_rate_p99_ms"], False, "ms")
                add(
                    f"{name} at 50/s CPU",
                    r["cpu_ms_per_event_total"] * 50 / 10,  # ms/s -> % of a core
                    TARGETS["low_rate_core_pct"],
                    False,
                    "% of a core",
                )
        # Nothing may be lost up to the target rate (the rate that ends a series may lose).
        upto = [r for r in runs if r["rate"] <= TARGETS["capacity_eps"]]
        add(
            f"{name} lost up to {TARGETS['capacity_eps']:,}/s",
            sum(r["lost"] for r in upto),
            0,
            False,
            "events",
        )


def lost_in_smoke(results: dict[str, Any]) -> int:
    """Events lost by the paced runs (what `--quick` enforces)."""
    return sum(r["lost"] for r in results.get("paced", {}).get("rows", []))
