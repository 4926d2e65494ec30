"""/readyz over HTTP: ready, degraded on a stale rule set, 503 without one; short words only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.cli.redis_server import EmbeddedRedis
from tests.helpers import Bridge, running_bridge, wait_for

ADMIN_TOKEN = "readyz-admin-token-5f0c2e9a41"
RULE = """
id: proof-approved-to-slack
on: lytho.proof.status_changed
when:
  - {path: data.status, eq: approved}
actions:
  - id: notify
    uses: slack.post
    with: {channel: "#creative", text: "Proof {{ data.name }} was approved"}
"""
# Invalid, with a value that its error message repeats.
BROKEN = RULE.replace("eq: approved", "equals: approved-by-the-secret-board")


def readyz(bridge: Bridge) -> httpx.Response:
    return httpx.get(f"{bridge.web_url}/readyz", timeout=10)


def rule_set(bridge: Bridge) -> dict[str, Any]:
    response = httpx.get(
        f"{bridge.web_url}/api/rules",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 200
    found: dict[str, Any] = response.json()["rule_set"]
    return found


def assert_tells_no_detail(bridge: Bridge, response: httpx.Response) -> None:
    """No rule error text, file name or path, and no value from a rule file."""
    problems = rule_set(bridge)["problems"]
    assert problems, "the admin API shows the problems"
    for secretish in (
        *problems,
        "approved-by-the-secret-board",
        "equals",
        "proof.yaml",
        str(bridge.rules_dir),
        str(bridge.tmp),
    ):
        assert secretish not in response.text


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path, BRIDGE_ADMIN_TOKEN=ADMIN_TOKEN) as b:
        b.start_slack()
        yield b


def test_a_stale_rule_set_is_degraded_200_and_events_still_run(bridge: Bridge) -> None:
    bridge.write_rule("proof.yaml", RULE)
    bridge.start_web()
    bridge.start_worker()
    ready = wait_for(lambda: (r := readyz(bridge)).status_code == 200 and r, what="ready")
    assert ready.json() == {
        "status": "ready",
        "checks": {"redis": "ok", "worker": "ok", "rules": "ok"},
        "rule_problems": 0,
    }
    bridge.write_rule("proof.yaml", BROKEN)
    stale = wait_for(
        lambda: (r := readyz(bridge)).json()["checks"]["rules"] == "stale" and r,
        what="/readyz to see the broken change",
    )
    assert stale.status_code == 200
    assert stale.json() == {
        "status": "degraded",
        "checks": {"redis": "ok", "worker": "ok", "rules": "stale"},
        "rule_problems": 1,
    }
    assert_tells_no_detail(bridge, stale)
    # The details are behind the admin token, with the file and line.
    state = rule_set(bridge)
    assert state["state"] == "stale"
    [problem] = state["problems"]
    assert problem.startswith(f"{bridge.rules_dir / 'proof.yaml'}:")
    assert "unknown operator 'equals'" in problem
    # Degraded, not down: an event is accepted and runs on the last good set.
    data = {"status": "approved", "name": "Hero"}
    event = {"id": "r-1", "type": "lytho.proof.status_changed", "data": data}
    assert bridge.post(event).status_code == 202
    [message] = wait_for(lambda: bridge.slack.received("#creative"), what="the message")
    assert message["text"] == "Proof Hero was approved"
    # Fixed: ready again.
    bridge.write_rule("proof.yaml", RULE.replace("was approved", "is approved"))
    wait_for(lambda: readyz(bridge).json()["status"] == "ready", what="ready again")


def test_no_valid_rule_set_is_not_ready_503(bridge: Bridge) -> None:
    bridge.write_rule("proof.yaml", BROKEN)
    bridge.write_rule("other.yaml", "id: [not, a, name]\non: 42\n")
    bridge.start_web()
    bridge.start_worker()
    # Redis and the worker are fine: the rules alone make it not ready.
    answer = wait_for(
        lambda: (r := readyz(bridge)).json()["checks"]["worker"] == "ok" and r,
        what="the worker's heartbeat",
    )
    assert answer.status_code == 503
    body = answer.json()
    assert body == {
        "status": "not ready",
        "checks": {"redis": "ok", "worker": "ok", "rules": "invalid"},
        "rule_problems": len(rule_set(bridge)["problems"]),
    }
    assert body["rule_problems"] >= 2
    assert rule_set(bridge)["state"] == "invalid"
    assert_tells_no_detail(bridge, answer)


def test_redis_unreachable_is_503_in_short_words(
    own_redis: EmbeddedRedis, key_prefix: str, tmp_path: Path
) -> None:
    with running_bridge(own_redis.url, key_prefix, tmp_path) as bridge:
        bridge.write_rule("proof.yaml", RULE)
        bridge.start_web()
        assert readyz(bridge).json()["checks"]["redis"] == "ok"
        own_redis.stop()
        answer = readyz(bridge)
        assert answer.status_code == 503
        assert answer.json() == {
            "status": "not ready",
            "checks": {"redis": "unreachable", "worker": "unknown", "rules": "ok"},
            "rule_problems": 0,
        }
        assert answer.headers["cache-control"] == "no-store"
