"""Dedupe and throttle of rule runs: shared through Redis, visible in the trace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bridge.actions import action_schemas
from bridge.events import Event
from bridge.jobs.limits import RunLimits
from bridge.rules import event_context, load_rules
from bridge.templates.environment import Templates
from tests.helpers import Bridge, running_bridge, wait_for

RULES = """
rules:
  - id: once-per-asset
    on: lytho.asset.updated
    dedupe: {key: "asset-{{ data.id }}", ttl: 1h}
    actions:
      - uses: slack.post
        with: {channel: "#creative", text: "asset {{ data.id }} changed"}
  - id: two-per-hour
    on: lytics.segment.entered
    throttle: {key: "{{ event.subject }}", limit: 2, per: 1h}
    actions:
      - uses: slack.post
        with: {channel: "#sales", text: "{{ data.email }} entered {{ event.subject }}"}
"""


@pytest.fixture
async def limits(redis_url: str, key_prefix: str) -> AsyncIterator[RunLimits]:
    redis = Redis.from_url(redis_url)
    yield RunLimits(redis, key_prefix)
    await redis.aclose()


def ruleset(tmp_path: Path) -> object:
    (tmp_path / "r.yaml").write_text(RULES)
    return load_rules(tmp_path, templates=Templates(), actions=action_schemas())


async def test_dedupe_admits_a_key_once_even_under_concurrency(
    limits: RunLimits, tmp_path: Path
) -> None:
    rule = ruleset(tmp_path).get("once-per-asset")  # type: ignore[attr-defined]
    templates = Templates()
    events = [
        Event(id=f"e{i}", source="t", type="lytho.asset.updated", data={"id": 7}) for i in range(10)
    ]
    verdicts = await asyncio.gather(
        *(limits.admit(rule, e.id, event_context(e, rule), templates) for e in events)
    )
    [admitted] = [e.id for e, v in zip(events, verdicts, strict=True) if v is None]
    held = [v for v in verdicts if v is not None]
    assert {v.by for v in held} == {"dedupe"}
    assert held[0].reason.startswith(
        f"dedupe key 'asset-7' already ran for event {admitted}; it expires in "
    )
    other = Event(id="x", source="t", type="lytho.asset.updated", data={"id": 8})
    assert await limits.admit(rule, other.id, event_context(other, rule), templates) is None


async def test_throttle_allows_limit_per_window(limits: RunLimits, tmp_path: Path) -> None:
    rule = ruleset(tmp_path).get("two-per-hour")  # type: ignore[attr-defined]
    templates = Templates()

    def entered(i: int, segment: str = "vip") -> Event:
        return Event(
            id=f"s{i}",
            source="lytics",
            type="lytics.segment.entered",
            subject=segment,
            data={"email": f"p{i}@example.com"},
        )

    results = []
    for i in range(4):
        e = entered(i)
        results.append(await limits.admit(rule, e.id, event_context(e, rule), templates))
    assert [r is None for r in results] == [True, True, False, False]
    assert results[2] is not None and results[2].by == "throttle"
    assert results[2].reason.startswith("throttle 'vip' is full (2 runs per 3600 s); room again")
    # Another key has its own window.
    e = entered(9, "trial")
    assert await limits.admit(rule, e.id, event_context(e, rule), templates) is None


async def test_an_event_admitted_again_keeps_its_own_booking(
    limits: RunLimits, tmp_path: Path
) -> None:
    """handle_event cut short after booking (a SIGTERM, a crash) runs again for the same
    event: its own dedupe key and throttle slot admit it; another event is still held."""
    rules = ruleset(tmp_path)
    templates = Templates()
    once = rules.get("once-per-asset")  # type: ignore[attr-defined]
    first = Event(id="e1", source="t", type="lytho.asset.updated", data={"id": 7})
    assert await limits.admit(once, first.id, event_context(first, once), templates) is None
    assert await limits.admit(once, first.id, event_context(first, once), templates) is None
    second = Event(id="e2", source="t", type="lytho.asset.updated", data={"id": 7})
    held = await limits.admit(once, second.id, event_context(second, once), templates)
    assert held is not None and held.by == "dedupe"

    two = rules.get("two-per-hour")  # type: ignore[attr-defined]
    entered = [
        Event(id=f"s{i}", source="lytics", type="lytics.segment.entered", subject="vip")
        for i in range(3)
    ]
    for event in entered[:2]:
        assert await limits.admit(two, event.id, event_context(event, two), templates) is None
    # The window is full, but s1 holds one of its two slots: admitted again, nothing booked.
    s1 = entered[1]
    assert await limits.admit(two, s1.id, event_context(s1, two), templates) is None
    s2 = entered[2]
    held = await limits.admit(two, s2.id, event_context(s2, two), templates)
    assert held is not None and held.by == "throttle"


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    with running_bridge(redis_url, key_prefix, tmp_path) as b:
        b.write_rule("r.yaml", RULES)
        b.start_slack()
        b.start_web()
        b.start_worker()
        yield b


def test_suppressed_runs_are_traced_and_post_nothing(bridge: Bridge) -> None:
    for i in range(3):
        body = {"id": f"a{i}", "type": "lytho.asset.updated", "data": {"id": 42}}
        assert bridge.post(body).status_code == 202
    wait_for(lambda: all(bridge.trace_has(f"a{i}", "evaluated") for i in range(3)))
    wait_for(lambda: bridge.slack.received("#creative"), what="the one message")
    suppressed = [
        bridge.trace_has(f"a{i}", "evaluated")["suppressed"]  # type: ignore[index]
        for i in range(3)
        if "suppressed" in bridge.trace_has(f"a{i}", "evaluated")
    ]  # type: ignore[operator]
    assert len(suppressed) == 2
    assert all(s["once-per-asset"]["by"] == "dedupe" for s in suppressed)
    assert [m["text"] for m in bridge.slack.received("#creative")] == ["asset 42 changed"]


async def test_a_released_run_gives_its_slots_back_and_only_its_own(
    limits: RunLimits, tmp_path: Path
) -> None:
    rules = ruleset(tmp_path)
    once = rules.get("once-per-asset")  # type: ignore[attr-defined]
    templates = Templates()

    def asset(event_id: str) -> Event:
        return Event(id=event_id, source="t", type="lytho.asset.updated", data={"id": 7})

    async def admit(event_id: str) -> object:
        event = asset(event_id)
        return await limits.admit(once, event.id, event_context(event, once), templates)

    assert await admit("a1") is None
    # While a1's run is in progress (or waiting to try again), it holds the key.
    held = await admit("a2")
    assert held is not None and "already ran for event a1" in held.reason  # type: ignore[attr-defined]
    # a1's run went to the dead letters: its key is given back; ten workers race for it.
    assert await limits.release("a1", "once-per-asset") is True
    verdicts = await asyncio.gather(*(admit(f"b{i}") for i in range(10)))
    assert [v is None for v in verdicts].count(True) == 1
    # A second release of a1 (a retried run that failed again) frees nothing of b's.
    assert await limits.release("a1", "once-per-asset") is False
    assert await admit("c1") is not None


async def test_a_released_throttle_slot_makes_room(limits: RunLimits, tmp_path: Path) -> None:
    rule = ruleset(tmp_path).get("two-per-hour")  # type: ignore[attr-defined]
    templates = Templates()

    async def admit(event_id: str) -> object:
        event = Event(
            id=event_id, source="lytics", type="lytics.segment.entered", subject="vip", data={}
        )
        return await limits.admit(rule, event.id, event_context(event, rule), templates)

    assert [await admit(e) is None for e in ("s1", "s2", "s3")] == [True, True, False]
    assert await limits.release("s2", "two-per-hour") is True
    assert [await admit(e) is None for e in ("s4", "s5")] == [True, False]
