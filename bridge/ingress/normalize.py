"""Turn parsed webhook bodies into Events: generic sources, CloudEvents and Lytics audiences."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bridge.errors import EventError
from bridge.events import MAX_ID_LENGTH, Event, bounded_id, stable_id, utc_now
from bridge.ingress.checks import check_attribute, check_value, where

MAX_EVENTS_PER_REQUEST = 1000
# CloudEvents: `type` is a String; a bound keeps metrics labels, logs and keys small.
MAX_TYPE_LENGTH = 256
_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")

_where = where


def _text(value: Any, name: str, index: int | None, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise EventError(f"{_where(index)}'{name}' is required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise EventError(f"{_where(index)}'{name}' must be a string")
    text = str(value)
    if required and not text:
        raise EventError(f"{_where(index)}'{name}' must not be empty")
    if len(text) > MAX_ID_LENGTH:
        raise EventError(f"{_where(index)}'{name}' is longer than {MAX_ID_LENGTH} characters")
    return check_attribute(text, name, index)


def _event_type(value: Any, index: int | None) -> str:
    if value is None:
        raise EventError(f"{_where(index)}'type' is required")
    if not isinstance(value, str):
        raise EventError(f"{_where(index)}'type' must be a string, got {_json_type(value)}")
    if not value:
        raise EventError(f"{_where(index)}'type' must not be empty")
    if len(value) > MAX_TYPE_LENGTH:
        raise EventError(f"{_where(index)}'type' is longer than {MAX_TYPE_LENGTH} characters")
    check_attribute(value, "type", index)
    if not _TYPE_RE.match(value):
        raise EventError(
            f"{_where(index)}'type' {value!r} is not a valid event type; "
            "expected dotted words such as lytho.asset.updated"
        )
    return value


def _items(payload: Any, what: str) -> list[tuple[int | None, Mapping[str, Any]]]:
    if isinstance(payload, Mapping):
        return [(None, payload)]
    if isinstance(payload, list):
        if not payload:
            raise EventError(f"the body is an empty array; expected at least one {what}")
        if len(payload) > MAX_EVENTS_PER_REQUEST:
            raise EventError(
                f"the body holds {len(payload)} events; at most {MAX_EVENTS_PER_REQUEST} "
                "per request"
            )
        out: list[tuple[int | None, Mapping[str, Any]]] = []
        for index, item in enumerate(payload):
            if not isinstance(item, Mapping):
                raise EventError(f"item {index}: expected a JSON object, got {_json_type(item)}")
            out.append((index, item))
        return out
    raise EventError(f"expected a JSON object or an array of them, got {_json_type(payload)}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _fallback_id(source: str, webhook_id: str | None, index: int | None, item: Any) -> str:
    if webhook_id:
        # The delivery id is bounded at the door; with the index it may pass the bound.
        return bounded_id(webhook_id if index is None else f"{webhook_id}:{index}")
    # No id at all: the content itself identifies the event, so a resend is a duplicate.
    return stable_id(source, item)


def _check_content(item: Mapping[str, Any], index: int | None, deep: bool) -> None:
    """`data` and `changes` hold nothing that cannot be stored and shown faithfully."""
    if deep:
        check_value(item.get("data"), "data", index)
        check_value(item.get("changes"), "changes", index)


def generic_events(
    source: str, payload: Any, webhook_id: str | None, *, deep: bool = True
) -> list[Event]:
    """Events of a generic source: one object or an array, each with `type`.

    `deep=False` skips the walk over `data` and `changes` (for a body known to hold no
    surrogate escape, no overflowing number and little nesting).
    """
    events = []
    for index, item in _items(payload, "event"):
        _check_content(item, index, deep)
        event_id = _text(item.get("id"), "id", index, required=False) or _fallback_id(
            source, webhook_id, index, item
        )
        subject = _text(item.get("subject"), "subject", index, required=False)
        time = _text(item.get("time"), "time", index, required=False) or utc_now()
        events.append(
            Event(
                id=event_id,
                source=source,
                type=_event_type(item.get("type"), index),
                subject=subject,
                time=time,
                data=item.get("data"),
                changes=_changes(item.get("changes"), index),
            )
        )
    return events


def _changes(value: Any, index: int | None) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise EventError(f"{_where(index)}'changes' must map field names to {{from, to}} objects")
    return {str(k): {"from": v.get("from"), "to": v.get("to")} for k, v in value.items()}


_CE_REQUIRED = ("id", "source", "type", "specversion")


def _cloudevent(item: Mapping[str, Any], index: int | None, deep: bool) -> Event:
    _check_content(item, index, deep)
    for name in _CE_REQUIRED:
        if item.get(name) in (None, ""):
            raise EventError(f"{_where(index)}CloudEvents attribute '{name}' is required")
    if str(item["specversion"]) != "1.0":
        raise EventError(
            f"{_where(index)}specversion {item['specversion']!r} is not supported; expected 1.0"
        )
    if deep:
        check_value(item.get("data_base64"), "data_base64", index)
    data = item.get("data")
    if data is None and "data_base64" in item:
        data = {"data_base64": item["data_base64"]}
    event_id = _text(item["id"], "id", index, required=True)
    source = _text(item["source"], "source", index, required=True)
    assert event_id is not None and source is not None
    return Event(
        id=event_id,
        source=source,
        type=_event_type(item["type"], index),
        subject=_text(item.get("subject"), "subject", index, required=False),
        time=_text(item.get("time"), "time", index, required=False) or utc_now(),
        data=data,
        changes=_changes(item.get("changes"), index),
    )


def cloudevents_structured(payload: Any, *, deep: bool = True) -> list[Event]:
    """Structured (one object) or batch (array) CloudEvents in JSON."""
    return [_cloudevent(item, index, deep) for index, item in _items(payload, "CloudEvent")]


def cloudevents_binary(headers: Mapping[str, str], data: Any, *, deep: bool = True) -> list[Event]:
    """A binary-mode CloudEvent: attributes in `ce-*` headers, the body is `data`."""
    attributes: dict[str, Any] = {
        key.removeprefix("ce-"): value for key, value in headers.items() if key.startswith("ce-")
    }
    attributes["data"] = data
    return [_cloudevent(attributes, None, deep)]


def lytics_events(payload: Any, webhook_id: str | None, *, deep: bool = True) -> list[Event]:
    """Lytics audience webhooks: one segment entered/exited event per `segment_events` entry."""
    if isinstance(payload, Mapping) and payload.get("specversion") and "data" in payload:
        payload = payload["data"]  # Lytics may wrap its payload as a CloudEvent.
    events: list[Event] = []
    for index, item in _items(payload, "Lytics audience payload"):
        profile = item.get("data")
        if not isinstance(profile, Mapping):
            raise EventError(f"{_where(index)}'data' must be an object holding the profile")
        segment_events = profile.get("segment_events")
        if not isinstance(segment_events, list) or not segment_events:
            raise EventError(f"{_where(index)}'data.segment_events' must be a non-empty array")
        if deep:
            check_value(profile, "data", index)
        payload_id = _text(item.get("id"), "id", index, required=False)
        person = {k: v for k, v in profile.items() if k != "segment_events"}
        for position, change in enumerate(segment_events):
            if not isinstance(change, Mapping) or not change.get("slug"):
                raise EventError(
                    f"{_where(index)}segment_events[{position}] needs 'slug' and 'enter'"
                )
            enter = change.get("enter")
            if not isinstance(enter, bool):
                raise EventError(
                    f"{_where(index)}segment_events[{position}].enter must be true or false"
                )
            slug = _text(change["slug"], f"segment_events[{position}].slug", index, required=True)
            assert slug is not None
            event_id = _text(change.get("id"), "id", index, required=False) or stable_id(
                "lytics", payload_id or webhook_id or person, slug, enter, position
            )
            events.append(
                Event(
                    id=event_id,
                    source="lytics",
                    type="lytics.segment.entered" if enter else "lytics.segment.exited",
                    subject=slug,
                    data={**person, "segment": {"slug": slug, "event": change.get("event")}},
                )
            )
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise EventError(
            f"the body holds {len(events)} events; at most {MAX_EVENTS_PER_REQUEST} per request"
        )
    return events
