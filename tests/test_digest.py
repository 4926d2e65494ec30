"""Digests and throttle roll-ups: the rule language, rule tests, and runs on real parts.

A digest's window is a deferred job in the queue: its due time is the clock. Tests that do
not wait for a window move its close job to now (`close_now`), as the clock would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.cli.main import main
from tests.helpers import Bridge, running_bridge, wait_for

ADMIN_TOKEN = "admin-token-for-digest-tests"
# One job at a time: the matches of one webhook join in the order they were sent.
ONE_AT_A_TIME = {"BRIDGE_WORKER_MAX_JOBS": "1"}

DIGEST_RULE = """
id: failed-orders-digest
on: shop.order.failed
digest: {key: "{{ data.shop }}", window: 1h, max: 50}
actions:
  - id: notify
    uses: slack.post
    with:
      channel: "#ops"
      text: >-
        {{ digest.count }} orders failed in {{ digest.key }}:
        {{ digest.events | map(attribute='data.n') | join(',') }}
        (first {{ digest.first.id }}, last {{ digest.last.id }}, event {{ event.id }})
"""


def order(n: int, shop: str = "eu", type_: str = "shop.order.failed") -> dict[str, Any]:
    return {"id": f"o-{shop}-{n}", "type": type_, "data": {"n": n, "shop": shop}}


def joined(bridge: Bridge, event_id: str, rule_id: str = "failed-orders-digest") -> str | None:
    """The digest an event's match joined, as its trace says (None until it is traced)."""
    entry = bridge.trace_has(event_id, "evaluated")
    return entry.get("digests", {}).get(rule_id) if entry else None


def close_now(bridge: Bridge, digest_id: str) -> None:
    """The window's time is up: its close job becomes due now (the queue's clock)."""
    job_id = f"{bridge.settings.key_prefix}digest:close:{digest_id}"
    assert bridge.redis.zadd(bridge.settings.queue_name, {job_id: 0}, xx=True, ch=True) == 1


def digest_runs(bridge: Bridge, digest_id: str) -> list[dict[str, Any]]:
    return [e for e in bridge.trace(digest_id) if e["kind"] == "run"]


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path, BRIDGE_ADMIN_TOKEN=ADMIN_TOKEN) as running:
        running.start_slack()
        running.start_web()
        yield running


# --- the rule language ----------------------------------------------------------------


