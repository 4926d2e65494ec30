"""Rate limits shared by every process through Redis: GCRA in one Lua script (clients)."""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from bridge.errors import RateLimited

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Limit:
    """At most `count` requests per `period` seconds, `burst` of them back to back.

    `burst=1` spaces requests evenly (one every `period / count` seconds); the default
    burst of `count` lets a whole window's worth through at once, like a fixed quota.
    """

    count: int
    period: float
    burst: int | None = None

    def __post_init__(self) -> None:
        if self.count < 1 or self.period <= 0:
            raise ValueError(f"a limit needs count >= 1 and period > 0, not {self}")
        if self.burst is not None and not 1 <= self.burst <= self.count:
            raise ValueError(f"burst must be between 1 and count, not {self.burst}")

    @property
    def interval(self) -> float:
        """Seconds between two requests at the sustained rate (GCRA's emission interval)."""
        return self.period / self.count

    @property
    def tolerance(self) -> float:
        """How far ahead of the schedule a request may run (GCRA's delay tolerance)."""
        burst = self.count if self.burst is None else self.burst
        return self.interval * (burst - 1)

    @property
    def name(self) -> str:
        return f"{self.count}per{self.period:g}s"


# Lytho documents 20 requests/minute and 30,000/day; a public client met 429s on short
# bursts, so the minute limit is spaced (one request every 3.15 s), never burst.
# Spaced over 63 s rather than 60: network jitter must not put a 21st request into
# Lytho's own 60-s window.
LYTHO_LIMITS: tuple[Limit, ...] = (Limit(20, 63, burst=1), Limit(30_000, 86_400))
# Lytho Workflow documents no limits of its own; it is the same vendor, so assume the same.
LYTHO_WORKFLOW_LIMITS: tuple[Limit, ...] = LYTHO_LIMITS
DEFAULT_LIMITS: Mapping[str, Sequence[Limit]] = {
    "lytho": LYTHO_LIMITS,
    "lytho_workflow": LYTHO_WORKFLOW_LIMITS,
}

# KEYS: one theoretical-arrival-time key per limit. ARGV: interval and tolerance of each
# limit, in microseconds. Returns 0 when the request may go now (and books it under every
# limit), else the microseconds to wait (booking nothing). Redis' own clock is the one
# clock every process shares.
_GCRA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  tats[i] = tat
  local allow_at = tat - tolerance
  if allow_at - now > wait then wait = allow_at - now end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  local new_tat = tats[i] + tonumber(ARGV[2 * i - 1])
  local ttl = math.ceil((new_tat - now) / 1000) + 1000
  redis.call('SET', key, string.format('%d', new_tat), 'PX', ttl)
end
return 0
"""


class Limiter(Protocol):
    """What a client needs of a rate limiter."""

    async def acquire(self, api: str) -> float:
        """Wait until a request to `api` is allowed; return the seconds waited."""
        ...


class RateLimiter:
    """Several limits per API at once, shared through Redis by every process.

    `acquire(api)` waits until every limit of `api` allows one more request and books it.
    It waits at most `max_wait` seconds in all; past that it raises `RateLimited` with the
    wait still needed, so a queued job can be deferred instead of holding a worker.
    An API without limits is never held.
    """

    def __init__(
        self,
        redis: Redis,
        limits: Mapping[str, Sequence[Limit]] = DEFAULT_LIMITS,
        *,
        key_prefix: str = "bridge:ratelimit:",
        max_wait: float = 30.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._redis = redis
        self._limits = {api: tuple(found) for api, found in limits.items()}
        self._prefix = key_prefix
        self._max_wait = max_wait
        self._sleep = sleep
        self._script = redis.register_script(_GCRA)
        # In-process counters for metrics: how many acquisitions had to wait, and how long.
        self.waits: Counter[str] = Counter()
        self.waited_seconds: defaultdict[str, float] = defaultdict(float)

    def limits(self, api: str) -> tuple[Limit, ...]:
        return self._limits.get(api, ())

    def keys(self, api: str) -> list[str]:
        """The Redis keys holding the state of `api`'s limits."""
        # The hash tag keeps one API's keys in one slot, as a Redis Cluster needs for a script.
        return [f"{self._prefix}{{{api}}}:{limit.name}" for limit in self.limits(api)]

    async def try_acquire(self, api: str) -> float:
        """Book one request now and return 0, or return the seconds to wait (booking none)."""
        limits = self.limits(api)
        if not limits:
            return 0.0
        args: list[int] = []
        for limit in limits:
            args += [round(limit.interval * 1e6), round(limit.tolerance * 1e6)]
        wait_us = await self._script(keys=self.keys(api), args=args)
        return int(wait_us) / 1e6

    async def acquire(self, api: str) -> float:
        waited = 0.0
        while True:
            wait = await self.try_acquire(api)
            if wait <= 0:
                if waited:
                    self.waits[api] += 1
                    self.waited_seconds[api] += waited
                    logger.info("rate limit of %s: waited %.3fs", api, waited)
                return waited
            if waited + wait > self._max_wait:
                self.waits[api] += 1
                self.waited_seconds[api] += waited
                raise RateLimited(
                    f"rate limit of {api}: next request allowed in {wait:.1f}s, "
                    f"over the {self._max_wait:g}s this call may wait",
                    retry_after=math.ceil(wait * 1000) / 1000,
                    status=None,
                )
            # A little jitter keeps processes that woke together from retrying in lockstep.
            delay = wait + random.uniform(0, min(wait, 0.05))
            await self._sleep(delay)
            waited += delay
