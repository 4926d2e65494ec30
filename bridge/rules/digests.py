"""What a digest run and a throttle roll-up show templates: `digest.*`, `throttle.*` (decide).

A digest run carries its members with it: it runs as one event of its own (source and
type `bridge.digest`, id `dg_…`) whose `data` holds the rule, the rendered key and the
members, so a retry, from the queue or the dead letters, sees exactly the same members.
Its templates see the last member as `event`/`data`/`changes` and the collection as
`digest`. The worker (bridge/jobs/digest.py) and rule tests both build the context here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bridge.events import Event
from bridge.rules.model import Rule, event_context

DIGEST_SOURCE = "bridge.digest"
DIGEST_TYPE = "bridge.digest"
# A throttle roll-up keeps this many of the suppressed events (the newest); it counts all.
ROLLUP_KEPT = 100


def seen(event: Mapping[str, Any]) -> dict[str, Any]:
    """One event as templates see it: `{id, type, source, subject, time, data, changes}`."""
    return {
        "id": event.get("id"),
        "type": event.get("type"),
        "source": event.get("source"),
        "subject": event.get("subject"),
        "time": event.get("time"),
        "data": event.get("data"),
        "changes": dict(event.get("changes") or {}),
    }


def digest_event(
    rule_id: str, digest_id: str, key: str, members: Sequence[Mapping[str, Any]]
) -> Event:
    """The event a digest run runs as: its members inside, its time the last member's."""
    return Event(
        id=digest_id,
        source=DIGEST_SOURCE,
        type=DIGEST_TYPE,
        time=str(members[-1].get("time") or "") if members else "",
        data={"rule": rule_id, "key": key, "events": [dict(m) for m in members]},
    )


def is_digest_run(event: Event, rule_id: str) -> bool:
    """Whether `event` is a digest run of the rule (as digest_event built it)."""
    data = event.data
    return (
        event.source == DIGEST_SOURCE
        and event.type == DIGEST_TYPE
        and isinstance(data, Mapping)
        and data.get("rule") == rule_id
        and isinstance(data.get("events"), list)
        and bool(data["events"])
    )


def digest_context(
    event: Event, rule: Rule, steps: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The context of a digest run: the last member as the event, and `digest`."""
    data = event.data
    members = [m for m in data["events"] if isinstance(m, Mapping)]
    last = Event.from_dict({**members[-1], "id": members[-1].get("id") or event.id})
    context = event_context(last, rule, steps)
    events = [seen(m) for m in members]
    context["digest"] = {
        "id": event.id,
        "key": data.get("key", ""),
        "events": events,
        "count": len(events),
        "first": events[0],
        "last": events[-1],
    }
    return context


def rollup_context(suppressed: int, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """`throttle` for a run of a rule whose throttle rolls up: what was held back before it."""
    return {"suppressed": suppressed, "events": [seen(e) for e in events]}
