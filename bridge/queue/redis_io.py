"""Lean Redis I/O for the hot paths, on redis-py's own connections and pool.

- `direct_send`: redis-py 5 wraps every write in `asyncio.wait_for(…, socket_timeout)`,
  and `wait_for` starts a task each time: about 9 µs per command here, more than packing
  and writing a small command together (docs/performance.md). A write can only block
  while the socket's buffer is over its high-water mark, that is while Redis is not
  reading; only then is the write timed out. Reads keep redis-py's own timeout.
- `FastScript`: one Lua script called with EVALSHA, its command packed in one go and
  sent on a pooled connection without redis-py's generic command path (argument
  encoding, retry wrapper, response callbacks): the ingest of every webhook and the
  claim and finish of every job go through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.lua import Arg, FastScript, fast_command, pack

__all__ = ["Arg", "FastScript", "direct_send", "fast_command", "pack"]


class _DirectSend(AbstractConnection):
    """Mixed in before a redis-py connection class (TCP, TLS or Unix socket)."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]
        elif check_health:
            await self.check_health()  # type: ignore[no-untyped-call]
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        try:
            writer = self._writer
            assert writer is not None  # connected above
            writer.writelines(command)
            if self.socket_timeout and _over_high_water(writer.transport):
                async with asyncio.timeout(self.socket_timeout):
                    await writer.drain()
            else:
                await writer.drain()  # returns at once below the high-water mark
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            # A write cut short (cancelled) leaves a partial command on the connection.
            await self.disconnect(nowait=True)
            raise


def _over_high_water(transport: Any) -> bool:
    try:
        return bool(transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1])
    except (AttributeError, NotImplementedError):
        return True  # a transport that cannot tell: always time the write


_classes: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def direct_send(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """`connection_class` with task-free writes (one subclass per class, made once)."""
    if issubclass(connection_class, _DirectSend):
        return connection_class
    found = _classes.get(connection_class)
    if found is None:
        found = type(connection_class.__name__, (_DirectSend, connection_class), {})
        _classes[connection_class] = found
    return found
