"""Operating the bridge from the command line: trace, replay, dead letters (list, retry, drop)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.cli.main import main
from tests.helpers import Bridge, running_bridge, wait_for

RULE = """
id: proof-approved-to-slack
on: lytho.proof.status_changed
when:
  - {path: data.status, eq: approved}
actions:
  - id: notify
    uses: slack.post
    with: {channel: "#CHANNEL", text: "Proof {{ data.name }} approved"}
"""

EVENT = {
    "id": "op-1",
    "type": "lytho.proof.status_changed",
    "data": {"status": "approved", "name": "Banner"},
}


@pytest.fixture
def bridge(
    redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path) as b:
        b.write_rule("proof.yaml", RULE.replace("CHANNEL", "no-such-channel"))
        b.start_slack()
        b.start_web()
        for name, value in b.env.items():
            monkeypatch.setenv(name, value)
        yield b


def bridge_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_dead_letter_fixed_and_retried_from_the_command_line(
    bridge: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = bridge.start_worker()
    assert bridge.post(EVENT).status_code == 202
    [letter] = wait_for(bridge.dead_letters, what="the dead letter")

    code, out, _ = bridge_cli(capsys, "dlq", "list")
    assert code == 0
    header, separator, row = out.splitlines()
    assert set(separator.replace(" ", "")) == {"-"}
    assert header.split() == ["ID", "FAILED", "(UTC)", "EVENT", "RULE", "STEP", "TRIES", "ERROR"]
    assert row.startswith(letter["id"])
    assert "op-1" in row and "notify (slack.post)" in row and "channel_not_found" in row

    # The rule is fixed in git and deployed; the worker picks the change up by itself.
    bridge.write_rule("proof.yaml", RULE.replace("CHANNEL", "creative"))
    wait_for(lambda: bridge.worker_logs().count("loaded 1 rules") >= 2, what="the reload")

    code, out, _ = bridge_cli(capsys, "dlq", "retry", letter["id"])
    assert (code, out) == (
        0,
        "retrying proof-approved-to-slack for event op-1 from step notify\n",
    )
    messages = wait_for(lambda: bridge.slack.received("#creative"), what="the retried message")
    assert [m["text"] for m in messages] == ["Proof Banner approved"]
    assert bridge.dead_letters() == []
    assert worker.poll() is None


def test_trace_shows_conditions_and_steps(
    bridge: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    bridge.write_rule("proof.yaml", RULE.replace("CHANNEL", "creative"))
    bridge.start_worker()
    assert bridge.post(EVENT).status_code == 202
    assert bridge.post(EVENT | {"id": "op-2", "data": {"status": "draft"}}).status_code == 202
    wait_for(lambda: bridge.trace_has("op-1", "run", status="succeeded"), what="the run")
    wait_for(lambda: bridge.trace_has("op-2", "evaluated"), what="the second evaluation")

    code, out, _ = bridge_cli(capsys, "trace", "op-1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("event op-1  lytho.proof.status_changed  from demo  at ")
    assert any(line.endswith("evaluated: 1 of 1 candidate rules matched") for line in lines)
    assert "    ✓ rule proof-approved-to-slack" in lines
    assert any(re.search(r"✓ data\.status eq 'approved' \(actual 'approved'\)", x) for x in lines)
    assert any(
        re.search(r"step proof-approved-to-slack/notify slack.post  try 1  succeeded", line)
        for line in lines
    )
    assert lines[-1].endswith("run proof-approved-to-slack  succeeded")

    code, out, _ = bridge_cli(capsys, "trace", "op-2")
    assert "    ✗ rule proof-approved-to-slack" in out.splitlines()
    assert re.search(r"✗ data\.status eq 'approved' \(actual 'draft'", out)

    code, _, err = bridge_cli(capsys, "trace", "nope")
    assert code == 1
    assert err == "no event 'nope' is stored (unknown, or older than BRIDGE_TRACE_TTL)\n"


def test_replay_runs_the_rule_again_as_a_new_run(
    bridge: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    bridge.write_rule("proof.yaml", RULE.replace("CHANNEL", "creative"))
    bridge.start_worker()
    assert bridge.post(EVENT).status_code == 202
    wait_for(lambda: bridge.slack.received("#creative"), what="the first message")
    code, out, _ = bridge_cli(capsys, "replay", "op-1")
    assert code == 0
    run = re.match(r"event op-1 queued again as run (replay-\d+); see: bridge trace op-1", out)
    assert run is not None
    wait_for(lambda: len(bridge.slack.received("#creative")) == 2, what="the replayed message")
    # The trace entry is written after the message is posted: wait for it too.
    wait_for(lambda: bridge.trace_has("op-1", "run", status="succeeded", run=run.group(1)))


def test_drop_removes_a_dead_letter_and_unknown_ids_fail(
    bridge: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    bridge.start_worker()
    assert bridge.post(EVENT).status_code == 202
    [letter] = wait_for(bridge.dead_letters, what="the dead letter")
    assert bridge_cli(capsys, "dlq", "drop", letter["id"])[:2] == (0, f"dropped {letter['id']}\n")
    assert bridge.dead_letters() == []
    assert bridge_cli(capsys, "dlq", "list")[1] == "no dead letters\n"
    code, _, err = bridge_cli(capsys, "dlq", "retry", letter["id"])
    assert (code, err) == (1, f"no dead letter {letter['id']!r}\n")
