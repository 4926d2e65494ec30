"""Counters of every process, summed in Redis and shown at /metrics (operate the flow).

Web and worker are separate processes and only web is scraped, so each process counts in
memory and flushes its increments every `FLUSH_INTERVAL` seconds in one MULTI/EXEC
pipeline (HINCRBY, HINCRBYFLOAT) under `<prefix>metrics:…`: no Redis round trip per event.
The same flush keeps hourly buckets (events, matches and failures per rule) for the
dashboard's charts and 24-hour numbers. Recording functions take the process's Metrics
(built by its composition root) and never raise; bridge/web/prometheus.py shows the sums.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import RedisError

from bridge.settings import source_env_suffix

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from bridge.clients.ratelimit import RateLimiter
    from bridge.events import Event
    from bridge.queue.keys import Keys

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

FLUSH_INTERVAL = 2.0
HOUR = 3600
# Hourly buckets are kept a little over two days: the dashboard reads the last 24.
HOUR_TTL = 49 * HOUR
# Senders choose event types and (with unsigned webhooks) sources: past this many distinct
# values of one label in a process, new ones are counted under OTHER.
MAX_LABEL_VALUES = 200
# Labels no source, type or rule can be named (parentheses are not allowed in any of them).
OTHER = "(other)"
UNKNOWN_SOURCE = "(unknown)"
# Set in a webhook request's scope once its signature is verified (or none is needed).
VERIFIED = "lytbridge.verified"
# Series names kept ready per process (they are rebuilt when the cache is cleared).
MAX_CACHED_SERIES = 10_000
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def series(name: str, labels: Mapping[str, str] | None = None) -> str:
    """One series as the exposition writes it: `name{a="1",b="2"}`."""
    if not labels:
        return name
    # Sorted names (histograms' `le` last) make one series one stored field.
    names = sorted(labels, key=lambda k: (k == "le", k))
    inner = ",".join(f'{k}="{_escape(str(labels[k]))}"' for k in names)
    return f"{name}{{{inner}}}"


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else f"{bound:g}"


def hour_of(at: float) -> int:
    """The start (epoch seconds) of the hour that holds `at`."""
    return int(at) // HOUR * HOUR


class Metrics:
    """The in-memory increments of one process and their periodic flush to Redis."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        limiter: RateLimiter | None = None,
        own_secrets: Collection[str] = (),
        interval: float = FLUSH_INTERVAL,
    ) -> None:
        """`own_secrets`: the sources with a webhook secret of their own (their env suffixes);
        `limiter`: the process's rate limiter, whose waits are counted too."""
        self.redis = redis
        self.limiter = limiter
        self.own_secrets = own_secrets
        self.interval = interval
        self.counters_key = keys.metrics_counters
        self.last_fired_key = keys.metrics_last_fired
        self.hour_prefix = keys.metrics_hour_prefix
        self._counts: defaultdict[str, float] = defaultdict(float)
        self._hourly: defaultdict[tuple[int, str], int] = defaultdict(int)
        self._last_fired: dict[str, float] = {}
        self._label_values: defaultdict[str, set[str]] = defaultdict(set)
        # Series names by (name, labels): building one costs microseconds, on every request.
        self._series: dict[Any, str] = {}
        self._histograms: dict[Any, tuple[str, ...]] = {}
        self._limiter_seen: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopped = False
        self._warned_at = 0.0

    # --- recording (memory only) ------------------------------------------------------

    def bounded(self, label: str, value: str) -> str:
        """`value`, or OTHER once `label` has MAX_LABEL_VALUES distinct values here."""
        seen = self._label_values[label]
        if value in seen:
            return value
        if len(seen) >= MAX_LABEL_VALUES:
            return OTHER
        seen.add(value)
        return value

    def inc(self, name: str, labels: Mapping[str, str] | None = None, value: float = 1) -> None:
        key = (name, tuple(labels.items()) if labels else ())
        field = self._series.get(key)
        if field is None:
            field = self._remember(self._series, key, series(name, labels))
        self._counts[field] += value
        self._ensure_flusher()

    def observe(
        self,
        name: str,
        value: float,
        labels: Mapping[str, str] | None = None,
        buckets: Iterable[float] = LATENCY_BUCKETS,
    ) -> None:
        """Add one observation to a histogram (cumulative buckets, `_sum`, `_count`)."""
        bounds = tuple(buckets)
        key = (name, tuple(labels.items()) if labels else (), bounds)
        fields = self._histograms.get(key)
        if fields is None:
            base = dict(labels or {})
            made = [series(f"{name}_bucket", base | {"le": _le(b)}) for b in (*bounds, math.inf)]
            made += [series(f"{name}_sum", base), series(f"{name}_count", base)]
            fields = self._remember(self._histograms, key, tuple(made))
        counts = self._counts
        # Every bucket whose bound is at least `value` (bounds ascend), then +Inf.
        for field in fields[bisect_left(bounds, value) : len(bounds) + 1]:
            counts[field] += 1
        counts[fields[-2]] += value
        counts[fields[-1]] += 1
        self._ensure_flusher()

    @staticmethod
    def _remember(cache: dict[Any, _T], key: Any, value: _T) -> _T:
        """Cache a series name: label values are bounded, but a cache must be too."""
        if len(cache) >= MAX_CACHED_SERIES:
            cache.clear()
        cache[key] = value
        return value

    def hourly(self, field: str, value: int = 1, at: float | None = None) -> None:
        self._hourly[(hour_of(time.time() if at is None else at), field)] += value

    def fired(self, rule_id: str, at: float | None = None) -> None:
        at = time.time() if at is None else at
        self._last_fired[rule_id] = max(at, self._last_fired.get(rule_id, 0.0))

    # --- flushing ---------------------------------------------------------------------

    def _ensure_flusher(self) -> None:
        if self._task is not None and not self._task.done():
            return
        if self._stopped:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous caller): the next flush() takes the increments
        self._task = loop.create_task(self._run(), name="lytbridge-metrics-flush")

    def start(self) -> None:
        """Flush every `interval` seconds from now on (also started by the first increment)."""
        self._stopped = False
        self._ensure_flusher()

    async def stop(self) -> None:
        """Stop the periodic flush and flush what is left."""
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()

    async def _run(self) -> None:
        self._wake.clear()
        try:
            while not self._stopped:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                if not self._stopped:
                    await self.flush()
        except asyncio.CancelledError:
            # The loop is ending (a worker shutting down): hand over what was counted since
            # the last flush, then let go of the connection that took.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush(), 1.0)
                await self.redis.connection_pool.disconnect()
            raise

    def _collect_limiter(self) -> None:
        """Take the shared rate limiter's in-process wait counters as increments."""
        limiter = self.limiter
        if limiter is None:
            return
        for api, waits in list(limiter.waits.items()):
            self._limiter_delta("lytbridge_rate_limiter_waits_total", api, float(waits))
        for api, seconds in list(limiter.waited_seconds.items()):
            self._limiter_delta("lytbridge_rate_limiter_wait_seconds_total", api, seconds)

    def _limiter_delta(self, name: str, api: str, total: float) -> None:
        delta = total - self._limiter_seen.get((name, api), 0.0)
        if delta > 0:
            self._limiter_seen[(name, api)] = total
            self._counts[series(name, {"api": api})] += delta

    async def flush(self) -> bool:
        """Write the increments to Redis in one transaction; on failure keep them for later."""
        with contextlib.suppress(Exception):
            self._collect_limiter()
        if not (self._counts or self._hourly or self._last_fired):
            return True
        counts, self._counts = self._counts, defaultdict(float)
        hourly, self._hourly = self._hourly, defaultdict(int)
        fired, self._last_fired = self._last_fired, {}
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for field, value in counts.items():
                    if float(value).is_integer():
                        pipe.hincrby(self.counters_key, field, int(value))
                    else:
                        pipe.hincrbyfloat(self.counters_key, field, value)
                hours = set()
                for (hour, field), value in hourly.items():
                    pipe.hincrby(f"{self.hour_prefix}{hour}", field, value)
                    hours.add(hour)
                for hour in hours:
                    pipe.expire(f"{self.hour_prefix}{hour}", HOUR_TTL)
                if fired:
                    pipe.hset(self.last_fired_key, mapping=fired)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            for field, value in counts.items():
                self._counts[field] += value
            for key, count in hourly.items():
                self._hourly[key] += count
            for rule_id, at in fired.items():
                self.fired(rule_id, at)
            now = time.monotonic()
            if now - self._warned_at > 60:
                self._warned_at = now
                logger.warning("metrics not flushed to Redis (%s); kept for later", exc)
            return False
        return True


