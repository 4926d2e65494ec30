"""docs/events.md stays in step with the code: every type emitted is documented, and back."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bridge.events import Event
from bridge.ingress import normalize
from bridge.ingress.pollers import POLLER_NAMES, poller_event_types

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"
TYPE = re.compile(r"`([a-z_]+\.[a-z_]+\.[a-z_]+)`")


def webhook_types() -> set[str]:
    """The types the webhook normalizers themselves emit (generic ones are the sender's)."""
    payload = {
        "id": "p1",
        "data": {
            "_uid": "u1",
            "segment_events": [{"slug": "a", "enter": True}, {"slug": "b", "enter": False}],
        },
    }
    return {e.type for e in normalize.lytics_events(payload, None)}


def sections() -> list[tuple[set[str], list[dict[str, object]]]]:
    """Per `###` heading: the event types it names and the example events below it."""
    found: list[tuple[set[str], list[dict[str, object]]]] = []
    text = DOC.read_text(encoding="utf-8")
    for chunk in re.split(r"^### ", text, flags=re.MULTILINE)[1:]:
        heading, _, body = chunk.partition("\n")
        examples = [
            json.loads(block) for block in re.findall(r"```json\n(.*?)```", body, flags=re.DOTALL)
        ]
        found.append((set(TYPE.findall(heading)), examples))
    return found


def test_every_type_emitted_is_documented_and_every_documented_type_is_emitted() -> None:
    by_poller = poller_event_types()
    assert set(by_poller) == set(POLLER_NAMES)
    emitted = {t for types in by_poller.values() for t in types} | webhook_types()
    documented = {t for types, _ in sections() for t in types}
    assert sorted(emitted - documented) == [], "emitted but not in docs/events.md"
    assert sorted(documented - emitted) == [], "in docs/events.md but never emitted"


def test_every_documented_type_has_a_valid_example_from_its_source() -> None:
    source_of = {t: name for name, types in poller_event_types().items() for t in types}
    source_of.update({t: "lytics" for t in webhook_types()})
    for types, examples in sections():
        if not types:
            continue
        events = [Event.from_dict(e) for e in examples if "specversion" in e]
        assert events, f"no example under the heading of {sorted(types)}"
        for event in events:
            assert event.type in types, f"example of {event.type} under {sorted(types)}"
            assert event.source == source_of[event.type]
            assert event.subject, f"example of {event.type} has no subject"
            if event.type.endswith((".updated", ".status_changed", ".tagged", ".untagged")):
                assert event.changes, f"example of {event.type} shows no changes"
            if event.type.endswith((".created", ".deleted", ".entered", ".exited")):
                assert not event.changes, f"example of {event.type} shows changes"


def test_each_poller_declares_its_types_in_one_constant() -> None:
    from bridge.ingress.pollers import lytho, lytho_workflow, lytics

    for module in (lytho, lytho_workflow, lytics):
        assert len(set(module.EVENT_TYPES)) == len(module.EVENT_TYPES)
        assert all(t == t.lower() and t.count(".") == 2 for t in module.EVENT_TYPES)
