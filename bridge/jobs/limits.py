"""Dedupe and throttle of rule runs, kept in Redis and shared by every worker (decide).

A matched rule runs only when its dedupe key has not been booked while it lives and its
throttle window has room; both are checked and booked in one Lua script, so two workers
can never both pass the same key, and a suppressed run books nothing.

A slot counts only for a run that did not fail: a run that ends in the dead letters gives
its dedupe key and its throttle slot back (`release`, one Lua script), so the next matching
event runs. A run still in progress, or waiting to try a step again, holds its slots. What
a run booked is kept beside it until it ends (`<prefix>slots:<event id>:<rule id>`), so a
release frees exactly that booking, never a key booked since by another run.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from bridge.queue.keys import Keys
from bridge.queue.redis_io import FastScript
from bridge.rules import Rule
from bridge.templates.environment import Templates

# KEYS: dedupe key, throttle key (either may be "" when the rule has none), the booking.
# ARGV: dedupe ttl s, throttle limit, window ms, now ms, member (the event id), booking
# ttl s. Returns {verdict, detail, holder}: {"ok", 0, ""}, {"dedupe", ttl left s, the
# event holding the key}, {"throttle", ms until room, ""}.
_ADMIT = """
-- A key or slot this event booked already (its handle_event ran before and was cut short
-- before its runs were queued) admits it again, booking nothing new.
local member = ARGV[5]
local has_key, has_slot = false, false
if KEYS[1] ~= '' then
  local holder = redis.call('GET', KEYS[1])
  if holder == member then
    has_key = true
  elseif holder then
    return {'dedupe', redis.call('TTL', KEYS[1]), holder}
  end
end
if KEYS[2] ~= '' then
  local now, window = tonumber(ARGV[4]), tonumber(ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  if redis.call('ZSCORE', KEYS[2], member) then
    has_slot = true
  elseif redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {'throttle', tonumber(oldest[2]) + window - now, ''}
  end
end
if KEYS[1] ~= '' and not has_key then redis.call('SET', KEYS[1], member, 'EX', ARGV[1]) end
if KEYS[2] ~= '' and not has_slot then
  redis.call('ZADD', KEYS[2], ARGV[4], member)
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
redis.call('HSET', KEYS[3], 'dedupe', KEYS[1], 'throttle', KEYS[2], 'member', member)
redis.call('EXPIRE', KEYS[3], ARGV[6])
return {'ok', 0, ''}
"""

# KEYS[1]: the booking of a run. Gives back its dedupe key (only while that key is still
# held by this run) and its throttle slot, then forgets the booking. Returns 1 when there
# was a booking.
_RELEASE = """
local booked = redis.call('HMGET', KEYS[1], 'dedupe', 'throttle', 'member')
local member = booked[3]
if not member then return 0 end
if booked[1] and booked[1] ~= '' and redis.call('GET', booked[1]) == member then
  redis.call('DEL', booked[1])
end
if booked[2] and booked[2] ~= '' then redis.call('ZREM', booked[2], member) end
redis.call('DEL', KEYS[1])
return 1
"""


@dataclass(frozen=True)
class Suppressed:
    """Why a matched rule does not run for an event."""

    by: str  # "dedupe" or "throttle"
    key: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"by": self.by, "key": self.key, "reason": self.reason}


def _digest(text: str) -> str:
    # Rendered keys can be long or hold odd characters; Redis keys stay short and safe.
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class RunLimits:
    """Admits or suppresses rule runs by their dedupe and throttle settings."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = Keys(prefix)
        self._admit = FastScript(redis, _ADMIT)
        self._release = FastScript(redis, _RELEASE)

    def booking_key(self, event_id: str, rule_id: str) -> str:
        """Where the slots a run booked are kept until it ends."""
        return self.keys.slots(event_id, rule_id)

    async def admit(
        self, rule: Rule, event_id: str, context: Mapping[str, Any], templates: Templates
    ) -> Suppressed | None:
        """None when the rule may run now (and the run is booked), else why not."""
        if rule.dedupe is None and rule.throttle is None:
            return None
        dedupe_key = throttle_key = ""
        dedupe_shown = throttle_shown = ""
        if rule.dedupe is not None:
            dedupe_shown = str(templates.render_value(rule.dedupe.key, context))
            dedupe_key = self.keys.dedupe(rule.id, _digest(dedupe_shown))
        if rule.throttle is not None:
            throttle_shown = str(templates.render_value(rule.throttle.key, context))
            throttle_key = self.keys.throttle(rule.id, _digest(throttle_shown))
        dedupe_ttl = rule.dedupe.ttl_seconds if rule.dedupe else 0
        window = rule.throttle.per_seconds if rule.throttle else 0
        args: list[str | int] = [
            dedupe_ttl,
            rule.throttle.limit if rule.throttle else 0,
            window * 1000,
            int(time.time() * 1000),
            event_id,
            # Past both, there is nothing left to give back.
            max(dedupe_ttl, window, 1),
        ]
        keys = [dedupe_key, throttle_key, self.booking_key(event_id, rule.id)]
        verdict, detail, holder = await self._admit(keys, args)
        verdict = _text(verdict)
        if verdict == "dedupe":
            return Suppressed(
                "dedupe",
                dedupe_shown,
                f"dedupe key {dedupe_shown!r} already ran for event {_text(holder)}; "
                f"it expires in {int(detail)} s",
            )
        if verdict == "throttle":
            assert rule.throttle is not None
            return Suppressed(
                "throttle",
                throttle_shown,
                f"throttle {throttle_shown!r} is full ({rule.throttle.limit} runs per "
                f"{rule.throttle.per_seconds} s); room again in {int(detail) / 1000:.1f} s",
            )
        return None

    async def release(self, event_id: str, rule_id: str) -> bool:
        """Give back the slots of a run that failed; False when it had booked none."""
        return bool(await self._release([self.booking_key(event_id, rule_id)], []))

    async def keep(self, event_id: str, rule_id: str) -> None:
        """A run that did not fail keeps its slots: its booking is no longer needed."""
        await self.redis.delete(self.booking_key(event_id, rule_id))
