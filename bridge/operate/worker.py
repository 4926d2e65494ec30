"""The worker process: an arq Worker running the jobs, kept alive across Redis outages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any

from redis.exceptions import RedisError

from bridge.jobs.digest import close_digest
from bridge.jobs.handlers import (
    MAX_PICKUPS,
    MAX_RUN_PICKUPS,
    handle_event,
    job_timeout,
    run_rule,
)
from bridge.jobs.schedule import cron_jobs
from bridge.jobs.ticks import tick_jobs
from bridge.jobs.waits import NO_RULES_TRIES, check_wait
from bridge.operate.context import Context, build_context
from bridge.queue import func
from bridge.queue.codec import RESULT_TTL, job_deserializer, job_serializer
from bridge.queue.keys import Keys
from bridge.queue.worker import BridgeWorker
from bridge.settings import Settings

logger = logging.getLogger(__name__)

HEALTH_CHECK_INTERVAL = 10
# Heroku sends SIGKILL 30 s after SIGTERM: finish running jobs within 20 s, then re-queue.
JOB_COMPLETION_WAIT = 20
# After losing Redis, a new worker is started after a delay that doubles up to the most; a
# worker that had run longer than the most before it lost Redis starts from the first again
# (the last outage was over).
FIRST_RECONNECT_DELAY = 0.5
MAX_RECONNECT_DELAY = 10.0
_clock = time.monotonic


def health_check_key(settings: Settings) -> str:
    """The workers' heartbeat (Keys.health_check)."""
    return Keys.health_check(settings.queue_name)


def make_worker(context: Context, *, burst: bool = False) -> BridgeWorker:
    """A worker for the bridge's jobs on the context's Redis and queue."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["bridge"] = context

    timeout = job_timeout(context.settings.step_timeout_seconds)
    return BridgeWorker(
        functions=[
            func(handle_event, name="handle_event", timeout=timeout, max_tries=MAX_PICKUPS),
            # run_rule counts its own tries per step and gives up itself (RuleRun.ready: a
            # dead letter); the queue's count is one more, so it only bounds crash loops.
            func(run_rule, name="run_rule", timeout=timeout, max_tries=MAX_RUN_PICKUPS + 1),
            # Closes a digest's window and queues its run (both steps safe to repeat).
            func(close_digest, name="close_digest", timeout=timeout, max_tries=MAX_PICKUPS),
            # A `for:` wait's check: ends the wait and queues the run (safe to repeat); at
            # its last try it ends the wait itself, traced, even with no valid rule set.
            func(check_wait, name="check_wait", timeout=timeout, max_tries=NO_RULES_TRIES),
        ],
        queue_name=context.settings.queue_name,
        redis_pool=context.redis,
        burst=burst,
        poll_delay=0 if burst else context.settings.worker_poll_delay,
        max_jobs=context.settings.worker_max_jobs,
        # Claims (bridge.queue.worker) take at most this many ready jobs per poll.
        queue_read_limit=context.settings.worker_max_jobs,
        job_timeout=timeout,
        keep_result=RESULT_TTL,
        health_check_interval=HEALTH_CHECK_INTERVAL,
        health_check_key=health_check_key(context.settings),
        handle_signals=False,
        job_completion_wait=JOB_COMPLETION_WAIT,
        on_startup=on_startup,
        # The pollers' (when configured) and the time triggers' (bridge/jobs/ticks.py).
        cron_jobs=[*cron_jobs(context), *tick_jobs(context)],
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
    )


async def run_worker(
    context: Context,
    stop: asyncio.Event,
    *,
    burst: bool = False,
    completion_wait: float = JOB_COMPLETION_WAIT,
) -> None:
    """Run jobs until `stop` is set (then finish running jobs within `completion_wait`)."""
    reloader = asyncio.create_task(context.rules.watch())
    delay = FIRST_RECONNECT_DELAY
    try:
        while not stop.is_set():
            worker = make_worker(context, burst=burst)
            started = _clock()
            main = asyncio.create_task(worker.async_run())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({main, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if main.done():
                exc = main.exception() if not main.cancelled() else None
                if exc is None:
                    return  # burst mode: the queue is empty
                if not isinstance(exc, RedisError | OSError):
                    raise exc
                if _clock() - started > MAX_RECONNECT_DELAY:
                    delay = FIRST_RECONNECT_DELAY
                logger.warning(
                    "worker lost Redis (%s: %s)%s; reconnecting in %.1f s",
                    type(exc).__name__,
                    exc,
                    _REDIS_HINTS.get(type(exc).__name__, ""),
                    delay,
                )
                await worker.cancel_running()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, MAX_RECONNECT_DELAY)
                continue
            await worker.drain(completion_wait, main)
    finally:
        reloader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reloader


# What to check when Redis answers but refuses (not a passing outage).
_REDIS_HINTS = {
    "AuthenticationError": ": check the password in REDIS_URL",
    "AuthenticationWrongNumberOfArgsError": ": check the user and password in REDIS_URL",
    "ResponseError": ": check REDIS_URL (its database number, its user's permissions)",
}


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop` (the worker then drains)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def worker_main(settings: Settings) -> None:
    """`bridge worker`: run until SIGTERM/SIGINT."""
    context = await build_context(settings)
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        await run_worker(context, stop)
    finally:
        await context.close()
