"""What could happen costs nothing: idle pollers and an idle dashboard beside the flow.

The same paced end-to-end load (three runs of 5 s, the median reported) with one worker,
back to back: first plain,
then with every poller configured (the Lytho DAM, Lytho Workflow and Lytics sandboxes,
nothing changing upstream, `BRIDGE_POLL_INTERVAL=5`, the shortest allowed) and a
dashboard left open (a GET of `/api/events` every 3 s, what the events page's live
refresh asks). Before each load, the processes idle for a while and their CPU and Redis
commands are measured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bench.procs import cpu_seconds, free_port, http_ok, wait_until
from bridge.cli import dev

ADMIN_TOKEN = "bench-admin-token-0f3c"  # the benchmark's own, for its own web
DASHBOARD_REFRESH_S = 3.0  # bridge/web/static/dashboard.js


@dataclass
class ExtrasRow:
    setup: str
    worker_cpu_runs: list[float]  # worker CPU ms/event of each of the three runs
    idle_seconds: float
    idle_web_cpu_ms_per_s: float
    idle_worker_cpu_ms_per_s: float
    idle_redis_cmds_per_s: float
    events: int
    lost: int
    worker_cpu_ms_per_event: float
    web_cpu_ms_per_event: float
    redis_cmds_per_event: float
    slack_p50_ms: float
    slack_p99_ms: float
    poller_runs: int
    poller_errors: int
    dashboard_refreshes: int


class Dashboard:
    """A dashboard tab left open: the events list refreshed every 3 s, in a thread."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.refreshes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        headers = {"authorization": f"Bearer {ADMIN_TOKEN}", "accept": "application/json"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=10) as client:
            while not self._stop.wait(DASHBOARD_REFRESH_S):
                answer = client.get("/api/events", params={"limit": 50})
                if answer.status_code == 200:
                    self.refreshes += 1
                else:
                    self.failures += 1

    def __enter__(self) -> Dashboard:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def upstream_env(stack: Any) -> dict[str, str]:
    """Start the three upstream sandboxes; the settings that point every poller at them."""
    urls = {}
    for kind in ("lytho", "lytho-workflow", "lytics"):
        port = free_port()
        process = stack.launcher.start(f"upstream-{kind}", ["bench/baselines.py", kind, str(port)])
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda p=process, u=url: p.check() or http_ok(u + "/"), 30, f"{kind} sandbox")
        urls[kind] = url
    return {
        "LYTHO_API_URL": urls["lytho"] + "/v1/",
        "LYTHO_API_KEY": dev.DEV_LYTHO_KEY,
        "LYTHO_WORKFLOW_API_URL": urls["lytho-workflow"] + "/v1/",
        "LYTHO_TOKEN_URL": urls["lytho-workflow"] + "/oauth/token",
        "LYTHO_CLIENT_ID": dev.DEV_CLIENT_ID,
        "LYTHO_CLIENT_SECRET": dev.DEV_CLIENT_SECRET,
        "LYTICS_API_URL": urls["lytics"],
        "LYTICS_API_TOKEN": dev.DEV_LYTICS_TOKEN,
        "BRIDGE_POLL_INTERVAL": "5",
    }


