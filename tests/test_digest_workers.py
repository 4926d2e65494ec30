"""A digest across workers: it closes exactly once, and a SIGKILLed worker loses no match.

Two `bridge worker` processes on one Redis take the matches of 30 events. The window
stays open (1 h) until the test moves its close job to now, as the clock would
(tests/test_digest.py, `close_now`), so what is asserted never depends on timing.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.jobs.digest import close_digest
from bridge.operate.context import build_context
from tests.helpers import Bridge, running_bridge, wait_for
from tests.test_digest import close_now, joined

RULE = """
id: failed-orders-digest
on: shop.order.failed
digest: {key: "{{ data.shop }}", window: 1h, max: 1000}
actions:
  - uses: slack.post
    with:
      channel: "#ops"
      text: "{{ digest.count }} failed: {{ digest.events | map(attribute='data.n') | join(',') }}"
"""
EVENTS = 30


def order(n: int) -> dict[str, object]:
    return {"id": f"o-{n}", "type": "shop.order.failed", "data": {"n": n, "shop": "eu"}}


def numbers(text: str) -> list[int]:
    return sorted(int(n) for n in text.split(": ", 1)[1].split(","))


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    # A short step timeout: the jobs of a SIGKILLed worker are taken up again after it.
    with running_bridge(redis_url, key_prefix, tmp_path, BRIDGE_STEP_TIMEOUT="1") as running:
        running.write_rule("digest.yaml", RULE)
        running.start_slack()
        running.start_web()
        yield running


def all_joined(bridge: Bridge, count: int) -> set[str] | None:
    ids = [joined(bridge, f"o-{n}") for n in range(count)]
    return {i for i in ids if i} if all(ids) else None


def assert_one_digest_of_all(bridge: Bridge, digest_id: str) -> None:
    close_now(bridge, digest_id)
    messages = wait_for(lambda: bridge.slack.received("#ops"), what="the digest's message")
    wait_for(lambda: bridge.queued() == 0, what="the queue to empty")
    assert len(bridge.slack.received("#ops")) == 1
    assert numbers(messages[0]["text"]) == list(range(EVENTS))
    assert messages[0]["text"].startswith(f"{EVENTS} failed: ")
    trace = bridge.trace(digest_id)
    [digest] = [e for e in trace if e["kind"] == "digest"]
    assert sorted(digest["members"]) == sorted(f"o-{n}" for n in range(EVENTS))
    # The run's end is traced after its message was posted: wait for it.
    runs = wait_for(
        lambda: [e for e in bridge.trace(digest_id) if e["kind"] == "run"],
        what="the digest run's end",
    )
    assert [e["status"] for e in runs] == ["succeeded"]


@pytest.mark.timeout(120)
def test_30_matches_over_two_workers_make_one_run_that_closes_once(bridge: Bridge) -> None:
    bridge.start_worker()
    bridge.start_worker()
    for start in range(0, EVENTS, 5):
        batch = [order(n) for n in range(start, start + 5)]
        assert bridge.post(batch, source="shop").status_code == 202
    digests = wait_for(lambda: all_joined(bridge, EVENTS), timeout=60, what="30 joins")
    assert len(digests) == 1
    [digest_id] = digests
    assert_one_digest_of_all(bridge, digest_id)


@pytest.mark.timeout(150)
def test_a_worker_sigkilled_inside_the_window_loses_no_match(bridge: Bridge) -> None:
    victim = bridge.start_worker()
    bridge.start_worker()
    half = EVENTS // 2
    assert bridge.post([order(n) for n in range(half)], source="shop").status_code == 202
    [digest_id] = wait_for(lambda: all_joined(bridge, half), timeout=60, what="15 joins")

    # The rest arrive while one worker dies in the middle of taking them.
    def send_rest() -> None:
        for n in range(half, EVENTS):
            assert bridge.post([order(n)], source="shop").status_code == 202

    sender = threading.Thread(target=send_rest)
    sender.start()
    wait_for(lambda: joined(bridge, f"o-{half + 2}"), what="the second half to begin")
    victim.send_signal(signal.SIGKILL)
    victim.wait(5)
    sender.join(30)
    assert all_joined(bridge, half) == {digest_id}
    # Jobs the dead worker held are taken up again once its claims lapse.
    digests = wait_for(lambda: all_joined(bridge, EVENTS), timeout=90, what="30 joins")
    assert digests == {digest_id}
    members = bridge.redis.llen(f"{bridge.settings.key_prefix}digest:members:{digest_id}")
    assert members == EVENTS
    assert_one_digest_of_all(bridge, digest_id)


async def test_a_close_run_twice_at_once_queues_one_run(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    with running_bridge(redis_url, key_prefix, tmp_path) as running:
        running.write_rule("digest.yaml", RULE)
        running.start_web()
        assert running.post([order(1), order(2)], source="shop").status_code == 202
        worker = running.start_worker()
        digest_id = wait_for(lambda: joined(running, "o-1"))
        wait_for(lambda: joined(running, "o-2"))
        worker.send_signal(signal.SIGTERM)  # no worker runs the close: this test does, twice
        worker.wait(25)
        context = await build_context(running.settings, load_rules=False)
        try:
            ctx = {"bridge": context}
            args = ("failed-orders-digest", digest_id, "eu")
            first, second = await asyncio.gather(close_digest(ctx, *args), close_digest(ctx, *args))
            again = await close_digest(ctx, *args)
        finally:
            await context.close()
        outcomes = sorted([first["status"], second["status"]])
        assert outcomes in (["closed before", "queued"], ["queued", "queued before"])
        assert again == {"status": "closed before"}
        run_job = f"{running.settings.key_prefix}run:{digest_id}:failed-orders-digest"
        assert running.redis.zscore(running.settings.queue_name, run_job) is not None
        assert [e["kind"] for e in running.trace(digest_id)] == ["digest"]
