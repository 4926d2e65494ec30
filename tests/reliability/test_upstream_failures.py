"""Slack and Lytics answering 429 and 500 for a while: every action done, Retry-After kept."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.sandbox.lytics import create_lytics_app
from bridge.sandbox.server import ThreadedServer
from tests.helpers import Bridge, running_bridge, wait_for
from tests.reliability.conftest import Figures

LYTICS_TOKEN = "sandbox-lytics-token"
RETRY_AFTER = 2
# Timestamps are taken as each answer is sent; allow for clock and scheduling noise.
TOLERANCE = 0.05

RULE = """
id: order-everywhere
on: shop.order.paid
actions:
  - id: notify
    uses: slack.post
    with: {channel: "#sales", text: "order {{ event.id }}"}
  - id: collect
    uses: lytics.collect
    with: {stream: orders, data: {order: "{{ event.id }}"}}
"""


@pytest.fixture
def lytics() -> Iterator[ThreadedServer]:
    server = ThreadedServer(create_lytics_app(LYTICS_TOKEN))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bridge(
    redis_url: str, key_prefix: str, tmp_path: Path, lytics: ThreadedServer
) -> Iterator[Bridge]:
    env = {"LYTICS_API_URL": lytics.url, "LYTICS_API_TOKEN": LYTICS_TOKEN}
    with running_bridge(redis_url, key_prefix, tmp_path, **env) as b:
        b.write_rule("orders.yaml", RULE)
        b.start_slack()
        b.start_web()
        yield b


def order(event_id: str) -> dict[str, object]:
    return {"id": event_id, "type": "shop.order.paid", "data": {"id": event_id}}


def gaps_after_429(log: list[tuple[float, int]]) -> list[float]:
    """Seconds from each 429 to the next request, from (time, status) pairs in order."""
    return [later[0] - first[0] for first, later in itertools.pairwise(log) if first[1] == 429]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_429_and_500_for_a_while_still_do_every_action(
    bridge: Bridge, lytics: ThreadedServer, figures: Figures
) -> None:
    slack, lytics_url = bridge.slack_url, lytics.url
    # Three 429s (Retry-After: 2) then two 500s from Slack; two 429s then four 500s from
    # Lytics. A 429 either waits inside the call or re-queues the step for Retry-After;
    # either way the next request may come no sooner.
    httpx.post(
        f"{slack}/_sandbox/scenario",
        json={"kind": "rate_limit", "count": 3, "retry_after": RETRY_AFTER},
    )
    httpx.post(f"{slack}/_sandbox/scenario", json={"kind": "status", "status": 500, "count": 2})
    for failure in (
        {"status": 429, "count": 2, "retry_after": str(RETRY_AFTER)},
        {"status": 500, "count": 4},
    ):
        answer = httpx.post(f"{lytics_url}/_sandbox/fail", json=failure | {"path": "/api/collect"})
        assert answer.status_code == 201

    bridge.start_worker()
    began = time.monotonic()
    assert bridge.post(order("u-1"), source="shop").status_code == 202
    wait_for(lambda: bridge.trace_has("u-1", "run", status="succeeded"), timeout=60)
    first_done = time.monotonic() - began

    # A second wave: 500s only, for several events at once.
    httpx.post(f"{slack}/_sandbox/scenario", json={"kind": "status", "status": 500, "count": 6})
    httpx.post(
        f"{lytics_url}/_sandbox/fail", json={"status": 500, "count": 6, "path": "/api/collect"}
    )
    ids = [f"u-{n}" for n in range(2, 7)]
    for event_id in ids:
        assert bridge.post(order(event_id), source="shop").status_code == 202
    for event_id in ids:
        wait_for(lambda i=event_id: bridge.trace_has(i, "run", status="succeeded"), timeout=60)  # type: ignore[misc]
    second_done = time.monotonic() - began - first_done

    slack_log = [
        (r["at"], r["status"])
        for r in bridge.slack.requests
        if r["path"] == "/api/chat.postMessage"
    ]
    lytics_requests = httpx.get(f"{lytics_url}/_sandbox/requests").json()["requests"]
    lytics_log = [(r["time"], r["status"]) for r in lytics_requests if r["path"] == "/api/collect"]
    collected = httpx.get(f"{lytics_url}/_sandbox/collected").json().get("orders", [])
    slack_gaps = gaps_after_429(slack_log)
    lytics_gaps = gaps_after_429(lytics_log)
    posted = sorted(m["text"] for m in bridge.slack.received())
    everything = ["u-1", *ids]
    figures(
        events=len(everything),
        slack_answers=dict(Counter(str(status) for _, status in slack_log)),
        lytics_answers=dict(Counter(str(status) for _, status in lytics_log)),
        retry_after_seconds=RETRY_AFTER,
        slack_min_gap_after_429=round(min(slack_gaps), 3),
        lytics_min_gap_after_429=round(min(lytics_gaps), 3),
        seconds_for_first_event=round(first_done, 1),
        seconds_for_second_wave=round(second_done, 1),
        dead_letters=len(bridge.dead_letters()),
    )
    assert posted == sorted(f"order {i}" for i in everything)
    assert sorted(c["order"] for c in collected) == sorted(everything)
    assert len(slack_gaps) == 3 and len(lytics_gaps) == 2
    assert min(slack_gaps + lytics_gaps) >= RETRY_AFTER - TOLERANCE
    assert bridge.dead_letters() == []
    limited = bridge.trace_has("u-1", "step", step="notify", status="rate_limited")
    assert limited is not None and limited["retry_after"] == float(RETRY_AFTER)
    # The 429s spent no try: the first 500 after them is still try 1.
    first_failure = bridge.trace_has("u-1", "step", step="notify", status="failed")
    assert first_failure is not None and first_failure["attempt"] == 1
