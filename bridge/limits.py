"""Dedupe and throttle of rule runs, kept in Redis and shared by every worker (decide).

A matched rule runs only when its dedupe key has not been seen while it lives and its
throttle window has room; both are checked and booked in one Lua script, so two workers
can never both pass the same key, and a suppressed run books nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from bridge.rules import Rule
from bridge.templates import Templates

# KEYS: dedupe key, throttle key (either may be "" when the rule has none).
# ARGV: dedupe ttl s, throttle limit, window ms, now ms, member.
# Returns {verdict, detail}: {"ok"}, {"dedupe", ttl left s}, {"throttle", ms until room}.
_ADMIT = """
if KEYS[1] ~= '' then
  local ttl = redis.call('TTL', KEYS[1])
  if ttl ~= -2 then return {'dedupe', ttl} end
end
if KEYS[2] ~= '' then
  local now, window = tonumber(ARGV[4]), tonumber(ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {'throttle', tonumber(oldest[2]) + window - now}
  end
end
if KEYS[1] ~= '' then redis.call('SET', KEYS[1], '1', 'EX', ARGV[1]) end
if KEYS[2] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return {'ok', 0}
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


class RunLimits:
    """Admits or suppresses rule runs by their dedupe and throttle settings."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._script = redis.register_script(_ADMIT)

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
            dedupe_key = f"{self.prefix}dedupe:{rule.id}:{_digest(dedupe_shown)}"
        if rule.throttle is not None:
            throttle_shown = str(templates.render_value(rule.throttle.key, context))
            throttle_key = f"{self.prefix}throttle:{rule.id}:{_digest(throttle_shown)}"
        args: list[str | int] = [
            rule.dedupe.ttl_seconds if rule.dedupe else 0,
            rule.throttle.limit if rule.throttle else 0,
            rule.throttle.per_seconds * 1000 if rule.throttle else 0,
            int(time.time() * 1000),
            event_id,
        ]
        verdict, detail = await self._script(keys=[dedupe_key, throttle_key], args=args)
        verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        if verdict == "dedupe":
            return Suppressed(
                "dedupe",
                dedupe_shown,
                f"dedupe key {dedupe_shown!r} already ran; it expires in {int(detail)} s",
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
