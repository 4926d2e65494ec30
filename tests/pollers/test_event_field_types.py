"""The field types docs/events.md declares (`bridge validate` checks rules against them)
are the types the sources really emit: events from the sandboxes agree with the docs."""

from __future__ import annotations

import io
from typing import Any

from bridge.cli.backfill import ProgressBar, backfill
from bridge.events import Event
from bridge.ingress import normalize
from bridge.operate.catalogue import event_catalogue
from bridge.operate.context import Context
from bridge.schema import type_name
from tests.pollers.support import Sandboxes, poll, poller, stored_events


def field(data: Any, path: str) -> Any:
    """The value at `data.a.b`, or None where the event does not have it."""
    value = {"data": data}
    for name in path.split("."):
        if not isinstance(value, dict) or name not in value:
            return None
        value = value[name]
    return value


def disagreements(events: list[Event]) -> list[str]:
    fields = event_catalogue().fields
    found = []
    for event in events:
        for path, declared in fields.get(event.type, {}).items():
            value = field(event.data, path)
            if value is None:
                continue
            kind = type_name(value)
            if (kind == "integer" and declared == "number") or kind == declared:
                continue
            found.append(f"{event.type} {path}: emitted {kind}, docs/events.md shows {declared}")
    return found


async def test_emitted_events_have_the_documented_field_types(
    context: Context, sandboxes: Sandboxes
) -> None:
    for name in ("lytho", "lytho_workflow", "lytics"):
        await backfill(context, name, ProgressBar(name, io.StringIO()))
        await poll(poller(context, name))  # the first poll only seeds the snapshot
    sandboxes.set_tags(1002, "social", "hero")
    sandboxes.set_tags(1003, "social")
    sandboxes.edit_asset(1001, description="Final cut")
    sandboxes.delete_asset(1012)
    sandboxes.edit_workflow("proof", 7, status="approved")
    sandboxes.edit_workflow("project", 10, name="Spring launch (final)")
    running = next(j for j in sandboxes.lytics_jobs() if j["status"] == "running")
    sandboxes.set_job(running["id"], "failed", error="permission denied")
    for name in ("lytho", "lytho_workflow", "lytics"):
        await poll(poller(context, name))
    events = await stored_events(context)
    payload = {"id": "p1", "data": {"_uid": "u1", "segment_events": [{"slug": "a", "enter": True}]}}
    events += normalize.lytics_events(payload, None)
    types = {e.type for e in events}
    assert {
        "lytho.asset.created",
        "lytho.asset.tagged",
        "lytho.asset.untagged",
        "lytho.asset.updated",
        "lytho.asset.deleted",
        "lytho.proof.status_changed",
        "lytho.project.updated",
        "lytics.job.failed",
        "lytics.segment.entered",
    } <= types
    checked = [e for e in events if event_catalogue().fields.get(e.type)]
    assert len({e.type for e in checked}) >= 12
    # A heading's example gives the types of every type it names (Projects: … updated).
    assert {"lytho.project.updated", "lytho.proof.status_changed"} <= {e.type for e in checked}
    assert disagreements(events) == []
