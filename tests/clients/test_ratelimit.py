"""The Redis-shared rate limiter: GCRA across connections, processes and a live sandbox."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
import redis.asyncio as aioredis
from clients_support import LYTHO_KEY, FakeSleep

from bridge.clients import LYTHO_LIMITS, Limit, LythoClient, RateLimiter, RetryPolicy
from bridge.errors import RateLimited
from bridge.sandbox.lytho import create_lytho_app
from bridge.sandbox.server import serve_in_thread
from bridge.settings import Secret


@pytest.fixture
async def redis_clients(redis_url):
    """Two independent connections to the same Redis, as two processes would have."""
    first = aioredis.Redis.from_url(redis_url)
    second = aioredis.Redis.from_url(redis_url)
    yield first, second
    await first.aclose()
    await second.aclose()


def test_lytho_limits_are_spaced_and_daily():
    minute, day = LYTHO_LIMITS
    # 20 a minute, spaced with a 5 % margin: never 21 in any 60-s window.
    assert (minute.interval, minute.tolerance) == (3.15, 0.0)
    assert 60 / minute.interval < 20
    assert day.count == 30_000 and day.period == 86_400
    with pytest.raises(ValueError):
        Limit(0, 60)


async def test_try_acquire_books_or_says_how_long_to_wait(redis_clients, key_prefix):
    limiter = RateLimiter(redis_clients[0], {"api": [Limit(1, 10)]}, key_prefix=key_prefix)

    assert await limiter.try_acquire("api") == 0
    wait = await limiter.try_acquire("api")
    assert 9 < wait <= 10
    assert await limiter.try_acquire("unlimited") == 0
    assert all(k.startswith(key_prefix) for k in limiter.keys("api"))


async def test_several_limits_at_once(redis_clients, key_prefix):
    # A burst of 3 is allowed by the first limit; the second allows only 2 per minute.
    limits = {"api": [Limit(3, 1, burst=3), Limit(2, 60)]}
    limiter = RateLimiter(redis_clients[0], limits, key_prefix=key_prefix)

    assert [await limiter.try_acquire("api") for _ in range(2)] == [0, 0]
    assert await limiter.try_acquire("api") > 1  # the per-minute quota holds it back


async def test_two_limiters_on_two_connections_share_one_schedule(redis_clients, key_prefix):
    limits = {"api": [Limit(1, 0.05, burst=1)]}
    a = RateLimiter(redis_clients[0], limits, key_prefix=key_prefix)
    b = RateLimiter(redis_clients[1], limits, key_prefix=key_prefix)

    async def take(limiter: RateLimiter) -> None:
        for _ in range(5):
            await limiter.acquire("api")

    started = time.monotonic()
    await asyncio.gather(take(a), take(b))
    elapsed = time.monotonic() - started

    # Ten bookings 0.05 s apart on Redis' clock all fall inside the measured span, so it
    # cannot be shorter than nine intervals, however late any answer arrives.
    assert elapsed >= 9 * 0.05
    assert a.waits["api"] + b.waits["api"] >= 8
    assert a.waited_seconds["api"] + b.waited_seconds["api"] > 0.3


async def test_a_wait_past_max_wait_raises_rate_limited(redis_clients, key_prefix):
    sleep = FakeSleep()
    limiter = RateLimiter(
        redis_clients[0], {"api": [Limit(1, 60)]}, key_prefix=key_prefix, max_wait=5, sleep=sleep
    )
    await limiter.acquire("api")

    with pytest.raises(RateLimited) as caught:
        await limiter.acquire("api")

    assert 59 < caught.value.retry_after <= 60
    assert "rate limit of api" in str(caught.value)
    assert sleep.delays == []


WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    import redis.asyncio as aioredis
    from bridge.clients import Limit, RateLimiter

    async def main(url, prefix, n):
        client = aioredis.Redis.from_url(url)
        limiter = RateLimiter(client, {"api": [Limit(1, 0.05, burst=1)]}, key_prefix=prefix)
        waited = [await limiter.acquire("api") for _ in range(n)]
        await client.aclose()
        print(json.dumps(waited))

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


@pytest.mark.slow
async def test_two_processes_share_the_limit(redis_clients, redis_url, key_prefix):
    redis = redis_clients[0]
    seconds, micros = await redis.time()
    before = seconds * 1_000_000 + micros
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_url, key_prefix, "6"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    waited: list[float] = []
    for proc in procs:
        out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
        assert proc.returncode == 0
        waited += json.loads(out)

    # Every one of the twelve acquisitions was booked on the one schedule in Redis: its
    # theoretical arrival time moved twelve intervals past the moment before they began.
    (key,) = RateLimiter(redis, {"api": [Limit(1, 0.05, burst=1)]}, key_prefix=key_prefix).keys(
        "api"
    )
    tat = int(await redis.get(key))
    assert len(waited) == 12
    assert tat - before >= 12 * 50_000
    assert sum(1 for w in waited if w > 0) >= 5


async def _burst(url: str, redis_clients, prefixes: list[str]) -> list[int]:
    """Fourteen asset reads by two clients, each with its own limiter; the answers' statuses."""
    limits = {"lytho": [Limit(1, 0.1, burst=1)]}
    async with httpx.AsyncClient() as http:
        clients = [
            LythoClient(
                http,
                f"{url}/v1/",
                Secret(LYTHO_KEY),
                RateLimiter(redis, limits, key_prefix=prefix),
                retry=RetryPolicy(rate_limit_wait=0),
            )
            for redis, prefix in zip(redis_clients, prefixes, strict=True)
        ]
        results = await asyncio.gather(
            *(clients[n % 2].get_asset(1001 + n % 12) for n in range(14)),
            return_exceptions=True,
        )
    return [429 if isinstance(r, RateLimited) else 200 for r in results]


