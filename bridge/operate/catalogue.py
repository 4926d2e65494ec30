"""The catalogue of event types lytbridge's sources emit, for checking rules (operate).

It joins the pollers' declared types, the webhook types and docs/events.md's examples, so
that `bridge validate` and the live rule set can warn about an `on:` no source emits.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from bridge.ingress.pollers import poller_event_types
from bridge.rules.checker import EventTypes
from bridge.rules.cron import SCHEDULE_EVENT
from bridge.schema import type_name

# Types that are not a poller's: Lytics audience webhooks, and the open Slack families.
WEBHOOK_TYPES = ("lytics.segment.entered", "lytics.segment.exited")
OPEN_FAMILIES = ("slack.action.", "slack.command.")
# The bridge's own: a time trigger's tick (bridge/rules/cron.py), for its rule alone.
BRIDGE_TYPES = (SCHEDULE_EVENT,)
EVENTS_DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"
_DOC_TYPE = re.compile(r"`([a-z_]+\.[a-z_]+\.[a-z_]+)`")


@cache
def event_catalogue() -> EventTypes:
    """The event types lytbridge's sources emit, with the documented type of their fields."""
    types = {t for found in poller_event_types().values() for t in found} | set(WEBHOOK_TYPES)
    types |= set(BRIDGE_TYPES)
    # Only our own sources' fields: a generic source's example (shop.order.paid) is not
    # what every sender of that type sends.
    fields = {t: f for t, f in _documented_fields(EVENTS_DOC).items() if t in types}
    return EventTypes(frozenset(types), OPEN_FAMILIES, fields)


def _documented_fields(doc: Path) -> dict[str, dict[str, str]]:
    """Per event type: `data.<path>` → JSON type, from the examples in docs/events.md.

    Only what every example of a type agrees on; nothing when the file is not there
    (an installed package without its docs simply checks less).
    """
    try:
        text = doc.read_text(encoding="utf-8")
    except OSError:
        return {}
    seen: dict[str, dict[str, set[str]]] = {}
    for chunk in re.split(r"^### ", text, flags=re.MULTILINE)[1:]:
        # The types a heading names share the shape of its example (`Proofs: created, …`).
        heading = set(_DOC_TYPE.findall(chunk.partition("\n")[0]))
        for block in re.findall(r"```json\n(.*?)```", chunk, flags=re.DOTALL):
            try:
                example = json.loads(block)
            except ValueError:
                continue
            if not isinstance(example, dict) or not isinstance(example.get("type"), str):
                continue
            for event_type in heading | {example["type"]}:
                _walk("data", example.get("data"), seen.setdefault(event_type, {}), 0)
    return {
        event_type: {path: kinds.pop() for path, kinds in fields.items() if len(kinds) == 1}
        for event_type, fields in seen.items()
    }


def _walk(path: str, value: Any, fields: dict[str, set[str]], depth: int) -> None:
    kind = type_name(value)
    if kind == "null":
        return
    fields.setdefault(path, set()).add("number" if kind == "integer" else kind)
    if isinstance(value, dict) and depth < 4:
        for key, item in value.items():
            _walk(f"{path}.{key}", item, fields, depth + 1)
