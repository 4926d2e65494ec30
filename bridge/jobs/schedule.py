"""When pollers run: one arq cron tick every 5 s, one runner per poller, a share of each API.

Every tick, each configured poller whose interval has elapsed runs, under a Redis lock
(`SET NX PX`) so that one worker runs it however many workers tick. A run is time-boxed;
a poller that stopped before the end of its cycle (time box or rate limit) carries on at
the next tick from the cursor it keeps in Redis, and one that finished waits for its
interval (`BRIDGE_POLL_INTERVAL`, `BRIDGE_POLL_INTERVAL_<POLLER>`).

Pollers share each API's rate limiter with the actions and leave room for them: a
poller's request goes only when the limiter has a slot free right now, it waits for a
slot a little *longer* than an action would (so a waiting action books it first), and
all pollers of an API together take at most `POLL_SHARE` of its limits.

After each run, one pipeline writes the poller's status hash (`<prefix>poll:<name>:status`):
the run's times, outcome, events and requests, running totals, and when the last full pass
began, which bounds the age of the oldest observation (the *lag*). `poller_status` reads it
for the dashboard, the admin API and /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from bridge.clients.ratelimit import Limit, RateLimiter
from bridge.errors import ClientError, PermanentError, StoreUnavailable
from bridge.ingress.pollers import POLLER_NAMES, Poller, PollResult, configured_pollers
from bridge.queue import CronJob, cron
from bridge.queue.redis_io import FastScript
from bridge.redaction import redact

if TYPE_CHECKING:
    from bridge.operate.context import Context

logger = logging.getLogger(__name__)

TICK_SECONDS = 5
RUN_SECONDS = 10.0  # the time box of one poll run
JOB_TIMEOUT = 15  # arq's timeout of the tick; a long one delays re-runs after SIGKILL
LOCK_MS = 20_000  # outlives the run's hard stop (RUN_SECONDS + 2), expires if a worker dies
# Pollers of one API take at most this share of its rate limits, so actions keep the rest.
POLL_SHARE = 0.5

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def poll_interval(context: Context, name: str) -> int:
    """Seconds between two cycles of a poller (its own setting, else the default)."""
    settings = context.settings
    return int(settings.poll_intervals.get(name, settings.poll_interval))


def poll_limits(limits: tuple[Limit, ...]) -> tuple[Limit, ...]:
    """The pollers' own budget: `POLL_SHARE` of each of an API's limits."""
    return tuple(
        Limit(max(1, math.floor(limit.count * POLL_SHARE)), limit.period) for limit in limits
    )


def poll_budget_limiter(context: Context) -> RateLimiter:
    """The limiter of the pollers' share (one per context, state shared through Redis)."""
    found = context.poll_budget
    if found is None:
        shared = context.limiter
        limits = {api: poll_limits(shared.limits(api)) for api in POLLER_NAMES}
        found = RateLimiter(
            context.redis,
            {api: share for api, share in limits.items() if share},
            key_prefix=context.keys.poll_budget_prefix,
        )
        context.poll_budget = found
    return found


