"""End to end on real parts: signed webhook → Redis → arq worker process → rule → Slack sandbox."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import SECRET, Bridge, running_bridge, wait_for

RULE = """
id: proof-approved-to-slack
description: Tell #creative when a proof is approved
on: lytho.proof.status_changed
when:
  - {path: data.status, eq: approved}
actions:
  - id: notify
    uses: slack.post
    with:
      channel: "#creative"
      text: "Proof {{ data.name }} was approved by {{ data.by }}"
"""


def proof(event_id: str, status: str = "approved") -> dict[str, object]:
    return {
        "id": event_id,
        "type": "lytho.proof.status_changed",
        "data": {"status": status, "name": "Spring hero banner", "by": "Ana"},
    }


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path) as b:
        b.write_rule("proof.yaml", RULE)
        b.start_slack()
        b.start_web()
        yield b


def test_matching_event_posts_the_rendered_message(bridge: Bridge) -> None:
    bridge.start_worker()
    assert bridge.post(proof("p-1")).status_code == 202
    messages = wait_for(lambda: bridge.slack.received("#creative"), what="a Slack message")
    assert [m["text"] for m in messages] == ["Proof Spring hero banner was approved by Ana"]
    run = wait_for(lambda: bridge.trace_has("p-1", "run", rule="proof-approved-to-slack"))
    assert run["status"] == "succeeded"
    step = bridge.trace_has("p-1", "step", step="notify", status="succeeded")
    assert step is not None and step["result"]["channel"] == messages[0]["channel"]
    ready = wait_for(lambda: (r := httpx.get(f"{bridge.web_url}/readyz")).status_code == 200 and r)
    assert ready.json()["checks"] == {"redis": "ok", "worker": "ok", "rules": "ok"}


def test_non_matching_event_posts_nothing_and_says_why(bridge: Bridge) -> None:
    bridge.start_worker()
    assert bridge.post(proof("p-2", status="rejected")).status_code == 202
    evaluated = wait_for(lambda: bridge.trace_has("p-2", "evaluated"), what="the evaluation")
    assert evaluated["matched"] == []
    [considered] = evaluated["rules"]
    assert considered["rule"] == "proof-approved-to-slack"
    assert considered["matched"] is False
    assert bridge.slack.received() == []
    # The trace is written while handle_event runs; its job leaves the queue as it ends,
    # and no rule run follows it.
    wait_for(lambda: bridge.queued() == 0, what="the handle_event job to finish")
    assert bridge.slack.received() == []


def test_the_same_webhook_twice_posts_once(bridge: Bridge) -> None:
    bridge.start_worker()
    first = bridge.post(proof("p-3"), msg_id="msg_same")
    second = bridge.post(proof("p-3"), msg_id="msg_same")
    assert (first.status_code, second.status_code) == (202, 200)
    wait_for(lambda: bridge.trace_has("p-3", "run", status="succeeded"))
    assert len(bridge.slack.received()) == 1
    assert len([e for e in bridge.trace("p-3") if e["kind"] == "evaluated"]) == 1


def test_slack_429_once_still_posts_exactly_once(bridge: Bridge) -> None:
    httpx.post(
        f"{bridge.slack_url}/_sandbox/scenario", json={"kind": "rate_limit", "retry_after": 1}
    )
    bridge.start_worker()
    assert bridge.post(proof("p-4")).status_code == 202
    wait_for(lambda: bridge.trace_has("p-4", "run", status="succeeded"), what="the run")
    assert len(bridge.slack.received()) == 1
    limited = bridge.trace_has("p-4", "step", status="rate_limited")
    assert limited is not None and limited["retry_after"] == 1.0
    # The 429 spent no try: the attempt that succeeded is still attempt 1.
    assert bridge.trace_has("p-4", "step", status="succeeded", attempt=1) is not None


def test_channel_not_found_goes_to_the_dead_letters(bridge: Bridge) -> None:
    bridge.write_rule("proof.yaml", RULE.replace("#creative", "#no-such-channel"))
    bridge.start_worker()
    assert bridge.post(proof("p-5")).status_code == 202
    [letter] = wait_for(bridge.dead_letters, what="a dead letter")
    assert letter["event_id"] == "p-5"
    assert letter["rule_id"] == "proof-approved-to-slack"
    assert letter["step"] == "notify"
    assert letter["error"] == (
        "Slack chat.postMessage → channel_not_found; check the channel name, and that the bot "
        "is in the channel"
    )
    # A permanent error is not retried: one request reached Slack.
    assert len([r for r in bridge.slack.requests if r["path"] == "/api/chat.postMessage"]) == 1


TWO_STEPS = """
id: two-steps
on: lytho.proof.status_changed
actions:
  - id: first
    uses: slack.post
    with: {channel: "#creative", text: "first {{ event.id }}"}
  - id: second
    uses: slack.post
    with: {channel: "#alerts", text: "second {{ event.id }}"}
