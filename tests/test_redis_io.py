"""Lean Redis I/O: task-free writes (that still time out when Redis stops reading) and
scripts run without redis-py's generic command path, with the same answers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.cli.redis_server import EmbeddedRedis
from bridge.operate.context import create_redis
from bridge.queue.redis_io import FastScript, direct_send, pack
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
        with pytest.raises(RedisTimeoutError, match="Timeout writing to socket"):
            # Bounded: a write that never timed out would fail here with TimeoutError.
            await asyncio.wait_for(redis.set("k", b"x" * 64_000_000), 10)
        assert accepted  # it did connect: the write, not the connect, timed out
    finally:
        await redis.aclose(close_connection_pool=True)
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


def test_pack_writes_what_redis_py_writes() -> None:
    args = ("EVALSHA", "abc", 2, "k:é", b"\x00raw", 17, -3, 1.5, "")
    assert pack(*args) == b"".join(Connection().pack_command(*args))
    with pytest.raises(DataError):
        pack("SET", "k", True)


ECHO = "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}"


async def test_a_fast_script_answers_like_redis_py_and_survives_errors(
    redis_url: str, key_prefix: str
) -> None:
    redis = create_redis(Settings.from_env({"REDIS_URL": redis_url}))
    try:
        fast = FastScript(redis, ECHO)
        slow = redis.register_script(ECHO)
        keys, args = [f"{key_prefix}k"], ["é", 41]
        assert await fast(keys, args) == await slow(keys=keys, args=args)
        assert await fast(keys, args) == [f"{key_prefix}k".encode(), "é".encode(), 42]
        broken = FastScript(redis, "return redis.call('INCR', KEYS[1], 'extra')")
        with pytest.raises(ResponseError):
            await broken([f"{key_prefix}n"], [])
        assert await fast(keys, args) == [f"{key_prefix}k".encode(), "é".encode(), 42]
    finally:
        await redis.aclose(close_connection_pool=True)


async def test_a_fast_script_loads_itself_again_after_redis_lost_it(
    own_redis: EmbeddedRedis,
) -> None:
    redis = create_redis(Settings.from_env({"REDIS_URL": own_redis.url}))
    try:
        fast = FastScript(redis, ECHO)
        assert await fast(["k"], ["x", 1]) == [b"k", b"x", 2]
        await redis.script_flush()  # this test's own redis-server, as after a restart
        assert await fast(["k"], ["x", 1]) == [b"k", b"x", 2]
    finally:
        await redis.aclose(close_connection_pool=True)


def test_a_write_is_timed_when_the_buffer_is_full_or_the_transport_cannot_tell() -> None:
    from bridge.queue.redis_io import _over_high_water

    class Transport:
        def __init__(self, size: int) -> None:
            self.size = size

        def get_write_buffer_size(self) -> int:
            return self.size

        def get_write_buffer_limits(self) -> tuple[int, int]:
            return (16_384, 65_536)

    assert _over_high_water(Transport(0)) is False
    assert _over_high_water(Transport(65_537)) is True
    assert _over_high_water(object()) is True  # no buffer API: always time the write


async def _until(predicate: Any, what: str) -> None:
    """Let the event loop run until `predicate()` holds (bounded by the test's own runner)."""
    for _ in range(10_000):
        if predicate():
            return
        await asyncio.sleep(0.001)  # ok-sleep: a loop turn for the transport to see the close
    raise AssertionError(f"never saw {what}")


async def test_a_fast_script_takes_a_new_connection_when_redis_closed_the_pooled_one(
    redis_url: str, key_prefix: str
) -> None:
    redis = create_redis(Settings.from_env({"REDIS_URL": redis_url}))
    other = create_redis(Settings.from_env({"REDIS_URL": redis_url}))
    try:
        fast = FastScript(redis, ECHO)
        keys = [f"{key_prefix}k"]
        assert await fast(keys, ["x", 1]) == [keys[0].encode(), b"x", 2]
        [pooled] = redis.connection_pool._available_connections
        client_id = await redis.client_id()  # the same pooled connection
        assert await other.client_kill_filter(_id=client_id) == 1
        await _until(lambda: pooled._reader is None or pooled._reader.at_eof(), "the close")
        assert await fast(keys, ["y", 2]) == [keys[0].encode(), b"y", 3]
        assert not redis.connection_pool._in_use_connections  # given back
    finally:
        await redis.aclose(close_connection_pool=True)
        await other.aclose(close_connection_pool=True)


async def test_a_fast_script_never_reuses_a_connection_holding_unread_data(
    redis_url: str, key_prefix: str
) -> None:
    redis = create_redis(Settings.from_env({"REDIS_URL": redis_url}))
    try:
        fast = FastScript(redis, ECHO)
        keys = [f"{key_prefix}k"]
        await fast(keys, ["x", 1])
        [pooled] = redis.connection_pool._available_connections
        # A reply nobody read (as a command cut short would leave): PING's, then ours.
        await pooled.send_packed_command(pack("PING"))
        await _until(lambda: bool(pooled._reader._buffer), "the stray reply")
        assert await fast(keys, ["y", 2]) == [keys[0].encode(), b"y", 3]
    finally:
        await redis.aclose(close_connection_pool=True)