class RunBudget:
    """The requests of one poll run: booked one by one, only while slots are free."""

    def __init__(
        self,
        limiter: RateLimiter,
        budget: RateLimiter,
        api: str,
        seconds: float = RUN_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limiter = limiter
        self._budget = budget
        self._api = api
        self._clock = clock
        self._deadline = clock() + seconds
        spaced = [limit.interval for limit in limiter.limits(api)]
        self._interval = min(spaced) if spaced else 0.0
        # An action waiting for the same slot retries within 50 ms of it (RateLimiter's
        # jitter); arriving later than that lets the action book it first.
        self._grace = min(1.0, max(0.1, self._interval / 4))
        self.requests = 0

    def time_left(self) -> float:
        return self._deadline - self._clock()

    async def slot(self) -> bool:
        if self.time_left() <= 0:
            return False
        if await self._budget.try_acquire(self._api) > 0:
            return False  # the pollers' share is spent for now
        wait = await self._limiter.try_acquire(self._api)
        if wait > 0:
            # A wait longer than one step means requests are booked ahead: actions are busy.
            if wait > self._interval * 1.5 or wait + self._grace > self.time_left():
                return False
            await asyncio.sleep(wait + self._grace)
            if await self._limiter.try_acquire(self._api) > 0:
                return False
        self.requests += 1
        return True


async def run_poller(context: Context, poller: Poller) -> str:
    """Run one poller if it is due and no other worker runs it; say what happened."""
    redis = context.redis
    lock_key, due_key = context.keys.poll_lock(poller.name), context.keys.poll_due(poller.name)
    token = uuid.uuid4().hex
    if not await redis.set(lock_key, token, nx=True, px=LOCK_MS):
        return "busy"
    try:
        if await redis.exists(due_key):
            return "not due"
        started_at = time.time()
        started = time.monotonic()
        budget = RunBudget(context.limiter, poll_budget_limiter(context), poller.name)
        result: PollResult | None = None
        error = ""
        try:
            async with asyncio.timeout(RUN_SECONDS + 2):
                result = await poller.poll(budget)
        except PermanentError as exc:
            logger.error("poller %s stopped: %s", poller.name, exc)
            error = str(exc)
        except (ClientError, StoreUnavailable) as exc:
            logger.warning("poller %s stopped early: %s; resuming next time", poller.name, exc)
            error = str(exc)
        except TimeoutError:
            logger.warning("poller %s ran out of time; resuming next tick", poller.name)
            result = PollResult(done=False)
        except Exception as exc:
            logger.exception("poller %s failed", poller.name)
            error = f"{type(exc).__name__}: {exc}"
        if result is not None and not result.done:
            outcome = "partial"
        else:
            # A finished cycle (or an error, not to be retried every tick) waits for the
            # interval, counted from the start of this run; the next tick may be up to a
            # second early, so a second of slack keeps the cadence on the interval.
            elapsed_ms = int((time.monotonic() - started) * 1000)
            wait_ms = poll_interval(context, poller.name) * 1000 - elapsed_ms - 1000
            if wait_ms > 0:
                await redis.set(due_key, "1", px=wait_ms)
            outcome = "done" if result is not None else "failed"
        if result is not None:
            logger.info(
                "poller %s: %s, %d events, %d requests",
                poller.name,
                outcome,
                result.events,
                budget.requests,
            )
        await record_run(context, poller.name, started_at, outcome, result, budget.requests, error)
        return outcome
    finally:
        with contextlib.suppress(RedisError, OSError):
            await FastScript(redis, _RELEASE)([lock_key], [token])


# --- what the runs did: one status hash per poller ------------------------------------------

MAX_ERROR = 300  # characters of an error message kept in the status


def status_key(context: Context, name: str) -> str:
    return context.keys.poll_status(name)


async def record_run(
    context: Context,
    name: str,
    started_at: float,
    outcome: str,
    result: PollResult | None,
    requests: int,
    error: str = "",
) -> None:
    """Write what one run did to the poller's status hash (one pipeline; never raises)."""
    key = status_key(context, name)
    events = result.events if result is not None else 0
    try:
        # A full pass may span several runs: it began with the first run after the last
        # finished pass, and every object it read was seen at or after that moment.
        raw = await context.redis.hget(key, "pass_started_at")  # type: ignore[misc]
        pass_started = float(raw) if raw is not None else started_at
        fields: dict[str, str | float | int] = {
            "last_started_at": started_at,
            "last_finished_at": time.time(),
            "last_outcome": outcome,
            "last_error": redact(error, context.settings.secrets())[:MAX_ERROR],
            "last_events": events,
            "last_requests": requests,
            "last_full_pass": int(outcome == "done"),
        }
        async with context.redis.pipeline(transaction=True) as pipe:
            if outcome == "done":
                fields["full_pass_started_at"] = pass_started
                fields["full_pass_finished_at"] = fields["last_finished_at"]
                pipe.hdel(key, "pass_started_at")
            else:
                fields["pass_started_at"] = pass_started
            pipe.hset(key, mapping=fields)
            pipe.hincrby(key, "runs_total", 1)
            pipe.hincrby(key, "events_total", events)
            pipe.hincrby(key, "requests_total", requests)
            pipe.hincrby(key, "errors_total", int(bool(error)))
            await pipe.execute()
    except (RedisError, OSError) as exc:
        logger.warning("status of poller %s not recorded: %s", name, exc)


def _budget_use(limits: tuple[Limit, ...], tats: list[Any], now: float) -> list[dict[str, Any]]:
    """Each limit of the pollers' budget with the requests it has not yet given back.

    Under GCRA a booked request is given back one emission interval after the limit's
    theoretical arrival time, so `(TAT - now) / interval` is the share in use right now.
    """
    out = []
    for limit, raw in zip(limits, tats, strict=True):
        ahead = max(0.0, int(raw) / 1e6 - now) if raw is not None else 0.0
        used = min(limit.count, math.ceil(round(ahead / limit.interval, 6)))
        out.append(
            {"limit": limit.name, "count": limit.count, "period": limit.period, "used": used}
        )
    return out


async def poller_status(context: Context) -> list[dict[str, Any]]:
    """Every configured poller: its interval, last run, lag, totals and budget in use."""
    pollers = configured_pollers(context)
    budget = poll_budget_limiter(context)
    async with context.redis.pipeline(transaction=False) as pipe:
        pipe.time()
        for poller in pollers:
            pipe.hgetall(status_key(context, poller.name))
            for key in budget.keys(poller.name):
                pipe.get(key)
        replies = await pipe.execute()
    seconds, micros = replies[0]
    now = int(seconds) + int(micros) / 1e6
    out: list[dict[str, Any]] = []
    at = 1
    for poller in pollers:
        raw = {k.decode(): v.decode() for k, v in replies[at].items()}
        limits = budget.limits(poller.name)
        tats = replies[at + 1 : at + 1 + len(limits)]
        at += 1 + len(limits)
        out.append(_status(poller.name, poll_interval(context, poller.name), raw, now))
        out[-1]["budget"] = _budget_use(limits, tats, now)
        # What a poller adds of its own (the Workflow poller: kinds read in full passes).
        extra = getattr(poller, "status_extra", None)
        out[-1]["notes"] = []
        if extra is not None:
            out[-1].update(await extra())
    return out


def _status(name: str, interval: int, raw: dict[str, str], now: float) -> dict[str, Any]:
    def number(field: str) -> float | None:
        return float(raw[field]) if field in raw else None

    def whole(field: str) -> int:
        return int(raw.get(field, 0))

    full_pass = number("full_pass_started_at")
    # Before any full pass has finished, the oldest observation is as old as the first run.
    oldest = full_pass if full_pass is not None else number("pass_started_at")
    ran = "last_started_at" in raw
    return {
        "name": name,
        "interval_seconds": interval,
        "last_run": {
            "started_at": number("last_started_at"),
            "finished_at": number("last_finished_at"),
            "outcome": raw.get("last_outcome"),
            "error": raw.get("last_error") or None,
            "events": whole("last_events"),
            "requests": whole("last_requests"),
            "full_pass": raw.get("last_full_pass") == "1",
        }
        if ran
        else None,
        "last_full_pass": {
            "started_at": full_pass,
            "finished_at": number("full_pass_finished_at"),
        }
        if full_pass is not None
        else None,
        "lag_seconds": round(max(0.0, now - oldest), 3) if oldest is not None else None,
        "runs_total": whole("runs_total"),
        "events_total": whole("events_total"),
        "requests_total": whole("requests_total"),
        "errors_total": whole("errors_total"),
    }


async def tick(context: Context) -> dict[str, str]:
    """Run every configured poller that is due, side by side; `{name: outcome}`."""
    pollers = configured_pollers(context)
    outcomes = await asyncio.gather(
        *(run_poller(context, p) for p in pollers), return_exceptions=True
    )
    report: dict[str, str] = {}
    for poller, outcome in zip(pollers, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome
            logger.error(
                "poller %s failed: %s",
                poller.name,
                outcome,
                exc_info=(type(outcome), outcome, outcome.__traceback__),
            )
            report[poller.name] = "error"
        else:
            report[poller.name] = outcome
    return report


def every_tick(name: str, run: Callable[[], Awaitable[dict[str, str]]]) -> CronJob:
    """An arq cron job that calls `run` every TICK_SECONDS, on one worker per slot however
    many run (arq's unique cron job id), never retried (the next slot is the retry)."""

    async def job(ctx: dict[str, Any]) -> dict[str, str]:
        return await run()

    return cron(
        job,
        name=name,
        second=set(range(0, 60, TICK_SECONDS)),
        microsecond=0,
        unique=True,
        timeout=JOB_TIMEOUT,
        max_tries=1,
        keep_result=60,
    )


def cron_jobs(context: Context) -> list[CronJob]:
    """The arq cron job that runs the pollers (none when no API is configured)."""
    if not configured_pollers(context):
        return []
    return [every_tick(context.keys.poll_tick_name, lambda: tick(context))]
