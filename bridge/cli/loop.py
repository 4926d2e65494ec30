"""How a command runs async work: on uvloop where installed, against the bridge's Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from bridge.operate.context import Context
    from bridge.settings import Settings

T = TypeVar("T")


def event_loop_name() -> str:
    """uvloop where it is installed (Linux, macOS), else asyncio's own loop."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop where it is installed."""
    if event_loop_name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def with_context(work: Callable[[Context], Awaitable[T]], settings: Settings) -> T:
    """Run `work(context)` against the configured Redis, closing it afterwards."""
    from bridge.operate.context import build_context

    async def main() -> T:
        context = await build_context(settings, load_rules=False)
        try:
            return await work(context)
        finally:
            await context.close()

    return asyncio.run(main())
