"""What the queue's scripts cost in Redis commands, and that each saving keeps its guarantee.

Each test counts the commands a script ran (INFO commandstats counts the commands run inside
Lua scripts too) on a redis-server of its own, so the counts are exact (issue 17).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from bridge.cli.redis_server import EmbeddedRedis
from bridge.queue.scripts import WAKE_TOKENS
from bridge.queue.store import Job, Keys, Store


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as embedded:
        yield embedded


@pytest.fixture
async def redis(server: EmbeddedRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url)
    await client.flushdb()  # our own server: nothing else lives there
    yield client
    await client.aclose()


async def reset(redis: Redis) -> None:
    await redis.config_resetstat()


async def calls(redis: Redis) -> dict[str, int]:
    """Commands run since the last reset, by name (in lower case), without INFO itself."""
    stats: dict[str, Any] = await redis.info("commandstats")
    counts = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    counts.pop("info", None)
    return counts


def store_for(redis: Redis, **ttls: int) -> Store:
    options = {"dedup_ttl": 600, "event_ttl": 600} | ttls
    return Store(redis, Keys("b:"), "b:queue", **options)


# --- wake tokens ------------------------------------------------------------------------


async def test_a_wake_token_is_trimmed_only_when_the_list_is_full(redis: Redis) -> None:
    store = store_for(redis)
    await store.enqueue([Job("f", (), "warm")])  # the script loaded
    await reset(redis)
    for n in range(WAKE_TOKENS + 10):
        assert await store.enqueue([Job("f", (), f"j{n}")]) == [True]
    counts = await calls(redis)
    assert counts["lpush"] == WAKE_TOKENS + 10
    # The first pushes (1 token was there) fit; each of the last 11 trims the list.
    assert counts.get("ltrim", 0) == 11
    assert await redis.llen("b:queue:wake") == WAKE_TOKENS
