"""Traces: what happened to an event — rules considered, why they matched or not, each step."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis

from bridge.redis_io import FastScript
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


# KEYS[1]: the trace. ARGV: the entry, the trace's ttl in seconds.
_APPEND = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
"""


class Tracer:
    """Append-only trace entries per event, kept as long as the event."""

    def __init__(self, redis: Redis, keys: Keys, ttl: int, secrets: Iterable[str] = ()) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = ttl
        self._secrets = [s for s in secrets if s]
        # A secret inside a JSON string is written escaped: look for both forms.
        self._needles = {form.encode() for s in self._secrets for form in (s, json.dumps(s)[1:-1])}
        self._append = FastScript(redis, _APPEND)

    async def record(self, event_id: str, kind: str, **fields: Any) -> None:
        """Append one entry ({"at", "kind", …fields}) to the event's trace."""
        entry = {"at": round(time.time(), 3), "kind": kind, **fields}
        encoded = dumps(entry)
        # Walking every entry for secrets costs more than writing it; an entry that holds
        # none (nearly all) is written as encoded.
        if any(needle in encoded for needle in self._needles):
            encoded = dumps({"at": entry["at"], "kind": kind, **redact(fields, self._secrets)})
            # What redact() cannot reach (a secret in an object's repr) goes from the text.
            for needle in self._needles:
                encoded = encoded.replace(needle, b"**********")
        await self._append([self.keys.trace(event_id)], [encoded, self.ttl])

    async def read(self, event_id: str) -> list[dict[str, Any]]:
        """Every entry of the event's trace, oldest first."""
        raw = await self.redis.lrange(self.keys.trace(event_id), 0, -1)  # type: ignore[misc]
        return [loads(item) for item in raw]
