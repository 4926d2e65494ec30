"""How a run ends, end to end on a real worker: a failed run gives its dedupe and throttle
slots back; a step that failed with continue_on_error leaves the run succeeded *with errors*
(trace and /metrics)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import Bridge, running_bridge, wait_for

THROTTLED = """
rules:
  - id: job-failed-alert
    on: shop.job.failed
    throttle: {key: "#ops", limit: 1, per: 30m}
    actions:
      - id: alert
        uses: slack.post
        with: {channel: "#ops", text: "job {{ data.job }} failed"}
  - id: order-once
    on: shop.order.paid
    dedupe: {key: "order-{{ data.order }}", ttl: 1h}
    actions:
      - id: notify
        uses: slack.post
        with: {channel: "#sales", text: "order {{ data.order }} paid ({{ event.id }})"}
"""

CONTINUED = """
id: sync-then-tell
on: shop.order.paid
actions:
  - id: first
    uses: slack.post
    continue_on_error: true
    with: {channel: "#alerts", text: "order {{ data.order }}"}
  - id: second
    uses: slack.post
    with:
      channel: "#sales"
      text: "order {{ data.order }}; first step failed: {{ steps.first.failed | default(false) }}"
"""


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path) as b:
        b.start_slack()
        b.start_web()
        yield b


def slack_fails_once(bridge: Bridge, error: str = "channel_not_found") -> None:
    response = httpx.post(
        f"{bridge.slack_url}/_sandbox/scenario", json={"kind": "error", "error": error}
    )
    assert response.status_code < 300, response.text


def evaluated(bridge: Bridge, event_id: str) -> dict[str, object]:
    entry = wait_for(lambda: bridge.trace_has(event_id, "evaluated"), what=f"{event_id} evaluated")
    return entry


def test_a_dead_lettered_run_gives_its_throttle_slot_back(bridge: Bridge) -> None:
    bridge.write_rule("rules.yaml", THROTTLED)
    bridge.start_worker()
    slack_fails_once(bridge)
    assert bridge.post({"id": "j-1", "type": "shop.job.failed", "data": {"job": 1}}).status_code
    [letter] = wait_for(bridge.dead_letters, what="the first alert's dead letter")
    assert letter["event_id"] == "j-1"
    assert "channel_not_found" in letter["error"]
    # The run gives its slot back after storing its dead letter, then traces its end.
    ended = wait_for(lambda: bridge.trace_has("j-1", "run"), what="the first run's end")
    assert ended["status"] == "dead_lettered"
    # The failed run did not spend the slot: the next failure is alerted.
    bridge.post({"id": "j-2", "type": "shop.job.failed", "data": {"job": 2}})
    messages = wait_for(lambda: bridge.slack.received("#ops"), what="the second alert")
    assert [m["text"] for m in messages] == ["job 2 failed"]
    assert "suppressed" not in evaluated(bridge, "j-2")
    # A run that succeeded holds its slot: the third is throttled.
    bridge.post({"id": "j-3", "type": "shop.job.failed", "data": {"job": 3}})
    held = evaluated(bridge, "j-3")["suppressed"]
    assert held["job-failed-alert"]["by"] == "throttle"  # type: ignore[index]
    wait_for(lambda: bridge.queued() == 0, what="the queue to drain")
    assert [m["text"] for m in bridge.slack.received("#ops")] == ["job 2 failed"]
    # What each run booked is forgotten once it ended (given back, or kept for good).
    pattern = f"{bridge.settings.key_prefix}slots:*"
    wait_for(lambda: not list(bridge.redis.scan_iter(match=pattern)), what="no bookings left")


def test_a_dead_lettered_run_gives_its_dedupe_key_back(bridge: Bridge) -> None:
    bridge.write_rule("rules.yaml", THROTTLED)
    bridge.start_worker()
    slack_fails_once(bridge)
    order = {"type": "shop.order.paid", "data": {"order": 77}}
    bridge.post({"id": "o-1", **order})
    wait_for(bridge.dead_letters, what="the dead letter")
    # The run gives its key back after storing its dead letter, then traces its end.
    ended = wait_for(lambda: bridge.trace_has("o-1", "run"), what="the failed run's end")
    assert ended["status"] == "dead_lettered"
    # The same order paid again (another event, the same dedupe key) now runs.
    bridge.post({"id": "o-2", **order})
    messages = wait_for(lambda: bridge.slack.received("#sales"), what="the second try")
    assert [m["text"] for m in messages] == ["order 77 paid (o-2)"]
    # It succeeded, so it holds the key now.
    bridge.post({"id": "o-3", **order})
    held = evaluated(bridge, "o-3")["suppressed"]
    assert held["order-once"]["reason"].startswith(  # type: ignore[index]
        "dedupe key 'order-77' already ran for event o-2; it expires in "
    )


def test_continue_on_error_shows_the_run_as_succeeded_with_errors(bridge: Bridge) -> None:
    bridge.write_rule("sync.yaml", CONTINUED)
    bridge.start_worker()
    slack_fails_once(bridge)
    bridge.post({"id": "c-1", "type": "shop.order.paid", "data": {"order": 5}})
    run = wait_for(lambda: bridge.trace_has("c-1", "run"), what="the run's end")
    assert run["status"] == "succeeded_with_errors"
    assert run["failed_steps"] == ["first"]
    step = bridge.trace_has("c-1", "step", step="first")
    assert step is not None and step["status"] == "failed" and step["continued"] is True
    assert [m["text"] for m in bridge.slack.received("#sales")] == [
        "order 5; first step failed: True"
    ]
    assert bridge.dead_letters() == []
    # A clean run of the same rule is plain `succeeded`, and /metrics counts both.
    bridge.post({"id": "c-2", "type": "shop.order.paid", "data": {"order": 6}})
    clean = wait_for(lambda: bridge.trace_has("c-2", "run"), what="the clean run")
    assert clean["status"] == "succeeded" and "failed_steps" not in clean
    with_errors = 'lytbridge_runs_total{outcome="succeeded_with_errors",rule="sync-then-tell"} 1'
    succeeded = 'lytbridge_runs_total{outcome="succeeded",rule="sync-then-tell"} 1'
    text = wait_for(
        lambda: (
            (t := httpx.get(f"{bridge.web_url}/metrics", timeout=10).text)
            and with_errors in t
            and succeeded in t
            and t
        ),
        what="the run outcomes in /metrics",
    )
    assert "# TYPE lytbridge_runs_total counter" in text
