"""The current state of an object, for a `for:` wait's check (jobs → run).

For the objects the pollers snapshot (Lytho assets, Workflow proofs, tasks, work
requests, projects and campaigns, Lytics jobs and segments) the snapshot's fields of the
object lie over the latest event about it: the snapshot is never older than that event (a
poller advances it only after storing its events) and may be newer (a change polled whose
event is not handled yet). Fields the snapshot does not keep (it keeps compact entries:
docs/events.md) come from the event. For any other source, the latest event alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bridge.clients.lytho_profile import load_profile
from bridge.events import Event
from bridge.ingress.pollers.lytho import AssetFields
from bridge.ingress.pollers.lytho import compact as asset_compact
from bridge.ingress.pollers.snapshot import Snapshot
from bridge.rules.waits import MEMBERSHIP_TYPES

if TYPE_CHECKING:
    from bridge.operate.context import Context


async def current_state(bridge: Context, latest: Event) -> tuple[Event, str]:
    """The object's current state: the pollers' snapshot of it over the latest event about
    it (`snapshot`), or that event alone (`event`)."""
    overlay = await _snapshot(bridge, latest)
    if overlay is None or not isinstance(latest.data, Mapping):
        return latest, "event"
    return replace(latest, data={**latest.data, **overlay}), "snapshot"


async def _snapshot(bridge: Context, event: Event) -> dict[str, Any] | None:
    """What a poller's snapshot holds of the event's object that differs from the event
    (fields of the same names as in the event's `data`); None when it has no entry."""
    parts = event.type.split(".")
    if len(parts) < 3 or not event.subject or parts[0] not in ("lytho", "lytics"):
        return None
    if event.type in MEMBERSHIP_TYPES:
        return None  # about a profile, not the segment the snapshot keeps (rules/waits.py)
    data = event.data if isinstance(event.data, Mapping) else {}
    kind = parts[1]
    if event.source == "lytho" and kind == "asset":
        entry = await _entry(bridge, "lytho", "assets", event.subject)
        if entry is None or entry.get("v") != 2 or not isinstance(entry.get("asset"), Mapping):
            return None
        f = AssetFields.of(load_profile(bridge.settings.lytho_profile))
        then = asset_compact(data, f)["asset"]
        now = dict(entry["asset"])
        out = {k: v for k, v in now.items() if k not in (f.tags, f.metadata) and then.get(k) != v}
        if now.get(f.tags) != then.get(f.tags):
            out["tag_names"] = now.get(f.tags)
        if now.get(f.metadata) != then.get(f.metadata) and isinstance(now.get(f.metadata), dict):
            out["metadata_values"] = now[f.metadata]
        return out
    if event.source == "lytho_workflow":
        entry = await _entry(bridge, "lytho_workflow", kind, event.subject)
        skip: tuple[str, ...] = ("id", "modified")
    elif event.source == "lytics" and kind in ("job", "segment"):
        object_id = str(data.get("id") or event.subject)
        entry = await _entry(bridge, "lytics", kind + "s", object_id)
        skip = ()
    else:
        return None
    if entry is None:
        return None
    return {k: v for k, v in entry.items() if k not in skip}


async def _entry(
    bridge: Context, poller: str, collection: str, object_id: str
) -> dict[str, Any] | None:
    snapshot = Snapshot(bridge.redis, bridge.settings.key_prefix, poller)
    return (await snapshot.get(collection, [object_id])).get(object_id)
