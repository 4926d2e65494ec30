"""slack.post is paced per channel through Redis: bursts spread out, Retry-After shared."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.clients.slack import channel_scope
from tests.helpers import Bridge, running_bridge, wait_for

# Slack allows about one message a second per channel after a short burst; the bridge
# lets three go at once, then one a second.
BURST = 3
INTERVAL = 1.0
# Arrival times are taken as the sandbox stores each message, so they carry each request's
# latency: the burst's first messages also open their connections, the paced ones reuse
# them. Allow for that and for scheduling noise on a busy machine.
TOLERANCE = 0.25

RULE = """
id: order-to-channel
on: shop.order.paid
actions:
  - id: notify
    uses: slack.post
    with: {channel: "{{ data.channel }}", text: "order {{ event.id }}"}
"""


class Arrivals:
    """What the Slack sandbox stored, with the monotonic time of each message."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: list[tuple[float, str, str]] = []

    def __call__(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.messages.append((time.monotonic(), record["channel_name"], record["text"]))

    def times(self, channel: str) -> list[float]:
        with self._lock:
            return sorted(at for at, name, _ in self.messages if name == channel)


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path) as b:
        b.write_rule("orders.yaml", RULE)
        b.start_slack()
        b.start_web()
        yield b


def order(event_id: str, channel: str) -> dict[str, Any]:
    return {"id": event_id, "type": "shop.order.paid", "data": {"channel": channel}}


def chat_requests(bridge: Bridge) -> list[dict[str, Any]]:
    return [r for r in list(bridge.slack.requests) if r["path"] == "/api/chat.postMessage"]


@pytest.mark.slow
def test_six_posts_to_one_channel_are_paced_and_another_channel_is_not_held(
    bridge: Bridge,
) -> None:
    arrivals = Arrivals()
    bridge.slack.on_message = arrivals
    # The sandbox itself allows one a second after a burst of five, as Slack roughly does:
    # paced messages never meet its 429.
    bridge.slack.per_channel_rate = 1.0
    bridge.start_worker()
    batch = [order(f"c-{n}", "#creative") for n in range(6)]
    assert bridge.post(batch, source="shop").status_code == 202
    assert bridge.post([order("a-1", "#alerts")], source="shop").status_code == 202

    [alert] = wait_for(lambda: arrivals.times("#alerts"), what="the #alerts message")
    creative = wait_for(
        lambda: t if len(t := arrivals.times("#creative")) == 6 else None,
        what="six #creative messages",
    )
    # The other channel is not queued behind the first one's paced messages.
    assert alert < creative[-1]

    # No n-second window holds more than BURST + n messages: after the burst they arrive
    # a second apart (GCRA's guarantee, whatever order the jobs ran in).
    for (i, earlier), (j, later) in itertools.combinations(enumerate(creative), 2):
        assert later - earlier >= (j - i - (BURST - 1)) * INTERVAL - TOLERANCE, creative
    assert creative[-1] - creative[0] >= (6 - BURST) * INTERVAL - TOLERANCE, creative
    # Every order was posted once, and Slack never had to say 429.
    assert sorted(text for _, name, text in arrivals.messages if name == "#creative") == sorted(
        f"order c-{n}" for n in range(6)
    )
    assert [r for r in chat_requests(bridge) if r["status"] == 429] == []
    # A paced step waits without spending a try.
    for n in range(6):
        run = wait_for(lambda n=n: bridge.trace_has(f"c-{n}", "run"), what=f"run of c-{n}")  # type: ignore[misc]
        assert run["status"] == "succeeded"
        assert bridge.trace_has(f"c-{n}", "step", status="succeeded", attempt=1) is not None


@pytest.mark.slow
def test_a_429_holds_the_channel_for_retry_after_in_every_job(bridge: Bridge) -> None:
    retry_after = 2
    httpx.post(
        f"{bridge.slack_url}/_sandbox/scenario",
        json={"kind": "rate_limit", "channel": "#creative", "retry_after": retry_after},
    )
    bridge.start_worker()
    assert bridge.post([order("r-1", "#creative")], source="shop").status_code == 202
    [limited] = wait_for(
        lambda: [r for r in chat_requests(bridge) if r["status"] == 429], what="the 429"
    )
    # A second message for the same channel, sent after Slack said "wait": it waits too,
    # although its own job never met the 429.
    assert bridge.post([order("r-2", "#creative")], source="shop").status_code == 202
    wait_for(lambda: len(bridge.slack.received("#creative")) == 2, what="both messages")

    later = [r for r in chat_requests(bridge) if r["at"] > limited["at"]]
    assert [r["status"] for r in later] == [200, 200]
    assert min(r["at"] for r in later) - limited["at"] >= retry_after - TOLERANCE
    first = wait_for(lambda: bridge.trace_has("r-1", "step", status="rate_limited"))
    assert first["retry_after"] == float(retry_after)
    # The trace entry is written after Slack answered: wait for it, then check the try.
    for event_id in ("r-1", "r-2"):
        done = wait_for(
            lambda e=event_id: bridge.trace_has(e, "step", status="succeeded"),  # type: ignore[misc]
            what=f"the step of {event_id} traced",
        )
        assert done["attempt"] == 1  # the 429 spent no try


def test_a_channel_has_one_schedule_however_its_name_is_written() -> None:
    assert channel_scope("#Creative") == channel_scope("creative") == "creative"
    assert channel_scope("C0123ABC") == "C0123ABC"
    odd = channel_scope("#{weird}" + "x" * 200)
    assert odd.startswith("h") and len(odd) == 25 and "{" not in odd