# --- what the flow records (one call per place; memory only, never raises) ----------------


def _safely(record: Callable[..., None]) -> Callable[..., None]:
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            record(*args, **kwargs)
        except Exception:  # metrics must never break the flow they watch
            logger.exception("recording a metric failed")

    wrapper.__doc__ = record.__doc__
    wrapper.__name__ = record.__name__
    return wrapper


def _configured(m: Metrics, source: str) -> bool:
    """Whether a source has a secret of its own (a default secret fits any name)."""
    return source_env_suffix(source) in m.own_secrets


@_safely
def webhook_answered(
    m: Metrics, source: str, status: int, seconds: float, verified: bool = False
) -> None:
    """A webhook request was answered with `status` after `seconds`.

    A source is counted under its name once it is known: it has a secret of its own, or a
    request to it proved that its sender holds the secret (here or before, in this
    process). Anyone can send unsigned requests to made-up sources: those are all counted
    as UNKNOWN_SOURCE.
    """
    known = status != 404 and (
        verified
        or 200 <= status < 300
        or source in m._label_values["source"]
        or _configured(m, source)
    )
    label = m.bounded("source", source) if known else UNKNOWN_SOURCE
    m.inc("lytbridge_webhook_requests_total", {"source": label, "status": str(status)})
    if 200 <= status < 300:
        m.observe("lytbridge_webhook_ack_seconds", seconds, {"source": label})


