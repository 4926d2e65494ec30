"""Durable Redis writes: store events exactly once and enqueue their jobs atomically (→ queue).

Jobs are written in arq's own format (JSON-serialized), so an arq worker runs them, but
each write happens inside one Lua script: an event is either stored *and* queued, or
neither, and a duplicate id is recognised in the same step.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge.errors import StoreUnavailable
from bridge.events import Event
from bridge.redis_io import FastScript

ARQ_JOB_PREFIX = "arq:job:"
ARQ_RESULT_PREFIX = "arq:result:"
# arq drops a job that has not started a day after it was due (its expires_extra_ms).
JOB_EXPIRY_MS = 86_400_000
# Events in one ingest script call at most (a script holds Redis while it runs), unless a
# single webhook brings more (MAX_EVENTS_PER_REQUEST bounds those).
MAX_INGEST_BATCH = 256


def dumps(value: Any) -> bytes:
    """Compact JSON bytes; anything not JSON-able (an exception in a result) as its repr."""
    return json.dumps(value, separators=(",", ":"), default=repr).encode()


def loads(raw: bytes | str) -> Any:
    return json.loads(raw)


@dataclass(frozen=True)
class Keys:
    """Every Redis key lytbridge writes, in one place, under one prefix."""

    prefix: str

    def seen(self, event_id: str) -> str:
        return f"{self.prefix}seen:{event_id}"

    def event(self, event_id: str) -> str:
        return f"{self.prefix}event:{event_id}"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    def trace(self, event_id: str) -> str:
        return f"{self.prefix}trace:{event_id}"

    def steps(self, event_id: str, rule_id: str, run: str = "") -> str:
        return f"{self.prefix}steps:{event_id}:{run_name(rule_id, run)}"

    def attempts(self, event_id: str, rule_id: str, run: str = "") -> str:
        return f"{self.prefix}attempts:{event_id}:{run_name(rule_id, run)}"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}dlq"

    @property
    def dead_letter_index(self) -> str:
        return f"{self.prefix}dlq:index"

    def handle_job_id(self, event_id: str, run: str = "") -> str:
        return f"{self.prefix}handle:{event_id}" + (f"@{run}" if run else "")

    def run_job_id(self, event_id: str, rule_id: str, run: str = "", retry: int = 0) -> str:
        base = f"{self.prefix}run:{event_id}:{run_name(rule_id, run)}"
        return base if not retry else f"{base}:retry{retry}"


def run_name(rule_id: str, run: str) -> str:
    """A rule's runs for one event: the first has no name; replays are `rule@replay-…`."""
    return f"{rule_id}@{run}" if run else rule_id


# Workers wait on `<queue>:wake` for a token rather than polling: every script that adds
# ready jobs pushes one (bridge/jobqueue.py). A few tokens are kept, enough to wake every
# worker; a token without a job costs a worker one empty claim.
WAKE_SUFFIX = ":wake"
WAKE_TOKENS = 64
WAKE_LUA = f"""
redis.call('LPUSH', KEYS[1] .. '{WAKE_SUFFIX}', '1')
redis.call('LTRIM', KEYS[1] .. '{WAKE_SUFFIX}', 0, {WAKE_TOKENS - 1})
"""

# KEYS: queue, events index, then (seen, event, job) per event.
# ARGV: dedup ttl s, event ttl s, now ms, job expiry ms, then (event id, event json, job id,
# job payload) per event. Returns 1 per stored event, 0 per duplicate.
_INGEST = (
    """
local out = {}
local stored = 0
local n = (#KEYS - 2) / 3
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[2]) * 1000)
for i = 0, n - 1 do
  local a = 5 + i * 4
  if redis.call('SET', KEYS[3 + i * 3], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('SET', KEYS[4 + i * 3], ARGV[a + 1], 'EX', ARGV[2])
    redis.call('ZADD', KEYS[2], ARGV[3], ARGV[a])
    redis.call('PSETEX', KEYS[5 + i * 3], ARGV[4], ARGV[a + 3])
    redis.call('ZADD', KEYS[1], ARGV[3], ARGV[a + 2])
    out[#out + 1] = 1
    stored = 1
  else
    out[#out + 1] = 0
  end
end
if stored == 1 then
"""
    + WAKE_LUA
    + """
end
return out
"""
)

# KEYS: queue, then (job key, result key) per job. ARGV: job expiry ms, then (job id, score,
# payload) per job. A job whose id is queued, running or has a kept result is skipped.
_ENQUEUE = (
    """
local out = {}
local added = 0
local n = (#KEYS - 1) / 2
for i = 0, n - 1 do
  local a = 2 + i * 3
  if redis.call('EXISTS', KEYS[2 + i * 2], KEYS[3 + i * 2]) == 0 then
    redis.call('PSETEX', KEYS[2 + i * 2], ARGV[1], ARGV[a + 2])
    redis.call('ZADD', KEYS[1], ARGV[a + 1], ARGV[a])
    out[#out + 1] = 1
    added = 1
  else
    out[#out + 1] = 0
  end
end
if added == 1 then
"""
    + WAKE_LUA
    + """
end
return out
"""
)


# KEYS[1]: a hash. ARGV: field, increment, ttl s. Returns the new count.
_COUNT = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return n
"""

# KEYS[1]: a hash. ARGV: field, value, ttl s.
_PUT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
"""


def _failure(exc: BaseException) -> StoreUnavailable:
    """A fresh error for one caller of a failed group write (one exception raised by several
    awaits would grow its traceback with each)."""
    if isinstance(exc, StoreUnavailable):
        fresh = StoreUnavailable(str(exc))
        fresh.__cause__ = exc.__cause__
        return fresh
    return StoreUnavailable(f"the write of the events was cut short: {type(exc).__name__}")


