"""Snapshots in Redis: the last seen state of polled objects, advanced only after ingest.

A snapshot keeps, per object id, only the fields a poller compares (compact JSON), plus
a small state hash of cursors. Every change of a run is one `Commit`, written in one
MULTI/EXEC *after* `Store.ingest` stored the run's events: a crash in between re-reads
the same old snapshot, finds the same differences, and so produces the same event ids,
which the store drops as duplicates. Nothing is lost and nothing is emitted twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from redis.asyncio import Redis

from bridge.events import Event, stable_id
from bridge.queue.keys import Keys
from bridge.queue.store import Store

Compact = dict[str, Any]


def encode(compact: Mapping[str, Any]) -> str:
    return json.dumps(compact, sort_keys=True, separators=(",", ":"), default=str)


def decode(raw: bytes | str | None) -> Compact | None:
    if raw is None:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else None


def changes(
    old: Mapping[str, Any], new: Mapping[str, Any], fields: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """`{field: {"from": old, "to": new}}` for each of `fields` whose value differs."""
    return {
        name: {"from": old.get(name), "to": new.get(name)}
        for name in fields
        if old.get(name) != new.get(name)
    }


@dataclass
class Commit:
    """The snapshot writes of one step of a run, applied together or not at all."""

    puts: dict[str, dict[str, str]] = field(default_factory=dict)
    drops: dict[str, set[str]] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)
    set_adds: dict[str, set[str]] = field(default_factory=dict)
    set_removes: dict[str, set[str]] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)

    def put(self, key: str, object_id: str, compact: Mapping[str, Any]) -> None:
        self.puts.setdefault(key, {})[object_id] = encode(compact)

    def drop(self, key: str, object_id: str) -> None:
        self.drops.setdefault(key, set()).add(object_id)

    def add(self, key: str, members: Iterable[str]) -> None:
        self.set_adds.setdefault(key, set()).update(members)

    def remove(self, key: str, members: Iterable[str]) -> None:
        self.set_removes.setdefault(key, set()).update(members)

    def delete(self, key: str) -> None:
        self.deletes.add(key)


class Snapshot:
    """One poller's snapshot: object hashes per collection, sets, and a state hash."""

    def __init__(self, redis: Redis, key_prefix: str, poller: str) -> None:
        self.redis = redis
        self.base = Keys(key_prefix).poller(poller)

    def key(self, name: str) -> str:
        """The Redis key of one part of this snapshot (`assets`, `seen`, …)."""
        return self.base + name

    @property
    def state_key(self) -> str:
        return self.base + "state"

    async def state(self) -> dict[str, str]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.state_key)  # type: ignore[misc]
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def get(self, collection: str, ids: Sequence[str]) -> dict[str, Compact | None]:
        """The compact entries of `ids` (None where the snapshot has none)."""
        if not ids:
            return {}
        values = await self.redis.hmget(self.key(collection), list(ids))  # type: ignore[misc]
        return {object_id: decode(raw) for object_id, raw in zip(ids, values, strict=True)}

    async def all(self, collection: str) -> dict[str, Compact]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.key(collection))  # type: ignore[misc]
        out: dict[str, Compact] = {}
        for key, value in raw.items():
            entry = decode(value)
            if entry is not None:
                out[key.decode()] = entry
        return out

    async def ids(self, collection: str) -> set[str]:
        raw: list[bytes] = await self.redis.hkeys(self.key(collection))  # type: ignore[misc]
        return {k.decode() for k in raw}

    async def members(self, name: str) -> set[str]:
        raw: set[bytes] = await self.redis.smembers(self.key(name))  # type: ignore[misc]
        return {m.decode() for m in raw}

    async def commit(self, commit: Commit) -> None:
        """Apply every write of `commit` in one transaction."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in commit.deletes:
                pipe.delete(key)
            for key, entries in commit.puts.items():
                pipe.hset(key, mapping=entries)
            for key, ids in commit.drops.items():
                pipe.hdel(key, *ids)
            for key, members in commit.set_adds.items():
                if members:
                    pipe.sadd(key, *members)
            for key, members in commit.set_removes.items():
                if members:
                    pipe.srem(key, *members)
            if commit.state:
                pipe.hset(self.state_key, mapping=commit.state)
            await pipe.execute()


async def record(store: Store, snapshot: Snapshot, events: Sequence[Event], commit: Commit) -> int:
    """Store the events, then advance the snapshot; return how many events were new."""
    stored = sum(await store.ingest(events)) if events else 0
    # Only now may the snapshot move on: before this line, a crash loses nothing.
    await snapshot.commit(commit)
    return stored


def polled_event(
    source: str,
    event_type: str,
    object_id: str,
    version: Any,
    data: Any,
    *,
    change: Mapping[str, Any] | None = None,
    time: str | None = None,
    reason: str | None = None,
    subject: str | None = None,
) -> Event:
    """An event about one polled object, its id stable for (object, version, change).

    `reason` sets apart events emitted on purpose (a backfill) from those of changes.
    """
    diff = {k: dict(v) for k, v in (change or {}).items()}
    parts: tuple[Any, ...] = (source, object_id, version, event_type, diff)
    event = Event(
        id=stable_id(*parts, reason) if reason else stable_id(*parts),
        source=source,
        type=event_type,
        subject=object_id if subject is None else subject,
        data=data,
        changes=diff,
    )
    return event if time is None else replace(event, time=time)
