"""Dead letters: rule runs that exhausted their tries, kept in Redis until retried or dropped.

A letter's id is stable for its run (event, rule, run name): a run dead-lettered again,
after a retry, is listed under the same id. A retry moves a letter from "dead" to
"retrying" in one Lua script, which also enqueues the run: there is no moment at which the
run is queued while its old letter is still listed, so the new letter of a retry that fails
again can never be removed by the retry's clean-up, and two retries of one letter start one
run. What a letter stores (the error text, the event) has every configured secret masked.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from bridge.errors import StoreUnavailable
from bridge.events import Event
from bridge.queue.redis_io import FastScript
from bridge.queue.store import (
    JOB_EXPIRY_MS,
    WAKE_LUA,
    dumps,
    job_payload,
    loads,
)
from bridge.redaction import redact

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from bridge.queue.store import Keys

MASK = b"**********"

# KEYS: letters hash, letters index, the run's attempts hash, queue, job key, the trace.
# ARGV: letter id, the letter as read, the failed step, job id, job score, job payload,
# job expiry ms, the trace entry, the trace's ttl s. Returns 1 when the letter was taken,
# its run queued and the retry traced (before anything the run traces); 0 when the letter
# is gone or changed since it was read (nothing is done then).
_RETRY = (
    """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[3])
redis.call('PSETEX', KEYS[5], ARGV[7], ARGV[6])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
redis.call('RPUSH', KEYS[6], ARGV[8])
redis.call('EXPIRE', KEYS[6], ARGV[9])
"""
    + WAKE_LUA
    + """
return 1
"""
)

# A retry re-reads a letter that changed between its read and its move (a newer failure of
# the same run) this many times at most.
RETRY_READS = 5


class SecretMask:
    """Masks every configured secret in what is about to be stored in Redis.

    Checking the encoded bytes for a secret costs far less than walking a value, so a value
    that holds none (nearly all) is stored as encoded; one that does is redacted (values
    and keys, through `bridge.jobs.traces.redact`) and, for what redact cannot reach, masked in
    the text as well.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        # A secret inside a JSON string is written escaped: look for both forms.
        self.needles = sorted(
            {form.encode() for s in self.secrets for form in (s, json.dumps(s)[1:-1])},
            key=len,
            reverse=True,
        )

    def dumps(self, value: Any) -> bytes:
        """`value` as compact JSON with no secret in it."""
        encoded = dumps(value)
        if not any(needle in encoded for needle in self.needles):
            return encoded
        encoded = dumps(redact(value, self.secrets))
        for needle in self.needles:
            encoded = encoded.replace(needle, MASK)
        return encoded

    def value(self, value: Any) -> Any:
        """`value` with no secret in it (itself when it holds none)."""
        encoded = dumps(value)
        if not any(needle in encoded for needle in self.needles):
            return value
        return loads(self.dumps(value))

    def text(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK.decode())
        return text


@dataclass(frozen=True)
class DeadLetter:
    """A rule run that failed for good, with what is needed to retry it."""

    id: str
    event_id: str
    rule_id: str
    run: str
    step: str
    uses: str
    error: str
    attempts: int
    failed_at: float
    event: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dead_letter_id(event_id: str, rule_id: str, run: str = "") -> str:
    """A short, stable id: the same run dead-lettered again replaces its letter."""
    return "dl_" + hashlib.sha256(f"{event_id}\x00{rule_id}\x00{run}".encode()).hexdigest()[:12]


