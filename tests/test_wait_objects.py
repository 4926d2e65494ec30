"""`for:` waits: what their object is (a Lytics profile in a segment, not the segment),
and what happens to a pending wait when its rule changes or the rule set is invalid."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.cli.main import main
from tests.helpers import Bridge, running_bridge, wait_for
from tests.test_rule_for_waits import check_jobs, traced

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
    for job in jobs:
        bridge.redis.zadd(bridge.settings.queue_name, {job: 0}, xx=True)
    got = wait_for(
        lambda: len(bridge.slack.received("#sales")) == 2 and bridge.slack.received("#sales")
    )
    assert sorted(m["text"] for m in got) == [
        "dev3@example.com still high value",
        "eva4@example.com still high value",
    ]


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
