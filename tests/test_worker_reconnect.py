"""The worker process after losing Redis (bridge/operate/worker.py `run_worker`): a new
worker after a delay that doubles up to the most, back to the first delay once a worker
had run longer than that (the outage was over), and a hint when Redis refuses."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from bridge.operate import worker as process


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _watch() -> None:
    await asyncio.Event().wait()  # the rules' reloader, cancelled when the run ends


# What run_worker reads of its context here (the workers are the tests' own).
CONTEXT = SimpleNamespace(rules=SimpleNamespace(watch=_watch))


class FailingWorker:
    """A worker that loses Redis after `ran` seconds of the test's clock."""

    def __init__(self, clock: Clock, ran: float, exc: Exception) -> None:
        self.clock, self.ran, self.exc = clock, ran, exc

    async def async_run(self) -> None:
        self.clock.now += self.ran
        raise self.exc

    async def cancel_running(self) -> None:
        return None


async def lose_redis(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    runs: list[float],
    exc: Exception,
) -> list[logging.LogRecord]:
    """Run the worker process with workers that each lose Redis (`exc`) after running
    `runs[i]` seconds of the test's clock; it stops after the last. What it logged."""
    clock = Clock()
    monkeypatch.setattr(process, "_clock", clock)
    monkeypatch.setattr(process, "FIRST_RECONNECT_DELAY", 0.001)
    monkeypatch.setattr(process, "MAX_RECONNECT_DELAY", 0.004)
    stop = asyncio.Event()
    made: list[FailingWorker] = []

    def make_worker(context: Any, *, burst: bool) -> FailingWorker:
        made.append(FailingWorker(clock, runs[len(made)], exc))
        if len(made) == len(runs):
            stop.set()  # after this one, the process stops
        return made[-1]

    monkeypatch.setattr(process, "make_worker", make_worker)
    with caplog.at_level(logging.WARNING, logger=process.logger.name):
        await process.run_worker(CONTEXT, stop)  # type: ignore[arg-type]
    return [r for r in caplog.records if r.msg.startswith("worker lost Redis")]


async def test_the_reconnect_delay_doubles_and_starts_over_after_a_worker_that_ran(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    down = RedisConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")
    # An outage (five workers lose Redis at once), then one that ran for a minute, then
    # a second outage.
    records = await lose_redis(monkeypatch, caplog, [0.0] * 5 + [60.0, 0.0], down)
    delays = [r.args[-1] for r in records]  # type: ignore[index]
    assert delays == [0.001, 0.002, 0.004, 0.004, 0.004, 0.001, 0.002]


async def test_a_redis_that_refuses_the_password_says_what_to_check(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    refused = AuthenticationError("invalid username-password pair or user is disabled.")
    records = await lose_redis(monkeypatch, caplog, [0.0], refused)
    assert [r.getMessage() for r in records] == [
        "worker lost Redis (AuthenticationError: invalid username-password pair or user is "
        "disabled.): check the password in REDIS_URL; reconnecting in 0.0 s"
    ]
