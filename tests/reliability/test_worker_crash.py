"""A worker SIGKILLed twice during 1,000 events: everything runs, finished steps never repeat."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.helpers import running_bridge, wait_for
from tests.reliability.conftest import Figures

EVENTS = 1000
BATCH = 50
MAX_JOBS = 8
KILLS_AT = (0.25, 0.6)  # fractions of all Slack messages posted when a worker is killed
# Before each kill Slack slows down for a few calls, so the kill lands inside HTTP calls
# (below the 1 s step timeout): the honest window is exercised, not left to chance.
SLOW_CALL_SECONDS = 0.3

RULE = """
id: two-steps
on: shop.order.paid
actions:
  - id: first
    uses: slack.post
    with: {channel: "#creative", text: "first {{ event.id }}"}
  - id: second
    uses: slack.post
    with: {channel: "#alerts", text: "second {{ event.id }}"}
"""


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_sigkill_during_1000_events_repeats_no_finished_step(
    redis_url: str, key_prefix: str, tmp_path: Path, figures: Figures
) -> None:
    env = {"BRIDGE_STEP_TIMEOUT": "1", "BRIDGE_WORKER_MAX_JOBS": str(MAX_JOBS)}
    # A thousand messages to one channel: lift Slack's per-channel pace, which this test
    # is not about.
    env["BRIDGE_RATE_LIMIT_SLACK"] = "100000/1s"
    with running_bridge(redis_url, key_prefix, tmp_path, **env) as bridge:
        bridge.write_rule("orders.yaml", RULE)
        bridge.start_slack()
        bridge.start_web()
        ids = [f"o-{n}" for n in range(EVENTS)]
        for start in range(0, EVENTS, BATCH):
            batch = [
                {"id": i, "type": "shop.order.paid", "data": {"n": i}}
                for i in ids[start : start + BATCH]
            ]
            assert bridge.post(batch, source="shop").status_code == 202
        assert bridge.stored_events() == EVENTS

        began = time.monotonic()
        worker = bridge.start_worker()
        kills = 0
        for fraction in KILLS_AT:
            wanted = int(2 * EVENTS * fraction)
            wait_for(
                lambda n=wanted: len(bridge.slack.messages) >= n,  # type: ignore[misc]
                timeout=60,
                what=f"{wanted} Slack messages before kill {kills + 1}",
            )
            httpx.post(
                f"{bridge.slack_url}/_sandbox/scenario",
                json={"kind": "delay", "count": MAX_JOBS, "seconds": SLOW_CALL_SECONDS},
            )
            wait_for(lambda: not bridge.slack.scenarios, what="the slow calls to be in flight")
            worker.send_signal(signal.SIGKILL)
            worker.wait(5)
            kills += 1
            worker = bridge.start_worker()

        # Jobs that were running when a worker died are re-run once arq's lock on them
        # expires (job timeout + 10 s), so the last ones arrive about 16 s after a kill.
        wait_for(
            lambda: len(bridge.slack.messages) >= 2 * EVENTS,
            timeout=90,
            what="a Slack message for every step",
        )
        wait_for(
            lambda: _finished_runs(bridge, ids) == EVENTS,
            timeout=30,
            what="every run to succeed",
        )
        elapsed = time.monotonic() - began

        posted = Counter((m["channel_name"], m["text"]) for m in bridge.slack.received())
        expected = {("#creative", f"first {i}") for i in ids} | {
            ("#alerts", f"second {i}") for i in ids
        }
        missing = expected - set(posted)
        repeated = {key: n for key, n in posted.items() if n > 1}
        extra_posts = sum(n - 1 for n in repeated.values())
        unexpected = set(posted) - expected
        succeeded = _succeeded_steps(bridge, ids)
        completed_twice = {key: n for key, n in succeeded.items() if n > 1}
        figures(
            events=EVENTS,
            steps=2 * EVENTS,
            kills=kills,
            max_jobs=MAX_JOBS,
            slack_messages=sum(posted.values()),
            missing_steps=len(missing),
            repeated_in_flight_steps=len(repeated),
            extra_slack_posts=extra_posts,
            repeat_bound=kills * MAX_JOBS,
            completed_steps_repeated=len(completed_twice),
            dead_letters=len(bridge.dead_letters()),
            seconds_to_finish=round(elapsed, 1),
        )
        assert missing == set()
        assert unexpected == set()
        assert completed_twice == {}
        # The honest window: a step killed mid-call may have reached Slack and runs again.
        # At most MAX_JOBS steps are in flight when a worker dies; each runs once more.
        assert extra_posts <= kills * MAX_JOBS, repeated
        assert bridge.dead_letters() == []
        assert worker.poll() is None


def _traces(bridge, ids: list[str]) -> list[list[dict]]:  # type: ignore[no-untyped-def]
    pipe = bridge.redis.pipeline(transaction=False)
    for event_id in ids:
        pipe.lrange(f"{bridge.settings.key_prefix}trace:{event_id}", 0, -1)
    return [[json.loads(raw) for raw in entries] for entries in pipe.execute()]


def _finished_runs(bridge, ids: list[str]) -> int:  # type: ignore[no-untyped-def]
    return sum(
        any(e["kind"] == "run" and e.get("status") == "succeeded" for e in trace)
        for trace in _traces(bridge, ids)
    )


def _succeeded_steps(bridge, ids: list[str]) -> Counter[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """How often each (event, step) was recorded as finished: a re-run of one shows as 2."""
    found: Counter[tuple[str, str]] = Counter()
    for event_id, trace in zip(ids, _traces(bridge, ids), strict=True):
        for entry in trace:
            if entry["kind"] == "step" and entry.get("status") == "succeeded":
                found[(event_id, entry["step"])] += 1
    return found
