"""Traces: what happened to an event — rules considered, why they matched or not, each step.

Also the two walks every stored or shown value goes through: `redact` (no configured secret,
in a string or a key, at any depth) and `displayable` (what a page, the API or a terminal
can show of any stored value, whatever it holds).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis

from bridge.queue.redis_io import FastScript
from bridge.queue.store import Keys, dumps, loads
from bridge.redaction import MASK, displayable, redact, valid_text


def unreadable(why: str) -> dict[str, Any]:
    """The trace entry shown in place of one that cannot be decoded."""
    return {"at": 0, "kind": "unreadable", "error": f"this trace entry cannot be read: {why}"}


def decode_entry(raw: bytes | str) -> dict[str, Any]:
    """One stored trace entry; an `unreadable` entry when it is not a JSON object we can read."""
    try:
        entry = loads(raw)
    except RecursionError:
        return unreadable("nested too deep")
    except ValueError as exc:
        return unreadable(f"not JSON ({valid_text(str(exc))[:200]})")
    if not isinstance(entry, dict):
        return unreadable(f"a JSON {type(entry).__name__}, not an object")
    return entry


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
        self._needles = sorted(
            {form.encode() for s in self._secrets for form in (s, json.dumps(s)[1:-1])},
            key=len,
            reverse=True,
        )
        self._append = FastScript(redis, _APPEND)

    async def record(self, event_id: str, kind: str, **fields: Any) -> None:
        """Append one entry ({"at", "kind", …fields}) to the event's trace, secrets masked."""
        entry = {"at": round(time.time(), 3), "kind": kind, **fields}
        try:
            encoded = dumps(entry)
        except (ValueError, RecursionError, TypeError):
            # Nested too deep for the encoder, or containing itself: keep what can be shown.
            entry = displayable(entry)
            encoded = dumps(entry)
        # Walking every entry for secrets costs more than writing it; an entry that holds
        # none (nearly all) is written as encoded.
        if any(needle in encoded for needle in self._needles):
            encoded = dumps(redact(entry, self._secrets))
            # What redact() cannot reach (a secret in an object's repr) goes from the text.
            for needle in self._needles:
                encoded = encoded.replace(needle, MASK.encode())
        await self._append([self.keys.trace(event_id)], [encoded, self.ttl])

    async def read(self, event_id: str) -> list[dict[str, Any]]:
        """Every entry of the event's trace, oldest first (undecodable ones as `unreadable`)."""
        raw = await self.redis.lrange(self.keys.trace(event_id), 0, -1)  # type: ignore[misc]
        return [decode_entry(item) for item in raw]