def job_payload(function: str, args: Sequence[Any], enqueue_ms: int) -> bytes:
    """A job in arq's format, serialized as JSON (the worker's job_deserializer)."""
    return job_bytes(function, dumps(list(args)), enqueue_ms)


def job_bytes(function: str, encoded_args: bytes, enqueue_ms: int) -> bytes:
    """A job in arq's format around arguments already encoded as a JSON array."""
    return b'{"t":null,"f":"%s","a":%s,"k":{},"et":%d}' % (
        function.encode(),
        encoded_args,
        enqueue_ms,
    )


@dataclass(frozen=True)
class Job:
    """A job to enqueue: arq function name, arguments, id, and an optional delay."""

    function: str
    args: tuple[Any, ...]
    job_id: str
    defer_seconds: float = 0.0


class Store:
    """Atomic writes of events and jobs to Redis."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        queue_name: str,
        *,
        dedup_ttl: int,
        event_ttl: int,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.queue_name = queue_name
        self.dedup_ttl = dedup_ttl
        self.event_ttl = event_ttl
        self._ingest = FastScript(redis, _INGEST)
        self._enqueue = FastScript(redis, _ENQUEUE)
        self._count = FastScript(redis, _COUNT)
        self._put = FastScript(redis, _PUT)
        # The group commit of ingest(): calls waiting for the next script call.
        self._waiting: deque[tuple[Sequence[Event], asyncio.Future[list[bool]]]] = deque()
        self._writing = False
        self._drain_task: asyncio.Task[None] | None = None

    async def ingest(self, events: Sequence[Event]) -> list[bool]:
        """Store and enqueue each new event; False for a duplicate. Raises StoreUnavailable.

        Concurrent calls are written together (a group commit): while one script call is
        in flight, the calls that arrive wait and go, together, in the next one. Every
        call still returns only once its own events are stored.
        """
        if not events:
            return []
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append((events, future))
        if not self._writing:
            self._writing = True
            try:
                while not future.done():
                    await self._write_waiting()
            except BaseException:
                if future.done() and not future.cancelled():
                    future.exception()  # retrieved: this caller raises the original instead
                raise
            finally:
                self._hand_over()
        return await future

    def _hand_over(self) -> None:
        """After a caller's own events are written: a task writes what still waits."""
        if self._waiting:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())
        else:
            self._writing = False

    async def _drain(self) -> None:
        try:
            while self._waiting:
                await self._write_waiting()
        finally:
            self._writing = False
            if self._waiting:  # arrived as the loop ended: start again
                self._writing = True
                self._hand_over()

    async def _write_waiting(self) -> None:
        """One script call for the waiting calls' events (at most MAX_INGEST_BATCH, unless
        a single call brings more)."""
        batch: list[tuple[Sequence[Event], asyncio.Future[list[bool]]]] = []
        count = 0
        while self._waiting and (not batch or count + len(self._waiting[0][0]) <= MAX_INGEST_BATCH):
            item = self._waiting.popleft()
            batch.append(item)
            count += len(item[0])
        try:
            flags = await self._ingest_now([e for events, _ in batch for e in events])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(_failure(exc))
            if isinstance(exc, StoreUnavailable):
                return
            raise
        at = 0
        for events, future in batch:
            if not future.done():
                future.set_result(flags[at : at + len(events)])
            at += len(events)

    async def _ingest_now(self, events: Sequence[Event]) -> list[bool]:
        now_ms = int(time.time() * 1000)
        keys: list[str] = [self.queue_name, self.keys.events]
        args: list[Any] = [self.dedup_ttl, self.event_ttl, now_ms, JOB_EXPIRY_MS]
        for event in events:
            job_id = self.keys.handle_job_id(event.id)
            keys += [self.keys.seen(event.id), self.keys.event(event.id), ARQ_JOB_PREFIX + job_id]
            encoded = dumps(event.to_dict())
            # The job's only argument is the event: splice its JSON in, not encode it twice.
            job = job_bytes("handle_event", b"[%s]" % encoded, now_ms)
            args += [event.id, encoded, job_id, job]
        try:
            result = await self._ingest(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis cannot store events: {type(exc).__name__}") from exc
        return [bool(flag) for flag in result]

    async def enqueue(self, jobs: Sequence[Job]) -> list[bool]:
        """Enqueue jobs unless a job of the same id exists; True for each one enqueued."""
        if not jobs:
            return []
        now_ms = int(time.time() * 1000)
        keys: list[str] = [self.queue_name]
        args: list[Any] = [JOB_EXPIRY_MS]
        for job in jobs:
            keys += [ARQ_JOB_PREFIX + job.job_id, ARQ_RESULT_PREFIX + job.job_id]
            score = now_ms + int(job.defer_seconds * 1000)
            args += [job.job_id, score, job_payload(job.function, job.args, now_ms)]
        try:
            result = await self._enqueue(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis cannot enqueue jobs: {type(exc).__name__}") from exc
        return [bool(flag) for flag in result]

    async def count(self, key: str, field: str, by: int, ttl: int) -> int:
        """Add `by` to a counter in a hash kept `ttl` seconds; the new count."""
        return int(await self._count([key], [field, by, ttl]))

    async def put(self, key: str, field: str, value: bytes, ttl: int) -> None:
        """Set one field of a hash kept `ttl` seconds."""
        await self._put([key], [field, value, ttl])

    async def get_event(self, event_id: str) -> Event | None:
        raw = await self.redis.get(self.keys.event(event_id))
        return None if raw is None else Event.from_dict(loads(raw))
