"""Parsed bodies become events: generic sources, CloudEvents (3 modes), Lytics audiences."""

from __future__ import annotations

import pytest

from bridge.errors import EventError
from bridge.ingress.normalize import (
    cloudevents_binary,
    cloudevents_structured,
    generic_events,
    lytics_events,
)


def test_generic_event_keeps_its_fields_and_takes_the_source_from_the_path() -> None:
    [event] = generic_events(
        "shop",
        {
            "id": 7,
            "type": "shop.order.paid",
            "subject": "order/7",
            "data": {"total": 12.5},
            "changes": {"state": {"from": "open", "to": "paid"}},
        },
        "msg_1",
    )
    assert (event.id, event.source, event.type, event.subject) == (
        "7",
        "shop",
        "shop.order.paid",
        "order/7",
    )
    assert event.data == {"total": 12.5}
    assert event.changes == {"state": {"from": "open", "to": "paid"}}


def test_without_any_id_the_content_is_the_identity() -> None:
    one = generic_events("shop", {"type": "a.b", "data": 1}, None)[0]
    two = generic_events("shop", {"type": "a.b", "data": 1}, None)[0]
    other = generic_events("shop", {"type": "a.b", "data": 2}, None)[0]
    assert one.id == two.id != other.id


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "the body is an empty array; expected at least one event"),
        ({"type": ""}, "'type' must not be empty"),
        ({"type": "a.b", "id": {"x": 1}}, "'id' must be a string"),
        (
            {"type": "a.b", "changes": {"x": 1}},
            "'changes' must map field names to {from, to} objects",
        ),
        ([{"type": "a.b"}] * 1001, "the body holds 1001 events; at most 1000 per request"),
    ],
)
def test_generic_errors_are_precise(payload: object, message: str) -> None:
    with pytest.raises(EventError) as info:
        generic_events("shop", payload, "m")
    assert str(info.value) == message


CE = {
    "specversion": "1.0",
    "id": "ce-1",
    "source": "/lytho/dam",
    "type": "lytho.asset.created",
    "time": "2026-11-25T10:00:00Z",
    "data": {"id": 5},
}


def test_cloudevents_structured_and_batch() -> None:
    [event] = cloudevents_structured(CE)
    assert (event.id, event.source, event.type, event.time) == (
        "ce-1",
        "/lytho/dam",
        "lytho.asset.created",
        "2026-11-25T10:00:00Z",
    )
    batch = cloudevents_structured([CE, CE | {"id": "ce-2"}])
    assert [e.id for e in batch] == ["ce-1", "ce-2"]


def test_cloudevents_binary_takes_attributes_from_headers() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "b-1",
        "ce-source": "/x",
        "ce-type": "x.y",
        "content-type": "application/json",
    }
    [event] = cloudevents_binary(headers, {"a": 1})
    assert (event.id, event.source, event.type, event.data) == ("b-1", "/x", "x.y", {"a": 1})


def test_cloudevents_errors() -> None:
    with pytest.raises(EventError, match=r"^CloudEvents attribute 'source' is required$"):
        cloudevents_structured(CE | {"source": None})
    with pytest.raises(EventError, match=r"^specversion '0.3' is not supported; expected 1.0$"):
        cloudevents_structured(CE | {"specversion": "0.3"})


LYTICS = {
    "id": "lyt-77",
    "data": {
        "email": "ana@example.com",
        "name": "Ana",
        "segment_events": [
            {"id": "se-1", "event": "segment_entered", "slug": "high_value", "enter": True},
            {"id": "se-2", "event": "segment_exited", "slug": "trial", "enter": False},
        ],
    },
    "meta": {"object": "user"},
}


def test_lytics_audience_webhook_gives_one_event_per_segment_change() -> None:
    entered, exited = lytics_events(LYTICS, "wh-1")
    assert (entered.id, entered.type, entered.subject) == (
        "se-1",
        "lytics.segment.entered",
        "high_value",
    )
    assert entered.data == {
        "email": "ana@example.com",
        "name": "Ana",
        "segment": {"slug": "high_value", "event": "segment_entered"},
    }
    assert (exited.type, exited.subject) == ("lytics.segment.exited", "trial")
    assert entered.source == exited.source == "lytics"


def test_lytics_payload_wrapped_as_cloudevent_is_unwrapped() -> None:
    wrapped = {"specversion": "1.0", "id": "c", "source": "lytics", "type": "t", "data": LYTICS}
    assert [e.id for e in lytics_events(wrapped, None)] == ["se-1", "se-2"]


def test_lytics_errors() -> None:
    with pytest.raises(EventError, match=r"^'data.segment_events' must be a non-empty array$"):
        lytics_events({"id": "x", "data": {"email": "a"}}, None)
    bad = {"data": {"segment_events": [{"slug": "s", "enter": "yes"}]}}
    with pytest.raises(EventError, match=r"^segment_events\[0\].enter must be true or false$"):
        lytics_events(bad, None)