"""


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_worker_killed_mid_run_resumes_without_repeating_a_finished_step(bridge: Bridge) -> None:
    bridge.write_rule("proof.yaml", TWO_STEPS)
    # Slack hangs on the second step's first request, so the worker is killed inside it.
    httpx.post(
        f"{bridge.slack_url}/_sandbox/scenario",
        json={"kind": "hang", "channel": "#alerts", "seconds": 60},
    )
    step_env = {"BRIDGE_STEP_TIMEOUT": "1"}
    worker = bridge.start_worker(step_env)
    assert bridge.post(proof("p-6")).status_code == 202
    wait_for(lambda: bridge.slack.received("#creative"), what="the first step")
    wait_for(lambda: bridge.slack.hanging, what="the second step to be in flight")
    worker.send_signal(signal.SIGKILL)
    worker.wait(5)
    bridge.start_worker(step_env)
    second = wait_for(lambda: bridge.slack.received("#alerts"), timeout=45, what="the re-run")
    assert [m["text"] for m in second] == ["second p-6"]
    assert [m["text"] for m in bridge.slack.received("#creative")] == ["first p-6"]
    wait_for(lambda: bridge.trace_has("p-6", "run", status="succeeded"))


def test_secrets_never_reach_logs_or_error_bodies(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    wrong_token = "xoxb-wrong-token-4b1d7e"
    with running_bridge(redis_url, key_prefix, tmp_path, SLACK_BOT_TOKEN=wrong_token) as bridge:
        bridge.write_rule("proof.yaml", RULE)
        bridge.start_slack()
        bridge.start_web()
        bridge.start_worker()
        bad = bridge.post(
            proof("p-7"),
            headers={
                "content-type": "application/json",
                "webhook-id": "x",
                "webhook-timestamp": "1",
                "webhook-signature": "v1,AAAA",
            },
        )
        assert bad.status_code == 401
        assert bridge.post(proof("p-8")).status_code == 202
        [letter] = wait_for(bridge.dead_letters, what="the invalid_auth dead letter")
        assert letter["error"] == "Slack chat.postMessage → invalid_auth; check SLACK_BOT_TOKEN"
        # The trace entry and the log line are written after the dead letter: wait for them.
        wait_for(
            lambda: bridge.trace_has("p-8", "run", status="dead_lettered"),
            what="the run's dead_lettered trace entry",
        )
        wait_for(lambda: "invalid_auth" in bridge.worker_logs(), what="the failure's log line")
        everything = bad.text + bridge.worker_logs() + str(bridge.trace("p-8")) + str(letter)
        for secret in (wrong_token, SECRET, SECRET.removeprefix("whsec_")):
            assert secret not in everything


@pytest.mark.slow
def test_sigterm_lets_a_running_job_finish_then_exits(bridge: Bridge) -> None:
    httpx.post(f"{bridge.slack_url}/_sandbox/scenario", json={"kind": "delay", "seconds": 1.5})
    worker = bridge.start_worker()
    assert bridge.post(proof("p-9")).status_code == 202
    wait_for(lambda: bridge.trace_has("p-9", "evaluated"), what="the evaluation")
    wait_for(lambda: not bridge.slack.scenarios, what="the slow Slack call to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    assert [m["text"] for m in bridge.slack.received()] == [
        "Proof Spring hero banner was approved by Ana"
    ]
    assert bridge.trace_has("p-9", "run", status="succeeded") is not None
    assert "worker stopping: waiting up to 20 s for the running jobs (1)" in bridge.worker_logs()


def test_event_data_cannot_mention_the_channel(bridge: Bridge) -> None:
    bridge.start_worker()
    event = proof("p-10")
    event["data"] = {"status": "approved", "name": "<!channel> look", "by": "Eve & co"}
    assert bridge.post(event).status_code == 202
    [message] = wait_for(lambda: bridge.slack.received("#creative"), what="the message")
    assert message["text"] == "Proof &lt;!channel&gt; look was approved by Eve &amp; co"


def test_a_broken_rule_change_keeps_the_last_good_set(bridge: Bridge) -> None:
    worker = bridge.start_worker()
    wait_for(lambda: "loaded 1 rules" in bridge.worker_logs(), what="the worker's first load")
    bridge.write_rule("proof.yaml", RULE.replace("eq: approved", "equals: approved"))
    wait_for(lambda: "is invalid" in bridge.worker_logs(), what="the worker to see the change")
    ready = wait_for(
        lambda: (
            (r := httpx.get(f"{bridge.web_url}/readyz")).json()["checks"]["rules"] == "stale" and r
        ),
        what="/readyz to report the stale rule set",
    )
    # Degraded, still routed to: a status and a count, no rule error text or path.
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "degraded",
        "checks": {"redis": "ok", "worker": "ok", "rules": "stale"},
        "rule_problems": 1,
    }
    assert str(bridge.rules_dir) not in ready.text and "equals" not in ready.text
    # Events still run on the last good set.
    assert bridge.post(proof("p-11")).status_code == 202
    messages = wait_for(lambda: bridge.slack.received("#creative"), what="the message")
    assert [m["text"] for m in messages] == ["Proof Spring hero banner was approved by Ana"]
    assert worker.poll() is None
