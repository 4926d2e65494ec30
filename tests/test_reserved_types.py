"""`bridge.*` event types are lytbridge's own (a scheduled rule's tick is `bridge.schedule`):
the webhook door and `bridge send` refuse them with a 400 and store nothing, so no sender
can run a scheduled rule at will; `bridge fire`, the operator's, still sends a tick."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.cli.main import main
from tests.helpers import Bridge, running_bridge, signed_headers
from tests.test_webhook_door import assert_nothing_stored

SCHEDULED = """
id: weekday-summary
on: {schedule: "0 9 * * MON-FRI", timezone: Europe/Amsterdam}
actions:
  - uses: slack.post
    with: {channel: "#marketing", text: "Good morning! {{ data.tick_local }}"}
"""
TICK = {"type": "bridge.schedule", "subject": "weekday-summary", "time": "2026-12-07T08:00:00Z"}
REFUSED = "type 'bridge.schedule' is reserved for lytbridge's own events"


@pytest.fixture
def bridge(
    redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path) as b:
        b.write_rule("summary.yaml", SCHEDULED)
        b.start_web()
        for name, value in b.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        yield b


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (TICK, REFUSED),
        ({**TICK, "type": "bridge.anything"}, REFUSED.replace("schedule", "anything")),
        ([{"id": "ok-1", "type": "shop.order.paid"}, TICK], f"item 1: {REFUSED}"),
    ],
)
def test_the_webhook_door_refuses_bridge_types_and_stores_nothing(
    bridge: Bridge, body: Any, message: str
) -> None:
    response = bridge.post(body)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "bad_event", "message": message},
    )
    assert_nothing_stored(bridge)


def test_a_cloudevent_of_a_bridge_type_is_refused_too(bridge: Bridge) -> None:
    event = {"specversion": "1.0", "id": "ce-1", "source": "bridge", **TICK}
    raw = json.dumps(event).encode()
    headers = signed_headers(raw) | {"content-type": "application/cloudevents+json"}
    response = httpx.post(f"{bridge.web_url}/hooks/cloudevents", content=raw, headers=headers)
    assert (response.status_code, response.json()["message"]) == (400, REFUSED)
    assert_nothing_stored(bridge)


def test_bridge_send_is_refused_and_bridge_fire_still_sends_a_tick(
    bridge: Bridge, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tick.json").write_text(json.dumps(TICK))
    assert main(["send", "tick.json", "--url", bridge.web_url]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f'400 {{"error":"bad_event","message":"{REFUSED}"}}'
    assert_nothing_stored(bridge)
    assert main(["fire", "tick.json", "--dry-run"]) == 0
    assert "weekday-summary" in capsys.readouterr().out
