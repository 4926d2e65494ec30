"""Durable Redis writes: store events exactly once and enqueue their jobs atomically (→ queue).

Jobs are written in arq's own format (JSON-serialized), so an arq worker runs them, but
each write happens inside one Lua script: an event is either stored *and* queued, or
neither, and a duplicate id is recognised in the same step.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge.errors import StoreUnavailable
from bridge.events import Event
from bridge.queue import scripts
from bridge.queue.codec import JOB_EXPIRY_MS as JOB_EXPIRY_MS
from bridge.queue.codec import dumps as dumps
from bridge.queue.codec import job_bytes as job_bytes
from bridge.queue.codec import job_payload as job_payload
from bridge.queue.codec import loads as loads
from bridge.queue.keys import ARQ_JOB_PREFIX as ARQ_JOB_PREFIX
from bridge.queue.keys import ARQ_RESULT_PREFIX as ARQ_RESULT_PREFIX
from bridge.queue.keys import Keys as Keys
from bridge.queue.keys import run_name as run_name
from bridge.queue.redis_io import FastScript
from bridge.queue.scripts import WAKE_LUA as WAKE_LUA

# Events in one ingest script call at most (a script holds Redis while it runs), unless a
# single webhook brings more (MAX_EVENTS_PER_REQUEST bounds those).
MAX_INGEST_BATCH = 256

# The ingest script trims the events index of entries older than the event ttl at most this
# often (ms) per Store, not in every call: after any ingest call the index holds no entry
# more than event_ttl + 60 s old (docs/queue.md).
INDEX_TRIM_EVERY_MS = 60_000


def _failure(exc: BaseException) -> StoreUnavailable:
    """A fresh error for one caller of a failed group write (one exception raised by several
    awaits would grow its traceback with each)."""
    if isinstance(exc, StoreUnavailable):
        fresh = StoreUnavailable(str(exc))
        fresh.__cause__ = exc.__cause__
        return fresh
    return StoreUnavailable(f"the write of the events was cut short: {type(exc).__name__}")


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
        self._ingest = FastScript(redis, scripts.INGEST)
        self._enqueue = FastScript(redis, scripts.ENQUEUE)
        self._put = FastScript(redis, scripts.PUT)
        # The group commit of ingest(): calls waiting for the next script call.
        self._waiting: deque[tuple[Sequence[Event], asyncio.Future[list[Admission]]]] = deque()
        self._writing = False
        self._drain_task: asyncio.Task[None] | None = None
        # When this Store's ingest last trimmed the events index (ms; None: never).
        self._index_trimmed_ms: int | None = None

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
        trimmed = self._index_trimmed_ms
        # A clock set back trims at once too.
        trim = trimmed is None or not 0 <= now_ms - trimmed < INDEX_TRIM_EVERY_MS
        keys: list[str] = [self.queue_name, self.keys.events]
        args: list[Any] = [
            self.keys.prefix,
            self.dedup_ttl,
            self.event_ttl,
            now_ms,
            JOB_EXPIRY_MS,
            "1" if trim else "0",
        ]
        for event in events:
            # The script writes the event record and its handle_event job (arq's format, the
            # event spliced in) from one copy of the JSON.
            args += [event.source, event.id, dumps(event.to_dict())]
        try:
            result = await self._ingest(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis cannot store events: {type(exc).__name__}") from exc
        if trim:
            self._index_trimmed_ms = now_ms
        return [Admission(bool(result[i]), _text(result[i + 1])) for i in range(0, len(result), 2)]

    async def enqueue(self, jobs: Sequence[Job]) -> list[bool]:
        """Enqueue jobs unless a job of the same id exists; True for each one enqueued."""
        if not jobs:
            return []
        now_ms = int(time.time() * 1000)
        keys: list[str] = [self.queue_name]
        args: list[Any] = [JOB_EXPIRY_MS]
        for job in jobs:
            keys += [Keys.job(job.job_id), Keys.result(job.job_id)]
            score = now_ms + int(job.defer_seconds * 1000)
            args += [job.job_id, score, job_payload(job.function, job.args, now_ms)]
        try:
            result = await self._enqueue(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis cannot enqueue jobs: {type(exc).__name__}") from exc
        return [bool(flag) for flag in result]

    async def put(self, key: str, field: str, value: bytes, ttl: int) -> None:
        """Set one field of a hash kept `ttl` seconds."""
        await self._put([key], [field, value, ttl])

    async def get_event(self, event_id: str) -> Event | None:
        raw = await self.redis.get(self.keys.event(event_id))
        return None if raw is None else Event.from_dict(loads(raw))
