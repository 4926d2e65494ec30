"""Rate limits shared by every process through Redis: GCRA in one Lua script (clients)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from bridge.errors import RateLimited
from bridge.lua import FastScript

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
# Slack allows about one message per second per channel, short bursts tolerated: each
# channel has its own schedule (a limiter scope) of one a second after a burst of three.
SLACK_LIMITS: tuple[Limit, ...] = (Limit(60, 60, burst=3),)
DEFAULT_LIMITS: Mapping[str, Sequence[Limit]] = {
    "lytho": LYTHO_LIMITS,
    "lytho_workflow": LYTHO_WORKFLOW_LIMITS,
    "slack": SLACK_LIMITS,
}

# KEYS: one theoretical-arrival-time key per limit, then optionally a ticket key.
# ARGV: the number of limits, the longest wait the caller accepts in process (0: only a
# slot free now), then interval and tolerance of each limit; all times in microseconds.
# Returns {status, wait}:
#   1: booked `wait` from now under every limit; the caller sleeps that long and sends,
#      and no other caller can take its slot;
#   0: nothing booked (no ticket given); the next slot is `wait` away;
#   2: with a ticket, a slot further away than accepted is booked all the same and kept
#      in the ticket; the caller comes back for it (the same ticket) later.
# Redis' own clock is the one clock every process shares.
_GCRA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local ticket = KEYS[n + 1]
if ticket then
  local slot = redis.call('GET', ticket)
  if slot then
    local wait = tonumber(slot) - now
    if wait < 0 then wait = 0 end
    if wait > max_wait then return {2, wait} end
    redis.call('DEL', ticket)
    return {1, wait}
  end
end
local wait = 0
local tats = {}
for i = 1, n do
  local tolerance = tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tats[i] = tat
  local allow_at = tat - tolerance
  if allow_at - now > wait then wait = allow_at - now end
end
if wait > max_wait and not ticket then return {0, wait} end
local at = now + wait
for i = 1, n do
  local tat = tats[i]
  if tat < at then tat = at end
  local new_tat = tat + tonumber(ARGV[1 + 2 * i])
  local ttl = math.ceil((new_tat - now) / 1000) + 1000
  redis.call('SET', KEYS[i], string.format('%d', new_tat), 'PX', ttl)
end
if wait > max_wait then
  -- The ticket outlives its slot by five minutes, for a job that comes back late.
  redis.call('SET', ticket, string.format('%d', at), 'PX', math.ceil(wait / 1000) + 300000)
  return {2, wait}
end
return {1, wait}
"""

# KEYS: the limits' keys. ARGV: the number of limits, a pause, then interval and
# tolerance of each limit (microseconds). No request is allowed before now + pause (an
# API's 429 with Retry-After); then the sustained rate resumes. A schedule already
# further ahead is left alone.
_HOLD = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local pause = tonumber(ARGV[2])
for i = 1, n do
  local target = now + pause + tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or 0)
  if tat < target then
    local ttl = math.ceil((target - now) / 1000) + 1000
    redis.call('SET', KEYS[i], string.format('%d', target), 'PX', ttl)
  end
