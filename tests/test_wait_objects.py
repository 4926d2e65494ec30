"""`for:` waits: what their object is (a Lytics profile in a segment, not the segment),
and what happens to a pending wait when its rule changes or the rule set is invalid."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import asyncio as aioredis

from bridge.cli.main import main
from bridge.ingress.pollers.snapshot import Commit, Snapshot
from bridge.jobs.waits import NO_RULES_TRIES
from tests.helpers import Bridge, running_bridge, wait_for
from tests.test_rule_for_waits import ORDER_RULE, check_jobs, check_now, order, printed, traced

VIP = """
id: vip-after-hour
on: lytics.segment.entered
when:
  - {path: data.segment.event, eq: segment_entered}
for: 1h
actions:
  - uses: slack.post
    with: {channel: "#sales", text: "{{ data.email }} still high value"}
"""


def entered(n: int, email: str, *, enter: bool = True) -> dict[str, Any]:
    event = "segment_entered" if enter else "segment_exited"
    change = {"id": f"se-{n}", "event": event, "slug": "high_value_users", "enter": enter}
    return {
        "id": f"l-{n}",
        "data": {"_uid": f"uid-{email}", "email": email, "segment_events": [change]},
    }


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path) as running:
        running.write_rule("vip.yaml", VIP)
        running.start_slack()
        running.start_web()
        yield running


@pytest.mark.timeout(60)
def test_two_profiles_entering_one_segment_wait_apart_and_both_run(bridge: Bridge) -> None:
    bridge.start_worker()
    assert bridge.post(entered(1, "dev3@example.com"), source="lytics").status_code == 202
    assert bridge.post(entered(2, "eva4@example.com"), source="lytics").status_code == 202
    for event_id in ("se-1", "se-2"):
        traced(bridge, event_id, "its wait", status="waiting")
    jobs = check_jobs(bridge)
    assert len(jobs) == 2
    # The Lytics poller's snapshot of the segment is about the segment, not the profiles:
    # the checks must not lay it over a profile's event.
    asyncio.run(segment_snapshot(bridge, {"id": "high_value_users", "email": "segment@x.example"}))
    for job in jobs:
        bridge.redis.zadd(bridge.settings.queue_name, {job: 0}, xx=True)
    got = wait_for(
        lambda: len(bridge.slack.received("#sales")) == 2 and bridge.slack.received("#sales")
    )
    assert sorted(m["text"] for m in got) == [
        "dev3@example.com still high value",
        "eva4@example.com still high value",
    ]
    assert traced(bridge, "se-1", "the check", status="holds")["current"] == {
        "from": "event",
        "event": "se-1",
    }


async def segment_snapshot(bridge: Bridge, entry: dict[str, Any]) -> None:
    client = aioredis.from_url(bridge.env["REDIS_URL"])
    try:
        snapshot = Snapshot(client, bridge.settings.key_prefix, "lytics")
        commit = Commit()
        commit.put(snapshot.key("segments"), str(entry["id"]), entry)
        await snapshot.commit(commit)
    finally:
        await client.aclose()


def membership(hhmm: str, who: str, enter: bool = True) -> str:
    """One membership event of a rule test case, as a line of YAML (JSON)."""
    event = "segment_entered" if enter else "segment_exited"
    data = {"_uid": f"u-{who}", "email": f"{who}@example.com"}
    data["segment"] = {"slug": "high_value_users", "event": event}
    line = {"type": f"lytics.{event.replace('_', '.')}", "source": "lytics"}
    line |= {"subject": "high_value_users", "time": f"2026-12-01T{hhmm}:00Z", "data": data}
    return "      - " + json.dumps(line)


RULE_TEST = "\n".join(
    [
        "cases:",
        "  - name: two profiles enter; the first leaves within the hour, the second stays",
        "    events:",
        membership("09:00", "dev3"),
        membership("09:10", "eva4"),
        membership("09:20", "dev3", enter=False),
        "    expect:",
        "      actions:",
        '        - {uses: slack.post, with: {text: "eva4@example.com still high value"}}',
        "  - name: two profiles enter and stay",
        "    events:",
        membership("09:00", "dev3"),
        membership("09:10", "eva4"),
        "    expect:",
        "      actions:",
        '        - {uses: slack.post, with: {text: "dev3@example.com still high value"}}',
        '        - {uses: slack.post, with: {text: "eva4@example.com still high value"}}',
        "",
    ]
)


def test_rule_tests_wait_per_profile_in_a_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "rules" / "vip.yaml").write_text(VIP)
    (tmp_path / "rules" / "vip.test.yaml").write_text(RULE_TEST)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BRIDGE_RULES_DIR", raising=False)
    monkeypatch.delenv("BRIDGE_TEMPLATES_DIR", raising=False)
    code = main(["test"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "2 passed" in out + err


# -- a pending wait whose rule changed, or with no valid rule set -------------------------

NO_WAIT = ORDER_RULE.replace("for: 1h\n", "")


@pytest.fixture
def shop(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path) as running:
        running.write_rule("order.yaml", ORDER_RULE)
        running.start_slack()
        running.start_web()
        yield running


def loads_seen(bridge: Bridge) -> int:
    return bridge.worker_logs().count("loaded 1 rules from")


@pytest.mark.timeout(60)
def test_a_wait_whose_rule_lost_for_by_a_reload_is_dropped_with_a_trace_entry(
    shop: Bridge,
) -> None:
    shop.start_worker()
    assert shop.post([order(1, "pending")], source="shop").status_code == 202
    traced(shop, "o-1", "the wait", status="waiting")
    seen = loads_seen(shop)
    shop.write_rule("order.yaml", NO_WAIT)
    wait_for(lambda: loads_seen(shop) > seen, what="the reload")
    # order-1 ships; with no rule waiting any more, no event cancels the wait now
    assert shop.post([order(2, "shipped")], source="shop").status_code == 202
    wait_for(lambda: shop.trace_has("o-2", "evaluated"), what="o-2 evaluated")
    check_now(shop)
    end = traced(shop, "o-1", "the check", status="not_run")
    assert end["why"] == "rule order-still-pending no longer waits (reloaded)"
    assert "rule order-still-pending no longer waits (reloaded): not run" in printed(shop, "o-1")
    wait_for(lambda: shop.queued() == 0, what="an empty queue")
    assert shop.slack.received("#ops") == []
    assert check_jobs(shop) == []


@pytest.mark.timeout(60)
def test_a_check_that_finds_no_valid_rule_set_ends_traced_at_its_last_try(shop: Bridge) -> None:
    first = shop.start_worker()
    assert shop.post([order(1, "pending")], source="shop").status_code == 202
    traced(shop, "o-1", "the wait", status="waiting")
    first.send_signal(signal.SIGTERM)
    first.wait(30)
    shop.write_rule("order.yaml", ORDER_RULE.replace("eq: pending", "equals: pending"))
    shop.start_worker()  # starts with an invalid rule set: no rules at all
    [job] = check_jobs(shop)
    # As if it had looked for a valid rule set every 30 s for NO_RULES_TRIES - 1 tries.
    shop.redis.set(f"arq:retry:{job}", NO_RULES_TRIES - 1, ex=3600)
    check_now(shop)
    end = traced(shop, "o-1", "the check's end", status="not_run")
    assert end["why"] == (
        "no valid rule set was loaded for 500 tries (about 4 h); "
        "fix the rules, then run it with `bridge replay o-1`"
    )
    wait_for(lambda: shop.queued() == 0, what="an empty queue")
    assert shop.slack.received("#ops") == []
    assert "giving up" not in shop.worker_logs()


SCHEDULED = """
id: sched-wait
on: {schedule: "*/5 * * * *"}
for: 1h
actions:
  - uses: slack.post
    with: {channel: "#x", text: "tick {{ data.tick }}"}
"""


def test_bridge_validate_refuses_for_on_a_scheduled_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "rules" / "sched.yaml").write_text(SCHEDULED)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BRIDGE_RULES_DIR", raising=False)
    monkeypatch.delenv("BRIDGE_TEMPLATES_DIR", raising=False)
    assert main(["validate"]) == 1
    out, err = capsys.readouterr()
    shown = [line for line in (out + err).splitlines() if line.startswith("rules/")]
    assert shown == [
        "rules/sched.yaml:4:6: 'for' in rule 'sched-wait': for: waits re-check an object, but "
        "a scheduled rule's ticks are not one; remove for:, or schedule the rule later and "
        "check the state then (a look-up step, then if:)"
    ]