def test_bridge_validate_refuses_bad_digests_with_file_line_and_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = Path(__file__).parent / "rules" / "invalid"
    (tmp_path / "rules").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "rules" / "bad_digest.yaml").write_text((corpus / "bad_digest.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BRIDGE_RULES_DIR", raising=False)
    monkeypatch.delenv("BRIDGE_TEMPLATES_DIR", raising=False)
    assert main(["validate"]) == 1
    out, err = capsys.readouterr()
    printed = [line for line in (out + err).splitlines() if line.startswith("rules/")]
    assert printed == [
        "rules/bad_digest.yaml:4:13: digest.window is required in rule 'digest-typo'; "
        "expected seconds or a duration such as 30s, 5m, 24h, 7d",
        "rules/bad_digest.yaml:4:19: invalid template in digest.key in rule 'digest-typo': "
        "expected name or number",
        "rules/bad_digest.yaml:4:31: unknown key 'windw' in digest in rule 'digest-typo'; "
        "did you mean 'window'? expected one of key, window, max",
        "rules/bad_digest.yaml:4:47: digest.max in rule 'digest-typo' must be an integer "
        "from 1 to 1000, not 0",
        "rules/bad_digest.yaml:7:22: digest.window in rule 'digest-too-long' is '2d'; "
        "expected at most 24h (a digest waits at most a day)",
        "rules/bad_digest.yaml:7:31: digest.max in rule 'digest-too-long' must be an integer "
        "from 1 to 1000, not 5000",
        "rules/bad_digest.yaml:10:13: digest and throttle.rollup in rule 'digest-and-rollup' "
        "both collect matches into one message; use one of them",
        "rules/bad_digest.yaml:14:13: 'digest' in rule 'digest-not-a-mapping' must be a "
        "mapping {key: …, window: …, max: …}",
    ]


DIGEST_TEST = """
cases:
  - name: three failures in two shops make two messages
    events:
      - {id: a, type: shop.order.failed, data: {n: 1, shop: eu}}
      - {id: b, type: shop.order.failed, data: {n: 2, shop: us}}
      - {id: c, type: shop.order.failed, data: {n: 3, shop: eu}}
    expect:
      matched: [failed-orders-digest]
      digests: {failed-orders-digest: [2, 1]}
      actions:
        - {uses: slack.post, with: {text: "2 orders failed in eu: 1,3 (first a, last c, event c)"}}
        - {uses: slack.post, with: {text: "1 orders failed in us: 2 (first b, last b, event b)"}}
  - name: an event after the window starts the next digest
    events:
      - {id: a, type: shop.order.failed, data: {n: 1, shop: eu}, time: "2026-01-01T00:00:00Z"}
      - {id: b, type: shop.order.failed, data: {n: 2, shop: eu}, time: "2026-01-01T01:00:01Z"}
    expect:
      digests: {failed-orders-digest: [1, 1]}
  - name: a wrong count fails
    events:
      - {id: a, type: shop.order.failed, data: {n: 1, shop: eu}}
    expect:
      digests: {failed-orders-digest: 2}
"""


def test_a_rule_test_asserts_a_digests_rendered_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rules" / "tests").mkdir(parents=True)
    (tmp_path / "templates").mkdir()
    (tmp_path / "rules" / "digest.yaml").write_text(DIGEST_RULE)
    (tmp_path / "rules" / "tests" / "digest.test.yaml").write_text(DIGEST_TEST)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BRIDGE_RULES_DIR", raising=False)
    monkeypatch.delenv("BRIDGE_TEMPLATES_DIR", raising=False)
    assert main(["test"]) == 1
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("ok    rules/tests/digest.test.yaml:3: three failures")
    assert lines[1].startswith("ok    rules/tests/digest.test.yaml:14: an event after the window")
    assert lines[2] == "FAIL  rules/tests/digest.test.yaml:20: a wrong count fails"
    assert "digests of 'failed-orders-digest': expected [2], got [1]" in out
    assert lines[-1] == "2 passed, 1 failed"


def test_a_key_that_cannot_render_fails_the_case_but_joins_the_rules_window_as_in_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The worker puts such a match in the rule's own window (key: the rule's id) and runs
    # the digest: the rule test does too, so its digests and message are the worker's,
    # and it still fails on the key.
    (tmp_path / "rules" / "tests").mkdir(parents=True)
    (tmp_path / "templates").mkdir()
    (tmp_path / "rules" / "digest.yaml").write_text(DIGEST_RULE)
    (tmp_path / "rules" / "tests" / "digest.test.yaml").write_text(
        """
cases:
  - name: two failures without a shop
    events:
      - {id: a, type: shop.order.failed, data: {n: 1}}
      - {id: b, type: shop.order.failed, data: {n: 2}}
    expect:
      digests: {failed-orders-digest: [2]}
      actions:
        - uses: slack.post
          with: {text: "2 orders failed in failed-orders-digest: 1,2 (first a, last b, event b)"}
"""
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BRIDGE_RULES_DIR", raising=False)
    monkeypatch.delenv("BRIDGE_TEMPLATES_DIR", raising=False)
    assert main(["test"]) == 1
    out, _ = capsys.readouterr()
    assert (
        out.splitlines()[0] == "FAIL  rules/tests/digest.test.yaml:3: two failures without a shop"
    )
    assert out.count("the dedupe/throttle/digest key of rule 'failed-orders-digest' renders") == 2
    assert "'data' has no attribute 'shop'" in out
    assert "digests of" not in out and "expect.actions" not in out
    assert out.splitlines()[-1] == "0 passed, 1 failed"


# --- on real parts: one worker ----------------------------------------------------------


def test_max_closes_the_window_at_once_and_the_next_match_opens_another(bridge: Bridge) -> None:
    bridge.write_rule("digest.yaml", DIGEST_RULE.replace("max: 50", "max: 3"))
    bridge.start_worker(ONE_AT_A_TIME)
    assert bridge.post([order(n) for n in (1, 2, 3, 4)], source="shop").status_code == 202
    messages = wait_for(lambda: bridge.slack.received("#ops"), what="the digest's message")
    assert [m["text"] for m in messages] == [
        "3 orders failed in eu: 1,2,3 (first o-eu-1, last o-eu-3, event o-eu-3)"
    ]
    first = joined(bridge, "o-eu-1")
    assert first is not None and first == joined(bridge, "o-eu-2") == joined(bridge, "o-eu-3")
    fourth = wait_for(lambda: joined(bridge, "o-eu-4"), what="the fourth match to join")
    assert fourth != first
    [digest] = [e for e in bridge.trace(first) if e["kind"] == "digest"]
    assert (digest["count"], digest["members"]) == (3, ["o-eu-1", "o-eu-2", "o-eu-3"])
    # The run's trace entry is written after its message was posted: wait for it.
    runs = wait_for(lambda: digest_runs(bridge, first), what="the digest run's outcome")
    assert [r["status"] for r in runs] == ["succeeded"]
    # The fourth waits in its own window until that closes.
    close_now(bridge, fourth)
    wait_for(lambda: len(bridge.slack.received("#ops")) == 2, what="the second digest")
    assert bridge.slack.received("#ops")[1]["text"].startswith("1 orders failed in eu: 4 ")


def test_two_keys_make_two_digests(bridge: Bridge) -> None:
    bridge.write_rule("digest.yaml", DIGEST_RULE)
    bridge.start_worker(ONE_AT_A_TIME)
    events = [order(1, "eu"), order(1, "us"), order(2, "eu"), order(2, "us"), order(3, "eu")]
    assert bridge.post(events, source="shop").status_code == 202
    ids = [wait_for(lambda e=e: joined(bridge, e["id"]), what="a join") for e in events]
    eu, us = ids[0], ids[1]
    assert eu != us and ids == [eu, us, eu, us, eu]
    close_now(bridge, eu)
    close_now(bridge, us)
    wait_for(lambda: len(bridge.slack.received("#ops")) == 2, what="two digests")
    texts = sorted(m["text"] for m in bridge.slack.received("#ops"))
    assert texts == [
        "2 orders failed in us: 1,2 (first o-us-1, last o-us-2, event o-us-2)",
        "3 orders failed in eu: 1,2,3 (first o-eu-1, last o-eu-3, event o-eu-3)",
    ]


def test_a_window_closes_on_its_own_when_its_time_is_up(bridge: Bridge) -> None:
    bridge.write_rule("digest.yaml", DIGEST_RULE.replace("window: 1h", "window: 200ms"))
    bridge.start_worker(ONE_AT_A_TIME)
    assert bridge.post([order(7)], source="shop").status_code == 202
    messages = wait_for(lambda: bridge.slack.received("#ops"), what="the digest's message")
    assert messages[0]["text"].startswith("1 orders failed in eu: 7 ")


def test_a_failed_digest_run_is_retried_with_its_own_members(bridge: Bridge) -> None:
    bridge.write_rule("digest.yaml", DIGEST_RULE.replace('"#ops"', '"#nowhere"'))
    bridge.start_worker(ONE_AT_A_TIME)
    assert bridge.post([order(1), order(2)], source="shop").status_code == 202
    first = wait_for(lambda: joined(bridge, "o-eu-2"), what="the second join")
    close_now(bridge, first)
    [letter] = wait_for(bridge.dead_letters, what="the digest run's dead letter")
    assert letter["event_id"] == first and "channel_not_found" in letter["error"]
    # The run's trace entry is written after its dead letter: wait for it.
    [run] = wait_for(lambda: digest_runs(bridge, first), what="the digest run's outcome")
    assert run["status"] == "dead_lettered"
    # Later matches open the next window; the retry keeps the members it failed with.
    assert bridge.post([order(3)], source="shop").status_code == 202
    wait_for(lambda: joined(bridge, "o-eu-3"), what="the third join")
    assert joined(bridge, "o-eu-3") != first
    bridge.slack.strict = False
    bridge.slack.open_channel("#nowhere")  # the channel exists now; the run can post
    retried = httpx.post(
        f"{bridge.web_url}/api/dead-letters/{letter['id']}/retry",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert retried.status_code in (200, 202), retried.text
    messages = wait_for(lambda: bridge.slack.received("#nowhere"), what="the retried digest")
    assert [m["text"] for m in messages] == [
        "2 orders failed in eu: 1,2 (first o-eu-1, last o-eu-2, event o-eu-2)"
    ]
    assert bridge.dead_letters() == []


# --- throttle roll-up -------------------------------------------------------------------

ROLLUP_RULE = """
id: paid-orders
on: shop.order.paid
throttle: {key: "#ops", limit: 1, per: 1h, rollup: true}
actions:
  - uses: slack.post
    with:
      channel: "#ops"
      text: >-
        Order {{ data.n }} paid{% if throttle.suppressed %} and {{ throttle.suppressed }}
        more ({{ throttle.events | map(attribute='data.n') | join(',') }}){% endif %}
"""


def test_throttle_rollup_counts_what_it_held_back_into_the_next_message(
    bridge: Bridge,
) -> None:
    bridge.write_rule("rollup.yaml", ROLLUP_RULE)
    bridge.start_worker(ONE_AT_A_TIME)
    paid = [order(n, type_="shop.order.paid") for n in (1, 2, 3, 4)]
    assert bridge.post(paid[:1], source="shop").status_code == 202
    wait_for(lambda: bridge.slack.received("#ops"), what="the first message")
    assert bridge.post(paid[1:], source="shop").status_code == 202
    for event in paid[1:]:
        entry = wait_for(lambda e=event: bridge.trace_has(e["id"], "evaluated"))
        assert entry["suppressed"]["paid-orders"]["by"] == "throttle"
    # The window is over: the next run passes and says what was held back.
    bridge.redis.delete(*bridge.redis.keys(f"{bridge.settings.key_prefix}throttle:paid-orders:*"))
    assert bridge.post([order(5, type_="shop.order.paid")], source="shop").status_code == 202
    wait_for(lambda: len(bridge.slack.received("#ops")) == 2, what="the next message")
    assert [m["text"] for m in bridge.slack.received("#ops")] == [
        "Order 1 paid",
        "Order 5 paid and 3 more (2,3,4)",
    ]
    stored = bridge.redis.lrange(
        f"{bridge.settings.key_prefix}rollup:run:o-eu-5:paid-orders", 0, -1
    )
    assert stored[0] == b"3" and [json.loads(e)["id"] for e in stored[1:]] == [
        "o-eu-2",
        "o-eu-3",
        "o-eu-4",
    ]
