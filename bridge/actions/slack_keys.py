"""Where slack.post keeps its threads and living messages: one Redis hash per key
(`thread_key`, `message_key`) holding the message's channel id and `ts`, a claim per key
while its first message is being posted, and a record per step of what it posted.

- A key lives KEY_TTL seconds after its last use (every use renews it).
- The first post for a key is made by whoever claims the key (SET NX with a lease); the
  others wait for its record. A lease that runs out (its worker died) lets another claim.
- What a step posted is recorded under the step, in the same transaction as the key,
  before the step returns: a retry after a crash finds it and returns it instead of
  posting again (docs/slack.md, "Retries never post twice").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from bridge.queue.keys import Keys

# A thread or living message is found by its key for 30 days after its last use.
KEY_TTL = 30 * 24 * 3600
# How long a claim on a key's first post holds before another worker may take it over.
CLAIM_TTL = 60
# Rendered keys longer than this are stored by their SHA-256 (Redis takes any bytes, but
# a key is also shown in errors and read by people).
MAX_KEY_TEXT = 200
KINDS = ("thread", "message")

# Delete the key's record only if it still names the message found gone (another worker
# may already have started the next one).
_FORGET = """
if redis.call('HGET', KEYS[1], 'ts') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_SET_PERMALINK = """
if redis.call('HGET', KEYS[1], 'ts') == ARGV[1] then
  return redis.call('HSET', KEYS[1], 'permalink', ARGV[2])
end
return 0
"""
# Drop a claim only if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def key_text(key: Any) -> str:
    """A rendered key as stored: its text, or `sha256:<hex>` when it is long."""
    text = str(key).strip()
    if len(text) <= MAX_KEY_TEXT:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class SlackKeys:
    """The Redis side of `thread_key` and `message_key` (see the module docstring)."""

    def __init__(self, redis: Redis, keys: Keys, ttl: int = KEY_TTL) -> None:
        self.redis, self.keys, self.ttl = redis, keys, ttl

    async def step(self, step_id: str) -> dict[str, Any] | None:
        """What this step posted on an earlier try, if it got that far."""
        raw = await self.redis.get(self.keys.slack_step(step_id))
        found = json.loads(raw) if raw else None
        return found if isinstance(found, dict) else None

    async def find(self, kind: str, scope: str, key: str) -> dict[str, str] | None:
        """The message a key names ({channel, ts, permalink?}); its life is renewed."""
        name = self.keys.slack_key(kind, scope, key)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(name)
            pipe.expire(name, self.ttl)
            raw, _ = await pipe.execute()
        found = {k.decode(): v.decode() for k, v in raw.items()}
        return found if found.get("channel") and found.get("ts") else None

    async def claim(self, kind: str, scope: str, key: str, owner: str) -> bool:
        """Whether `owner` may post the key's first message: it claimed the key now, or
        holds it from an earlier try of the same step."""
        name = self.keys.slack_claim(kind, scope, key)
        if await self.redis.set(name, owner, nx=True, ex=CLAIM_TTL):
            return True
        held = await self.redis.get(name)
        if held is not None and held.decode() == owner:
            await self.redis.expire(name, CLAIM_TTL)
            return True
        return False

    async def release(self, kind: str, scope: str, key: str, owner: str) -> None:
        await self.redis.eval(_RELEASE, 1, self.keys.slack_claim(kind, scope, key), owner)  # type: ignore[misc]

    async def record(
        self,
        step_id: str,
        result: Mapping[str, Any],
        *,
        kind: str,
        scope: str,
        key: str,
        message: Mapping[str, str] | None = None,
        owner: str | None = None,
    ) -> None:
        """In one transaction: the step's result, the key's message (when it changed),
        the key's life renewed, and the claim dropped."""
        name = self.keys.slack_key(kind, scope, key)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.slack_step(step_id), json.dumps(dict(result)), ex=self.ttl)
            if message is not None:
                pipe.delete(name)
                pipe.hset(name, mapping=dict(message))
            pipe.expire(name, self.ttl)
            if owner is not None:
                pipe.delete(self.keys.slack_claim(kind, scope, key))
            await pipe.execute()

    async def remember(self, step_id: str, result: Mapping[str, Any]) -> None:
        """The step's result again, with what was learnt after it was first recorded."""
        await self.redis.set(self.keys.slack_step(step_id), json.dumps(dict(result)), ex=self.ttl)

    async def set_permalink(self, kind: str, scope: str, key: str, ts: str, link: str) -> None:
        """Keep a message's permalink with its key, if the key still names message `ts`."""
        name = self.keys.slack_key(kind, scope, key)
        await self.redis.eval(_SET_PERMALINK, 1, name, ts, link)  # type: ignore[misc]

    async def forget(self, kind: str, scope: str, key: str, ts: str) -> None:
        """The key's message `ts` is gone (deleted in Slack): the key names nothing now."""
        await self.redis.eval(_FORGET, 1, self.keys.slack_key(kind, scope, key), ts)  # type: ignore[misc]