@_safely
def webhook_events(m: Metrics, source: str, accepted: int, duplicates: int) -> None:
    """An acknowledged webhook carried `accepted` new and `duplicates` known events."""
    label = m.bounded("source", source)
    if accepted:
        m.inc("lytbridge_webhook_events_total", {"source": label, "outcome": "accepted"}, accepted)
    if duplicates:
        m.inc(
            "lytbridge_webhook_events_total", {"source": label, "outcome": "duplicate"}, duplicates
        )


@_safely
def event_handled(m: Metrics, event: Event, run: str = "") -> None:
    """A worker matches an event against the rules (replays, with a `run`, are not counted)."""
    if run:
        return
    labels = {"source": m.bounded("source", event.source), "type": m.bounded("type", event.type)}
    m.inc("lytbridge_events_total", labels)
    m.hourly("events")


@_safely
def rules_matched(m: Metrics, rule_ids: Iterable[str], run: str = "") -> None:
    """Rules matched an event (runs that dedupe or throttle then hold back included)."""
    for rule_id in rule_ids:
        m.inc("lytbridge_rule_matches_total", {"rule": rule_id})
        m.hourly(f"matches:{rule_id}")
        m.fired(rule_id)


@_safely
def step_traced(m: Metrics, fields: Mapping[str, Any]) -> None:
    """A step attempt ended; `fields` is its trace entry (rule, uses, status, duration_ms…)."""
    rule_id, uses, status = str(fields.get("rule")), str(fields.get("uses")), fields.get("status")
    m.inc("lytbridge_steps_total", {"rule": rule_id, "uses": uses, "status": str(status)})
    if "retry_in" in fields:
        m.inc("lytbridge_step_retries_total", {"rule": rule_id, "uses": uses})
    if "duration_ms" in fields and status != "skipped":
        seconds = float(fields["duration_ms"]) / 1000
        m.observe("lytbridge_step_duration_seconds", seconds, {"uses": uses}, STEP_BUCKETS)
    if status == "failed":
        m.hourly("failed")
        m.hourly(f"failed:{rule_id}")


@_safely
def dead_lettered(m: Metrics, rule_id: str) -> None:
    """A rule run exhausted its tries and became a dead letter."""
    m.inc("lytbridge_dead_letters_total", {"rule": rule_id})
    m.hourly("dead")
    m.hourly(f"dead:{rule_id}")


@_safely
def run_ended(m: Metrics, rule_id: str, outcome: str) -> None:
    """A rule run ended: `succeeded`, `succeeded_with_errors` or `dead_lettered`."""
    m.inc("lytbridge_runs_total", {"rule": rule_id, "outcome": outcome})


# --- reading (the web process) -----------------------------------------------------------


async def hourly_stats(m: Metrics, hours: int = 24) -> list[tuple[int, dict[str, int]]]:
    """The last `hours` hourly buckets, oldest first: (hour start, {field: count})."""
    await m.flush()
    now = hour_of(time.time())
    starts = [now - HOUR * i for i in range(hours - 1, -1, -1)]
    async with m.redis.pipeline(transaction=False) as pipe:
        for start in starts:
            pipe.hgetall(f"{m.hour_prefix}{start}")
        raws = await pipe.execute()
    return [
        (start, {k.decode(): int(v) for k, v in raw.items()})
        for start, raw in zip(starts, raws, strict=True)
    ]


async def last_fired(m: Metrics) -> dict[str, float]:
    """When each rule last matched an event (epoch seconds)."""
    raw = await m.redis.hgetall(m.last_fired_key)  # type: ignore[misc]
    return {k.decode(): float(v) for k, v in raw.items()}
