"""Traces: what happened to an event — rules considered, why they matched or not, each step."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis

from bridge.store import Keys, dumps, loads


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """`value` with every secret string replaced by `**********`, recursively."""
    secrets = [s for s in secrets if s]
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "**********")
        return value
    if isinstance(value, dict):
        return {k: redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    return value


class Tracer:
    """Append-only trace entries per event, kept as long as the event."""

    def __init__(self, redis: Redis, keys: Keys, ttl: int, secrets: Iterable[str] = ()) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = ttl
        self._secrets = list(secrets)

    async def record(self, event_id: str, kind: str, **fields: Any) -> None:
        """Append one entry ({"at", "kind", …fields}) to the event's trace."""
        entry = {"at": round(time.time(), 3), "kind": kind, **redact(fields, self._secrets)}
        key = self.keys.trace(event_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, dumps(entry))
            pipe.expire(key, self.ttl)
            await pipe.execute()

    async def read(self, event_id: str) -> list[dict[str, Any]]:
        """Every entry of the event's trace, oldest first."""
        raw = await self.redis.lrange(self.keys.trace(event_id), 0, -1)  # type: ignore[misc]
        return [loads(item) for item in raw]