class DeadLetters:
    """The dead-letter list of a bridge: add, list, get, retry, drop."""

    def __init__(
        self, redis: Redis, keys: Keys, mask: SecretMask, *, queue_name: str, trace_ttl: int
    ) -> None:
        """One per process (the composition root's): `queue_name` takes retried runs,
        `trace_ttl` (seconds) is how long the retry's trace entry is kept."""
        self.redis = redis
        self.keys = keys
        self.mask = mask
        self.queue_name = queue_name
        self.trace_ttl = trace_ttl
        self._retry = FastScript(redis, _RETRY)

    async def add(
        self,
        event: Event,
        rule_id: str,
        run: str,
        step: str,
        uses: str,
        error: str,
        attempts: int,
    ) -> DeadLetter:
        """Store (or replace) the letter of a run; the error and the event stored masked."""
        letter = DeadLetter(
            id=dead_letter_id(event.id, rule_id, run),
            event_id=event.id,
            rule_id=rule_id,
            run=run,
            step=step,
            uses=uses,
            error=self.mask.text(error),
            attempts=attempts,
            failed_at=round(time.time(), 3),
            event=self.mask.value(event.to_dict()),
        )
        record = self.mask.dumps(letter.to_dict())
        if letter.event_id.encode() not in record:
            # The id itself held a secret: keep it, or a retry would run under another id
            # (other step results, tries and trace); outputs mask it when shown.
            record = dumps(loads(record) | {"event_id": letter.event_id})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.dead_letters, letter.id, record)  # type: ignore[arg-type]
            pipe.zadd(self.keys.dead_letter_index, {letter.id: letter.failed_at})
            await pipe.execute()
        return letter

    async def list(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters first."""
        ids = await self.redis.zrevrange(self.keys.dead_letter_index, 0, max(0, limit - 1))
        if not ids:
            return []
        raws = await self.redis.hmget(self.keys.dead_letters, ids)  # type: ignore[misc]
        return [DeadLetter(**loads(raw)) for raw in raws if raw is not None]

    async def count(self) -> int:
        return int(await self.redis.zcard(self.keys.dead_letter_index))

    async def get(self, letter_id: str) -> DeadLetter | None:
        raw = await self.redis.hget(self.keys.dead_letters, letter_id)  # type: ignore[misc]
        return None if raw is None else DeadLetter(**loads(raw))

    async def retry(self, letter_id: str) -> DeadLetter | None:
        """Run the rule again from its failed step (finished steps stay done); None if unknown.

        The letter leaves the list and its run is queued in one step, so every failed run
        stays listed exactly once: a retry that fails again is listed anew, under the same
        id; a letter retried twice at once starts one run (the second retry finds nothing).
        """
        for _ in range(RETRY_READS):
            raw = await self.redis.hget(self.keys.dead_letters, letter_id)  # type: ignore[misc]
            if raw is None:
                return None
            letter = DeadLetter(**loads(raw))
            # The stored event may have had a secret masked, its id included: the run
            # keeps the id it was stored under.
            event = {**letter.event, "id": letter.event_id}
            job_id = self.keys.run_job_id(
                letter.event_id, letter.rule_id, letter.run, retry=time.time_ns()
            )
            now_ms = int(time.time() * 1000)
            payload = job_payload("run_rule", (event, letter.rule_id, letter.run), now_ms)
            keys = [
                self.keys.dead_letters,
                self.keys.dead_letter_index,
                self.keys.attempts(letter.event_id, letter.rule_id, letter.run),
                self.queue_name,
                self.keys.job(job_id),
                self.keys.trace(letter.event_id),
            ]
            entry = {
                "at": round(time.time(), 3),
                "kind": "retried",
                "rule": letter.rule_id,
                **({"run": letter.run} if letter.run else {}),
                "dead_letter": letter.id,
                "step": letter.step,
            }
            args = [
                letter_id,
                raw,
                letter.step,
                job_id,
                now_ms,
                payload,
                JOB_EXPIRY_MS,
                self.mask.dumps(entry),
                self.trace_ttl,
            ]
            if await self._retry(keys, args):
                return letter
        raise StoreUnavailable(
            f"dead letter {letter_id} kept changing while it was being retried; try again"
        )

    async def drop(self, letter_id: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.dead_letters, letter_id)
            pipe.zrem(self.keys.dead_letter_index, letter_id)
            removed, _ = await pipe.execute()
        return bool(removed)