async def test_clients_sharing_a_limiter_never_meet_a_429(redis_clients, key_prefix):
    # Each client keeps 0.1 s between requests. The sandbox allows one per 0.07 s with a
    # burst of 2, which absorbs loopback jitter but not two clients pacing on their own.
    app = create_lytho_app(
        LYTHO_KEY, rate_limit_per_minute=850, rate_limit_burst=2, rate_limit_per_day=None
    )
    with serve_in_thread(app) as server:
        shared = await _burst(server.url, redis_clients, [key_prefix, key_prefix])
        app.state.sandbox.reset()
        apart = await _burst(server.url, redis_clients, [f"{key_prefix}a:", f"{key_prefix}b:"])

    assert shared == [200] * 14
    assert 429 in apart


async def test_acquire_books_the_slot_it_sleeps_for(redis_clients, key_prefix):
    # Three callers in a row under one-per-10-s: each is given its own slot at once and
    # sleeps until it, so no two wake for the same slot. (The sleep is a fake one.)
    sleep = FakeSleep()
    limiter = RateLimiter(
        redis_clients[0], {"api": [Limit(1, 10, burst=1)]}, key_prefix=key_prefix, sleep=sleep
    )

    waited = [await limiter.acquire("api") for _ in range(3)]

    assert waited[0] == 0
    assert 9 < waited[1] <= 10
    assert 19 < waited[2] <= 20
    assert sleep.delays == waited[1:]
    assert limiter.waits["api"] == 2


async def test_each_scope_has_its_own_schedule(redis_clients, key_prefix):
    limiter = RateLimiter(redis_clients[0], {"api": [Limit(1, 60)]}, key_prefix=key_prefix)

    assert await limiter.try_acquire("api", scope="creative") == 0
    assert await limiter.try_acquire("api", scope="alerts") == 0
    assert await limiter.try_acquire("api", scope="creative") > 59
    assert limiter.keys("api", "creative") != limiter.keys("api", "alerts")


async def test_a_ticket_keeps_the_far_slot_it_booked(redis_clients, key_prefix):
    # One per 10 s; a caller may wait 2 s in process. The second caller's slot is 10 s
    # away: it is booked for its ticket, and the caller told to come back.
    sleep = FakeSleep()
    limiter = RateLimiter(
        redis_clients[0],
        {"api": [Limit(1, 10, burst=1)]},
        key_prefix=key_prefix,
        max_wait=2,
        sleep=sleep,
    )
    await limiter.acquire("api")
    with pytest.raises(RateLimited) as deferred:
        await limiter.acquire("api", ticket="event-1/rule/notify")
    assert 8 < deferred.value.retry_after <= 9  # a second before the slot
    assert "booked" in str(deferred.value)

    # Someone else, meanwhile, gets the slot after the booked one.
    with pytest.raises(RateLimited) as later:
        await limiter.acquire("api")
    assert 19 < later.value.retry_after <= 20

    # The ticket's holder, back (here: allowed to wait longer), sleeps to its own slot.
    waited = await limiter.acquire("api", ticket="event-1/rule/notify", max_wait=15)
    assert 9 < waited <= 10
    assert sleep.delays == [waited]
    assert not await redis_clients[0].exists(limiter.ticket_key("api", "event-1/rule/notify"))


async def test_hold_pauses_a_schedule_for_every_process(redis_clients, key_prefix):
    limits = {"api": [Limit(60, 60, burst=3)]}
    a = RateLimiter(redis_clients[0], limits, key_prefix=key_prefix)
    b = RateLimiter(redis_clients[1], limits, key_prefix=key_prefix)

    await a.hold("api", 60, scope="creative")

    assert 59 < await b.try_acquire("api", scope="creative") <= 60
    assert await b.try_acquire("api", scope="alerts") == 0
    # A shorter hold never shortens a longer one.
    await a.hold("api", 1, scope="creative")
    assert await b.try_acquire("api", scope="creative") > 59
