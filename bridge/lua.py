"""The one way Lua runs in Redis here: `FastScript` (EVALSHA on one pooled connection), and
`fast_command` for a plain command on a hot path.

The queue's scripts, the run limits, traces, dead letters, the poll lock and the shared
rate limiter all run through it, so a script is packed once, sent without redis-py's
generic command path, and loaded again when Redis lost it (a restart or a flush).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import DataError, NoScriptError

Arg = bytes | str | int | float


def pack(*args: Arg) -> bytes:
    """One Redis command in RESP, encoded as redis-py does (str as UTF-8, numbers as repr)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bool):
            raise DataError("a bool is not a Redis argument; convert it first")
        elif isinstance(arg, int | float):
            data = repr(arg).encode()
        else:
            raise DataError(f"{type(arg).__name__} is not a Redis argument")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class FastScript:
    """A Lua script run with EVALSHA on one pooled connection (SCRIPT LOAD when Redis lost it)."""

    def __init__(self, redis: Redis, source: str) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis's script id

    async def __call__(self, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        command = pack("EVALSHA", self.sha, len(keys), *keys, *args)
        pool = self.redis.connection_pool
        connection = await _checkout(pool)
        try:
            await connection.send_packed_command(command)
            try:
                return await connection.read_response()
            except NoScriptError:  # a restarted or flushed Redis: load it, run it again
                await connection.send_packed_command(pack("SCRIPT", "LOAD", self.source))
                await connection.read_response()
                await connection.send_packed_command(command)
                return await connection.read_response()
        finally:
            # redis-py's send and read disconnect on their own errors, so a connection
            # given back is either clean or closed (and reconnects when next used).
            await pool.release(connection)


async def fast_command(redis: Redis, *args: Arg) -> Any:
    """One Redis command (a worker's BLPOP) sent as FastScript sends its EVALSHA: packed at
    once, on a pooled connection taken without a read, without redis-py's generic path.
    A command cut short (cancelled, timed out) closes its connection: redis-py's read does."""
    pool = redis.connection_pool
    connection = await _checkout(pool)
    try:
        await connection.send_packed_command(pack(*args))
        return await connection.read_response()
    finally:
        await pool.release(connection)


async def _checkout(pool: ConnectionPool) -> AbstractConnection:
    """A connection of the pool, ready to send.

    redis-py's `get_connection` makes sure of that by trying to read from the socket each
    time (a system call and a timeout: about 6 % of a worker's CPU, docs/performance.md).
    A connection that is open, not at its end and holds nothing unread is ready as it is:
    the event loop has seen a close or stray data by the time the connection is reused.
    Any other goes through redis-py's own check (connect, or reconnect).
    """
    if type(pool).get_connection is not ConnectionPool.get_connection:
        waited: AbstractConnection = await pool.get_connection()  # a blocking pool's wait
        return waited
    connection: AbstractConnection = pool.get_available_connection()  # type: ignore[no-untyped-call]
    try:
        if not _ready(connection):
            await pool.ensure_connection(connection)
    except BaseException:
        await pool.release(connection)
        raise
    return connection


def _ready(connection: AbstractConnection) -> bool:
    reader, writer = getattr(connection, "_reader", None), getattr(connection, "_writer", None)
    if reader is None or writer is None or reader.at_eof() or writer.transport.is_closing():
        return False
    return not getattr(reader, "_buffer", b"")
