"""Operations on stored events and dead letters, shared by the CLI and the admin API."""

from __future__ import annotations

import time
from typing import Any

from bridge.context import Context
from bridge.deadletters import DeadLetter, DeadLetters
from bridge.events import Event
from bridge.store import Job


async def event_with_trace(
    bridge: Context, event_id: str
) -> tuple[Event, list[dict[str, Any]]] | None:
    """A stored event and its trace, or None when the event is unknown (or expired)."""
    event = await bridge.store.get_event(event_id)
    if event is None:
        return None
    return event, await bridge.tracer.read(event_id)


async def replay(bridge: Context, event_id: str) -> str | None:
    """Match and run a stored event again as a new run; the run's name, or None if unknown."""
    event = await bridge.store.get_event(event_id)
    if event is None:
        return None
    run = f"replay-{time.time_ns() // 1_000_000}"
    job = Job("handle_event", (event.to_dict(), run), bridge.keys.handle_job_id(event.id, run))
    await bridge.store.enqueue([job])
    await bridge.tracer.record(event.id, "replayed", run=run)
    return run


async def dead_letters(bridge: Context, limit: int = 100) -> list[DeadLetter]:
    return await DeadLetters(bridge).list(limit)


async def retry_dead_letter(bridge: Context, letter_id: str) -> DeadLetter | None:
    return await DeadLetters(bridge).retry(letter_id)


async def drop_dead_letter(bridge: Context, letter_id: str) -> bool:
    return await DeadLetters(bridge).drop(letter_id)