end
return 0
"""


class Limiter(Protocol):
    """What a client needs of a rate limiter."""

    async def acquire(
        self,
        api: str,
        *,
        scope: str | None = None,
        max_wait: float | None = None,
        ticket: str | None = None,
    ) -> float:
        """Wait until a request to `api` is allowed; return the seconds waited."""
        ...


class RateLimiter:
    """Several limits per API at once, shared through Redis by every process.

    `acquire(api)` books the next request that every limit of `api` allows and sleeps
    until its slot. When that slot is more than `max_wait` seconds away, it raises
    `RateLimited` with the wait instead, so a queued job can be deferred rather than hold
    a worker; with a `ticket` (the identity of the deferred work) the far slot is booked
    all the same and kept for the ticket's next call, so deferred jobs keep their turn.
    An API without limits is never held. A `scope` gives each value (a Slack channel) its
    own schedule under the API's limits.
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
        self._script = FastScript(redis, _GCRA)
        self._hold = FastScript(redis, _HOLD)
        # In-process counters for metrics: how many acquisitions had to wait, and how long.
        self.waits: Counter[str] = Counter()
        self.waited_seconds: defaultdict[str, float] = defaultdict(float)

    @property
    def max_wait(self) -> float:
        """The longest a call sleeps in process before `RateLimited` is raised instead."""
        return self._max_wait

    def limits(self, api: str) -> tuple[Limit, ...]:
        return self._limits.get(api, ())

    def _tag(self, api: str, scope: str | None) -> str:
        # The hash tag keeps one schedule's keys in one slot, as a Redis Cluster needs for
        # a script.
        return f"{self._prefix}{{{api if scope is None else f'{api}:{scope}'}}}"

    def keys(self, api: str, scope: str | None = None) -> list[str]:
        """The Redis keys holding the state of `api`'s limits (for one `scope`)."""
        tag = self._tag(api, scope)
        return [f"{tag}:{limit.name}" for limit in self.limits(api)]

    def ticket_key(self, api: str, ticket: str, scope: str | None = None) -> str:
        """The Redis key keeping the slot booked for `ticket`."""
        digest = hashlib.sha256(ticket.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"{self._tag(api, scope)}:ticket:{digest}"

    def _args(self, api: str, seconds: float) -> list[int]:
        limits = self.limits(api)
        args = [len(limits), round(max(0.0, seconds) * 1e6)]
        for limit in limits:
            args += [round(limit.interval * 1e6), round(limit.tolerance * 1e6)]
        return args

    async def _book(
        self, api: str, scope: str | None, max_wait: float, ticket: str | None = None
    ) -> tuple[int, float]:
        """(status, seconds to wait), as the script's comment says."""
        if not self.limits(api):
            return 1, 0.0
        keys = self.keys(api, scope)
        if ticket is not None:
            keys.append(self.ticket_key(api, ticket, scope))
        status, wait_us = await self._script(keys=keys, args=self._args(api, max_wait))
        return int(status), int(wait_us) / 1e6

    async def try_acquire(self, api: str, *, scope: str | None = None) -> float:
        """Book one request now and return 0, or return the seconds to wait (booking none)."""
        status, wait = await self._book(api, scope, 0.0)
        return 0.0 if status == 1 else wait

    async def acquire(
        self,
        api: str,
        *,
        scope: str | None = None,
        max_wait: float | None = None,
        ticket: str | None = None,
    ) -> float:
        allowed = self._max_wait if max_wait is None else max_wait
        status, wait = await self._book(api, scope, allowed, ticket)
        where = api if scope is None else f"{api} ({scope})"
        if status == 0:
            self.waits[api] += 1
            raise RateLimited(
                f"rate limit of {where}: next request allowed in {wait:.1f}s, "
                f"over the {allowed:g}s this call may wait",
                retry_after=math.ceil(wait * 1000) / 1000,
                status=None,
            )
        if status == 2:
            # Come back a little before the booked slot, and sleep the rest of the way:
            # a queue's deferral is not precise to the millisecond.
            self.waits[api] += 1
            early = max(0.0, wait - allowed / 2)
            raise RateLimited(
                f"rate limit of {where}: a slot is booked {wait:.1f}s from now, "
                f"over the {allowed:g}s this call may wait",
                retry_after=max(0.001, math.ceil(early * 1000) / 1000),
                status=None,
            )
        if wait > 0:
            self.waits[api] += 1
            self.waited_seconds[api] += wait
            logger.info("rate limit of %s: waiting %.3fs for the booked slot", where, wait)
            await self._sleep(wait)
        return wait

    async def hold(self, api: str, seconds: float, *, scope: str | None = None) -> None:
        """Allow no request to `api` (in `scope`) for `seconds`, in every process."""
        if self.limits(api) and seconds > 0:
            await self._hold(keys=self.keys(api, scope), args=self._args(api, seconds))
