"""Event files named on the command line: read, recognised, and turned into events."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError, EventError


def payload_kind(payload: Any) -> str:
    """`cloudevents`, `lytics-audience` (a Lytics audience webhook) or `generic`."""
    first = payload[0] if isinstance(payload, list) and payload else payload
    if not isinstance(first, dict):
        return "generic"
    if "specversion" in first:
        return "cloudevents"
    data = first.get("data")
    if isinstance(data, dict) and "segment_events" in data and "type" not in first:
        return "lytics-audience"
    return "generic"


def as_cloudevents(payload: Any, source: str, delivery: str) -> Any:
    """Generic events as CloudEvents of `source`, with the ids /hooks/{source} would give."""
    items = payload if isinstance(payload, list) else [payload]
    wrapped = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            return payload  # not events: the bridge says what is wrong with it
        event = {
            "specversion": "1.0",
            "id": item.get("id")
            or (delivery if not isinstance(payload, list) else f"{delivery}:{index}"),
            "source": source,
            **{k: item[k] for k in ("type", "subject", "time", "data", "changes") if k in item},
        }
        wrapped.append(event)
    return wrapped if isinstance(payload, list) else wrapped[0]


def read_json(path: Path) -> tuple[bytes, Any]:
    """The bytes and the parsed JSON of an event file; ConfigError if it is not JSON."""
    from bridge.ingress.webhooks import parse_json

    body = path.read_bytes()
    try:
        return body, parse_json(body)
    except EventError as exc:
        raise ConfigError(
            f"{path} is not a JSON event file ({exc}); expected an event object or an array"
        ) from None


def read_event_file(path: Path, source: str | None = None) -> Any:
    """The events of a JSON file: a generic event, a CloudEvent, a Lytics audience webhook,
    or an array of them; `source`, when given, is every event's source."""
    from bridge.ingress.normalize import cloudevents_structured, generic_events, lytics_events

    _, payload = read_json(path)
    delivery = f"fire-{uuid.uuid4().hex[:12]}"
    kind = payload_kind(payload)
    try:
        if kind == "cloudevents":
            events = cloudevents_structured(payload)
            return [replace(e, source=source) for e in events] if source else events
        if kind == "lytics-audience" and source in (None, "lytics"):
            return lytics_events(payload, delivery)
        first = payload[0] if isinstance(payload, list) and payload else payload
        named = first.get("source") if isinstance(first, dict) else None
        return generic_events(source or str(named or "cli"), payload, delivery)
    except EventError as exc:
        raise EventError(f"{path}: {exc}") from None