def _pollers(base_url: str) -> tuple[int, int]:
    answer = httpx.get(
        base_url + "/api/pollers",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    answer.raise_for_status()
    pollers = answer.json()["pollers"]
    return sum(p["runs_total"] for p in pollers), sum(p["errors_total"] for p in pollers)


def measure(
    stack: Any,
    setup: str,
    e2e_run: Callable[..., Any],
    *,
    rate: float,
    events: int,
    idle_seconds: float,
    dashboard: bool,
) -> ExtrasRow:
    """Idle, then the paced load, with the web and one worker already running."""
    web_url = f"http://127.0.0.1:{stack.web_port}"
    [worker] = stack.workers
    opened = Dashboard(web_url) if dashboard else None
    if opened is not None:
        opened.__enter__()
    try:
        runs0, _ = _pollers(web_url)
        web0, worker0 = cpu_seconds(stack.web.pid), cpu_seconds(worker.pid)
        calls0 = sum(stack.redis_calls().values())
        time.sleep(idle_seconds)  # measuring what idling costs over a fixed window
        web1, worker1 = cpu_seconds(stack.web.pid), cpu_seconds(worker.pid)
        calls1 = sum(stack.redis_calls().values())
        # A shared VM's speed drifts: three runs, the median (by worker CPU) reported.
        runs = [
            e2e_run(stack, 1, events, concurrency=16, rate=rate, client="raw", drain_timeout=60)
            for _ in range(3)
        ]
        runs.sort(key=lambda r: r.worker_cpu_ms_per_event)
        row = runs[1]
        runs1, errors = _pollers(web_url)
    finally:
        if opened is not None:
            opened.__exit__(None, None, None)
    return ExtrasRow(
        setup,
        [r.worker_cpu_ms_per_event for r in runs],
        idle_seconds,
        (web1 - web0) / idle_seconds * 1000,
        (worker1 - worker0) / idle_seconds * 1000,
        (calls1 - calls0) / idle_seconds,
        row.events,
        row.lost,
        row.worker_cpu_ms_per_event,
        row.web_cpu_ms_per_event,
        row.redis_cmds_per_event,
        row.slack_p50_ms,
        row.slack_p99_ms,
        runs1 - runs0,
        errors,
        opened.refreshes if opened is not None else 0,
    )


def extras_table(rows: list[ExtrasRow]) -> list[list[str]]:
    out = [
        [
            "setup",
            "idle s",
            "idle web CPU ms/s",
            "idle worker CPU ms/s",
            "idle Redis cmds/s",
            "events",
            "lost",
            "worker CPU ms/event",
            "runs worker CPU",
            "web CPU ms/event",
            "redis cmds/event",
            "→Slack p50 ms",
            "→Slack p99 ms",
            "poller runs",
            "poller errors",
            "dashboard refreshes",
        ]
    ]
    for r in rows:
        out.append(
            [
                r.setup,
                f"{r.idle_seconds:g}",
                f"{r.idle_web_cpu_ms_per_s:.1f}",
                f"{r.idle_worker_cpu_ms_per_s:.1f}",
                f"{r.idle_redis_cmds_per_s:.1f}",
                f"{r.events:,}",
                str(r.lost),
                f"{r.worker_cpu_ms_per_event:.2f}",
                " / ".join(f"{x:.2f}" for x in r.worker_cpu_runs),
                f"{r.web_cpu_ms_per_event:.2f}",
                f"{r.redis_cmds_per_event:.1f}",
                f"{r.slack_p50_ms:.1f}",
                f"{r.slack_p99_ms:.1f}",
                str(r.poller_runs),
                str(r.poller_errors),
                str(r.dashboard_refreshes),
            ]
        )
    return out


def run_extras(
    stack: Any, e2e_run: Callable[..., Any], rate: float, idle_seconds: float
) -> list[ExtrasRow]:
    """The plain run, then the same with idle pollers and an open dashboard."""
    events = int(rate * 5)
    rows = []
    stack.start_workers(1)
    e2e_run(stack, 1, 20, concurrency=4, rate=None, client="raw", drain_timeout=30)  # warm up
    rows.append(
        measure(
            stack,
            "plain",
            e2e_run,
            rate=rate,
            events=events,
            idle_seconds=idle_seconds,
            dashboard=False,
        )
    )
    stack.stop_workers()
    base_env = dict(stack.bridge_env)
    try:
        stack.bridge_env = {**base_env, **upstream_env(stack)}
        assert stack.web is not None
        stack.web.stop()
        stack.start_web()
        stack.start_workers(1)
        web_url = f"http://127.0.0.1:{stack.web_port}"
        # Idle means after the pollers' first pass: every one has run once.
        wait_until(lambda: _pollers(web_url)[0] >= 3, 120, "the pollers' first runs")
        e2e_run(stack, 1, 20, concurrency=4, rate=None, client="raw", drain_timeout=30)
        rows.append(
            measure(
                stack,
                "idle pollers + open dashboard",
                e2e_run,
                rate=rate,
                events=events,
                idle_seconds=idle_seconds,
                dashboard=True,
            )
        )
        stack.stop_workers()
    finally:
        stack.bridge_env = base_env
    return rows
