"""Task-free writes to Redis: the same answers, and a write to a Redis that stopped reading
still times out."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.context import create_redis
from bridge.redis_io import direct_send
from bridge.settings import Settings


async def test_the_bridge_client_uses_direct_writes_and_works(
    redis_url: str, key_prefix: str
) -> None:
    redis = create_redis(Settings.from_env({"REDIS_URL": redis_url}))
    try:
        assert issubclass(redis.connection_pool.connection_class, Connection)
        assert redis.connection_pool.connection_class is direct_send(Connection)
        big = b"x" * 1_000_000  # more than a socket buffer: the write waits for Redis
        await redis.set(f"{key_prefix}big", big)
        assert await redis.get(f"{key_prefix}big") == big
        async with redis.pipeline(transaction=True) as pipe:
            pipe.incr(f"{key_prefix}n").incr(f"{key_prefix}n")
            assert await pipe.execute() == [1, 2]
    finally:
        await redis.aclose(close_connection_pool=True)


async def test_a_write_to_a_redis_that_stopped_reading_times_out() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # hold the connection open, read nothing

    server = await asyncio.start_server(never_read, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = ConnectionPool(
        connection_class=direct_send(Connection),
        host="127.0.0.1",
        port=port,
        socket_timeout=0.3,
        lib_name=None,
        lib_version=None,
    )
    redis = Redis(connection_pool=pool)
    try:
        begun = time.monotonic()
        with pytest.raises(RedisTimeoutError, match="Timeout writing to socket"):
            # Bounded: a write that never timed out would fail here with TimeoutError.
            await asyncio.wait_for(redis.set("k", b"x" * 64_000_000), 10)
        assert time.monotonic() - begun < 5
        assert accepted  # it did connect: the write, not the connect, timed out
    finally:
        await redis.aclose(close_connection_pool=True)
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
