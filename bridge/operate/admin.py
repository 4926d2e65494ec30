"""Operations on stored events and dead letters, shared by the CLI and the admin API.

What they read is what was stored, secrets masked; a record that cannot be decoded is
returned as a note saying so, never as an exception that hides every other record.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from bridge.errors import EventError
from bridge.events import Event
from bridge.jobs.deadletters import DeadLetter
from bridge.jobs.digest import replay_job
from bridge.operate.context import Context
from bridge.queue.store import Job, loads
from bridge.redaction import redact

# What a stored record that is not what its reader expects can raise while decoded.
UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, RecursionError)


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deep"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def unreadable_event(event_id: str, exc: BaseException) -> Event:
    """What is shown of a stored event record that cannot be read back, and why."""
    return Event(
        id=event_id,
        source="",
        type="",
        data={"unreadable": f"the stored event cannot be read: {_why(exc)}"},
    )


def decode_event(event_id: str, raw: bytes | str) -> Event:
    """A stored event record, or an `unreadable_event` when it cannot be read back."""
    try:
        event = Event.from_dict(loads(raw))
        event.to_dict()  # what every reader calls: a record it fails on is unreadable
    except UNREADABLE as exc:
        return unreadable_event(event_id, exc)
    return event


async def event_with_trace(
    bridge: Context, event_id: str
) -> tuple[Event, list[dict[str, Any]]] | None:
    """A stored event and its trace, secrets masked; None when unknown (or expired)."""
    secrets = bridge.settings.secrets()
    try:
        event = await bridge.store.get_event(event_id)
        if event is not None:
            event.to_dict()  # what every reader calls: a record it fails on is unreadable
    except UNREADABLE as exc:
        event = unreadable_event(event_id, exc)
    if event is None:
        return None
    entries = redact(await bridge.tracer.read(event_id), secrets)
    if secrets:
        event = Event.from_dict(redact(event.to_dict(), secrets))
    return event, entries


async def replay(bridge: Context, event_id: str) -> str | None:
    """Match and run a stored event again as a new run; the run's name, or None if unknown.

    Raises EventError when the stored record cannot be read back into an event.
    """
    try:
        event = await bridge.store.get_event(event_id)
        if event is None:
            return None
        run = f"replay-{time.time_ns() // 1_000_000}"
        job = replay_job(bridge.keys, event, run) or Job(  # a digest's: its rule, same members
            "handle_event", (event.to_dict(), run), bridge.keys.handle_job_id(event.id, run)
        )
        await bridge.store.enqueue([job])
    except UNREADABLE as exc:
        raise EventError(
            f"the stored event {event_id!r} cannot be read ({_why(exc)}), so it cannot be "
            "replayed; send it again"
        ) from None
    await bridge.tracer.record(event.id, "replayed", run=run)
    return run


async def dead_letters(bridge: Context, limit: int = 100) -> list[DeadLetter]:
    """The newest dead letters first; one that cannot be decoded is listed with why."""
    letters = bridge.dead_letters
    try:
        return [_masked(bridge, letter) for letter in await letters.list(limit)]
    except UNREADABLE:
        pass
    # One bad letter must not hide the others: read them one by one.
    found: list[DeadLetter] = []
    ids = await bridge.redis.zrevrange(bridge.keys.dead_letter_index, 0, max(0, limit - 1))
    for raw_id in ids:
        letter_id = raw_id.decode("utf-8", "replace")
        try:
            letter = await letters.get(letter_id)
        except UNREADABLE as exc:
            letter = DeadLetter(
                id=letter_id,
                event_id="",
                rule_id="",
                run="",
                step="",
                uses="",
                error=f"this dead letter cannot be read: {_why(exc)}",
                attempts=0,
                failed_at=0.0,
                event={},
            )
        if letter is not None:
            found.append(_masked(bridge, letter))
    return found


def _masked(bridge: Context, letter: DeadLetter) -> DeadLetter:
    """The letter with every configured secret masked (also one stored before masking)."""
    secrets = bridge.settings.secrets()
    if not secrets:
        return letter
    return replace(
        letter,
        error=redact(letter.error, secrets),
        event=redact(letter.event, secrets),
        step=redact(letter.step, secrets),
    )


async def retry_dead_letter(bridge: Context, letter_id: str) -> DeadLetter | None:
    return await bridge.dead_letters.retry(letter_id)


async def drop_dead_letter(bridge: Context, letter_id: str) -> bool:
    return await bridge.dead_letters.drop(letter_id)
