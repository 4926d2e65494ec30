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

from bridge.queue.codec import FINISH_APPENDS
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


# KEYS: the trace, a hash (the trace again when none). ARGV: the trace's ttl in seconds, what
# to do to the hash ('' nothing, 'incr' HINCRBY, 'set' HSET), its field, the value or
# increment, the hash's ttl, then the entries to append. Returns the new count of an 'incr'.
_WRITE = """
local n = 0
if ARGV[2] == 'incr' then
  n = redis.call('HINCRBY', KEYS[2], ARGV[3], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
elseif ARGV[2] == 'set' then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
if #ARGV > 5 then
  redis.call('RPUSH', KEYS[1], unpack(ARGV, 6))
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return n
"""
_NO_HASH_OP = ("", "", 0, 0)  # a write of trace entries only


class Tracer:
    """Append-only trace entries per event, kept as long as the event.

    An entry may be held back (`hold`) to go with the event's next write, in the same round
    trip and in order: a run's step counter or result (`count`, `put`), `flush`, or the
    job's finish (`hand_over`).
    """

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
        self._write = FastScript(redis, _WRITE)
        self._held: dict[str, list[bytes]] = {}

    def encode(self, kind: str, **fields: Any) -> bytes:
        """One entry ({"at", "kind", …fields}) as stored, secrets masked."""
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
        return encoded

    async def record(self, event_id: str, kind: str, **fields: Any) -> None:
        """Append one entry to the event's trace now (after any held back)."""
        await self._send(event_id, [self.encode(kind, **fields)], _NO_HASH_OP, None)

    def hold(self, event_id: str, entry: bytes) -> None:
        """Keep an encoded entry back until the event's next write (or `flush`)."""
        self._held.setdefault(event_id, []).append(entry)

    async def hand_over(self, event_id: str, ctx: dict[str, Any]) -> None:
        """Give what is held back for the event to the job's finish (one script with it,
        bridge/queue/worker.py); written now when the job runs elsewhere (no such hand)."""
        appends = ctx.get(FINISH_APPENDS)
        held = self._held.pop(event_id, None)
        if not held:
            return
        if isinstance(appends, list):
            appends.append((self.keys.trace(event_id), self.ttl, held))
            return
        self._held[event_id] = held
        await self.flush(event_id)

    async def flush(self, event_id: str) -> None:
        """Write what is held back for the event, if anything."""
        if event_id in self._held:
            await self._send(event_id, [], _NO_HASH_OP, None)

    async def count(self, event_id: str, key: str, field: str, by: int, ttl: int) -> int:
        """Add `by` to a counter in a hash kept `ttl` s (what is held back goes along)."""
        return await self._send(event_id, [], ("incr", field, by, ttl), key)

    async def put(
        self, event_id: str, key: str, field: str, value: bytes, ttl: int, entry: bytes
    ) -> None:
        """Set one field of a hash kept `ttl` s and append `entry`, in one step."""
        await self._send(event_id, [entry], ("set", field, value, ttl), key)

    async def _send(
        self,
        event_id: str,
        entries: list[bytes],
        op: tuple[str, str, bytes | int, int],
        hash_key: str | None,
    ) -> int:
        held = self._held.pop(event_id, [])
        trace = self.keys.trace(event_id)
        try:
            return int(
                await self._write([trace, hash_key or trace], [self.ttl, *op, *held, *entries])
            )
        except BaseException:
            if held:  # not written: still held, in order, for the next write
                self._held[event_id] = held + self._held.get(event_id, [])
            raise

    async def read(self, event_id: str) -> list[dict[str, Any]]:
        """Every entry of the event's trace, oldest first (undecodable ones as `unreadable`)."""
        raw = await self.redis.lrange(self.keys.trace(event_id), 0, -1)  # type: ignore[misc]
        return [decode_entry(item) for item in raw]
