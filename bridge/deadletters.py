"""Dead letters: rule runs that exhausted their tries, kept in Redis until retried or dropped."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from bridge.events import Event
from bridge.store import Job, dumps, loads

if TYPE_CHECKING:
    from bridge.context import Context


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

    def __init__(self, bridge: Context) -> None:
        self.bridge = bridge
        self.redis = bridge.redis
        self.keys = bridge.keys

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
        letter = DeadLetter(
            id=dead_letter_id(event.id, rule_id, run),
            event_id=event.id,
            rule_id=rule_id,
            run=run,
            step=step,
            uses=uses,
            error=error,
            attempts=attempts,
            failed_at=round(time.time(), 3),
            event=event.to_dict(),
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.dead_letters, letter.id, dumps(letter.to_dict()))  # type: ignore[arg-type]
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
        """Run the rule again from its failed step (finished steps stay done); None if unknown."""
        letter = await self.get(letter_id)
        if letter is None:
            return None
        attempts = self.keys.attempts(letter.event_id, letter.rule_id, letter.run)
        await self.redis.hdel(attempts, letter.step)  # type: ignore[misc]
        job_id = self.keys.run_job_id(
            letter.event_id, letter.rule_id, letter.run, retry=time.time_ns()
        )
        # Enqueue before removing the letter: a crash in between leaves a letter, never a loss.
        job = Job("run_rule", (letter.event, letter.rule_id, letter.run), job_id)
        await self.bridge.store.enqueue([job])
        await self.drop(letter_id)
        return letter

    async def drop(self, letter_id: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.dead_letters, letter_id)
            pipe.zrem(self.keys.dead_letter_index, letter_id)
            removed, _ = await pipe.execute()
        return bool(removed)
