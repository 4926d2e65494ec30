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
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge.errors import StoreUnavailable
from bridge.events import MAX_ID_LENGTH, Event
from bridge.queue.redis_io import FastScript

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
        """A stored id, holding the source that owns it (written by the ingest script)."""
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
        # The ingest script builds the first run's id the same way: `<prefix>handle:<id>`.
        return f"{self.prefix}handle:{event_id}" + (f"@{run}" if run else "")

    def run_job_id(self, event_id: str, rule_id: str, run: str = "", retry: int = 0) -> str:
        base = f"{self.prefix}run:{event_id}:{run_name(rule_id, run)}"
        return base if not retry else f"{base}:retry{retry}"


def run_name(rule_id: str, run: str) -> str:
    """A rule's runs for one event: the first has no name; replays are `rule@replay-…`."""
    return f"{rule_id}@{run}" if run else rule_id


# Workers wait on `<queue>:wake` for a token rather than polling: every script that adds
# ready jobs pushes one (bridge/queue/worker.py). A few tokens are kept, enough to wake every
# worker; a token without a job costs a worker one empty claim.
WAKE_SUFFIX = ":wake"
WAKE_TOKENS = 64
WAKE_LUA = f"""
redis.call('LPUSH', KEYS[1] .. '{WAKE_SUFFIX}', '1')
redis.call('LTRIM', KEYS[1] .. '{WAKE_SUFFIX}', 0, {WAKE_TOKENS - 1})
"""

# The ingest script. Duplicates are recognised per source (CloudEvents: source + id identify
# an event): `seen:<stored id>` holds the source that owns the id. An event whose id another
# source already owns is stored under `<source>:<id>` instead (hashed when long), so no
# sender can pre-empt another's events; and should that be taken too (a sender sent it on
# purpose), under a fresh id remembered in `alias:<sha1 of source and id>`, a key no sender
# names. Either way the caller learns the id each event is stored under.
#
# KEYS: queue, events index. ARGV: key prefix, dedup ttl s, event ttl s, now ms, job expiry
# ms, then (source, id, event json) per event; the json opens with its specversion and id.
# Returns (1 stored | 0 duplicate, stored id) per event.
_INGEST = (
    """
local prefix = ARGV[1]
local dedup_ttl = ARGV[2]
local now = ARGV[4]
local out = {}
local stored = 0
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(now) - tonumber(ARGV[3]) * 1000)
local function bounded(id)
  if #id > """
    + str(MAX_ID_LENGTH)
    + """ then return 'evt_' .. string.sub(redis.sha1hex(id), 1, 32) end
  return id
end
-- The stored id for one event: {id, true} when new, {id, false} when a duplicate.
local function claim(source, id)
  local candidates = {id, bounded(source .. ':' .. id)}
  for _, candidate in ipairs(candidates) do
    local seen = prefix .. 'seen:' .. candidate
    local owner = redis.call('GET', seen)
    if not owner then
      redis.call('SET', seen, source, 'EX', dedup_ttl)
      return candidate, true
    end
    -- '1' marks ids stored before duplicates were told apart by source.
    if owner == source or owner == '1' then return candidate, false end
  end
  local alias = prefix .. 'alias:' .. redis.sha1hex(source .. '\\n' .. id)
  local known = redis.call('GET', alias)
  if known then return known, false end
  for _ = 1, 16 do
    local n = redis.call('INCR', prefix .. 'alias:next')
    local candidate = 'evt_' .. string.sub(redis.sha1hex(alias .. '#' .. n), 1, 32)
    local seen = prefix .. 'seen:' .. candidate
    if redis.call('SET', seen, source, 'NX', 'EX', dedup_ttl) then
      redis.call('SET', alias, candidate, 'EX', dedup_ttl)
      return candidate, true
    end
  end
  return redis.error_reply('no free id for the event')
end
for a = 6, #ARGV, 3 do
  local source, id, event = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local stored_id, new = claim(source, id)
  if new then
    if stored_id ~= id then
      -- The same event under its stored id: the id is the second attribute.
      local rest = string.find(event, ',"source":', 1, true)
      event = '{"specversion":"1.0","id":' .. cjson.encode(stored_id) .. string.sub(event, rest)
    end
    local job_id = prefix .. 'handle:' .. stored_id
    redis.call('SET', prefix .. 'event:' .. stored_id, event, 'EX', ARGV[3])
    redis.call('ZADD', KEYS[2], now, stored_id)
    redis.call('PSETEX', '"""
    + ARQ_JOB_PREFIX
    + """' .. job_id, ARGV[5],
      '{"t":null,"f":"handle_event","a":[' .. event .. '],"k":{},"et":' .. now .. '}')
    redis.call('ZADD', KEYS[1], now, job_id)
    out[#out + 1] = 1
    stored = 1
  else
    out[#out + 1] = 0
  end
  out[#out + 1] = stored_id
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


class Admission(NamedTuple):
    """What ingest did with one event: stored it (`new`) or knew it, and under which id."""

    new: bool
    id: str


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


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
        self._waiting: deque[tuple[Sequence[Event], asyncio.Future[list[Admission]]]] = deque()
        self._writing = False
        self._drain_task: asyncio.Task[None] | None = None

    async def ingest(self, events: Sequence[Event]) -> list[bool]:
        """Store and enqueue each new event; False for a duplicate. Raises StoreUnavailable."""
        return [admission.new for admission in await self.admit(events)]

    async def admit(self, events: Sequence[Event]) -> list[Admission]:
        """Store and enqueue each new event; for each, whether it was new and the id it is
        stored under (its own, unless another source owns that id). Raises StoreUnavailable.

        Concurrent calls are written together (a group commit): while one script call is
        in flight, the calls that arrive wait and go, together, in the next one. Every
        call still returns only once its own events are stored.
        """
        if not events:
            return []
        future: asyncio.Future[list[Admission]] = asyncio.get_running_loop().create_future()
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
        batch: list[tuple[Sequence[Event], asyncio.Future[list[Admission]]]] = []
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

    async def _ingest_now(self, events: Sequence[Event]) -> list[Admission]:
        now_ms = int(time.time() * 1000)
        keys: list[str] = [self.queue_name, self.keys.events]
        args: list[Any] = [self.keys.prefix, self.dedup_ttl, self.event_ttl, now_ms, JOB_EXPIRY_MS]
        for event in events:
            # The script writes the event record and its handle_event job (arq's format, the
            # event spliced in) from one copy of the JSON.
            args += [event.source, event.id, dumps(event.to_dict())]
        try:
            result = await self._ingest(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis cannot store events: {type(exc).__name__}") from exc
        return [Admission(bool(result[i]), _text(result[i + 1])) for i in range(0, len(result), 2)]

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
