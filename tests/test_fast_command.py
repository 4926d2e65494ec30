"""`fast_command` (bridge/lua.py): a worker's BLPOP without redis-py's generic path answers
as redis-py does, and a wait cut short leaves nothing behind for the next command."""

from __future__ import annotations

import asyncio

from bridge.lua import fast_command
from bridge.operate.context import create_redis
from bridge.settings import Settings


async def test_blpop_answers_like_redis_py(redis_url: str, key_prefix: str) -> None:
    redis = create_redis(Settings.from_env({"REDIS_URL": redis_url}))
    try:
        key = f"{key_prefix}wake"
        assert await fast_command(redis, "BLPOP", key, 0.05) is None  # nothing came
        await redis.rpush(key, "1", "2")
        assert await fast_command(redis, "BLPOP", key, 0.05) == [key.encode(), b"1"]
        assert await redis.blpop([key], 0.05) == (key.encode(), b"2")
    finally:
        await redis.aclose(close_connection_pool=True)


async def test_a_cancelled_blpop_takes_nothing_and_its_connection_is_not_reused(
    redis_url: str, key_prefix: str
) -> None:
    redis = create_redis(Settings.from_env({"REDIS_URL": redis_url}))
    other = create_redis(Settings.from_env({"REDIS_URL": redis_url}))
    try:
        key = f"{key_prefix}wake"
        name = f"{key_prefix}blocked"
        waiting = asyncio.create_task(fast_command(redis, "BLPOP", key, 30))

        async def blocked() -> bool:
            clients = await other.client_list()
            return any(c.get("cmd") == "blpop" and c.get("flags") == "b" for c in clients)

        for _ in range(10_000):  # until Redis holds the BLPOP (bounded by the count)
            if await blocked():
                break
            await asyncio.sleep(0.001)  # ok-sleep: a loop turn
        assert await blocked()
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await other.rpush(key, "token")
        await other.set(name, "value")
        # The next command on the same pool gets its own answer, not the BLPOP's.
        assert await fast_command(redis, "GET", name) == b"value"
        assert await other.lrange(key, 0, -1) == [b"token"]  # the cancelled wait took none
    finally:
        await redis.aclose(close_connection_pool=True)
        await other.aclose(close_connection_pool=True)
