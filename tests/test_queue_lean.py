"""What the queue's scripts cost in Redis commands, and that each saving keeps its guarantee.

Each test counts the commands a script ran (INFO commandstats counts the commands run inside
Lua scripts too) on a redis-server of its own, so the counts are exact (issue 17).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.worker import func
from redis.asyncio import ConnectionPool, Redis

from bridge.cli.redis_server import EmbeddedRedis
from bridge.queue.codec import job_deserializer, job_serializer
from bridge.queue.scripts import WAKE_TOKENS
from bridge.queue.store import Job, Keys, Store
from bridge.queue.worker import BridgeWorker


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


# --- the worker: claim and finish ---------------------------------------------------------


@pytest.fixture
async def pool(server: EmbeddedRedis, redis: Redis) -> AsyncIterator[ArqRedis]:
    arq_redis = ArqRedis(
        ConnectionPool.from_url(server.url),
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
    )
    yield arq_redis
    await arq_redis.aclose(close_connection_pool=True)


def worker(pool: ArqRedis, *functions: Any, **options: Any) -> BridgeWorker:
    return BridgeWorker(
        functions=list(functions),
        queue_name="b:queue",
        redis_pool=pool,
        burst=True,
        poll_delay=0,
        handle_signals=False,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
        **options,
    )


async def noop(ctx: dict[str, Any]) -> str:
    return "ok"


async def test_a_finished_job_is_removed_with_one_del(redis: Redis, pool: ArqRedis) -> None:
    store = store_for(redis)
    assert await store.enqueue([Job("noop", (), f"j{n}") for n in range(5)]) == [True] * 5
    w = worker(pool, func(noop, name="noop"))
    await reset(redis)
    await w.main()
    assert w.jobs_complete == 5
    assert (await calls(redis))["del"] == 5
    for n in range(5):
        assert await redis.exists(f"arq:in-progress:j{n}", f"arq:job:j{n}", f"arq:retry:j{n}") == 0
        assert await redis.exists(f"arq:result:j{n}") == 1
