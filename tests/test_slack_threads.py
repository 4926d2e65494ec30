"""slack.post's thread_key and message_key, end to end: signed webhook → Redis → worker
process → Slack sandbox over loopback. One thread per object, one living message per
object, a deleted parent or message replaced, concurrent first posts making one thread,
and a crash after Slack answered that does not post twice."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from bridge.actions.slack_keys import SlackKeys
from bridge.cli.main import main
from bridge.queue.keys import Keys
from tests.helpers import Bridge, running_bridge, wait_for

THREAD_RULE = """
id: proof-thread
on: lytho.proof.status_changed
actions:
  - id: notify
    uses: slack.post
    with:
      channel: "#creative"
      thread_key: "proof-{{ data.id }}"
      text: "Proof {{ data.name }}: {{ data.status }}"
      reply_broadcast: "{{ data.status == 'approved' }}"
  - id: link
    uses: slack.post
    with:
      channel: "#alerts"
      text: "{{ steps.notify.permalink }} started={{ steps.notify.started }}"
"""

LIVING_RULE = """
id: proof-living
on: lytho.proof.status_changed
actions:
  - id: status
    uses: slack.post
    with:
      channel: "#creative"
      message_key: "proof-status-{{ data.id }}"
      text: "Proof *{{ data.name }}* — {{ data.status }}"
"""


def proof(event_id: str, status: str, proof_id: int = 7) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "lytho.proof.status_changed",
        "data": {"id": proof_id, "name": "Spring hero", "status": status},
    }


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path) as b:
        b.start_slack()
        b.start_web()
        yield b


def calls(bridge: Bridge, method: str) -> list[dict[str, Any]]:
    return [r for r in list(bridge.slack.requests) if r["path"] == f"/api/{method}"]


def step_result(bridge: Bridge, event_id: str, step: str, timeout: float = 15) -> dict[str, Any]:
    entry = wait_for(
        lambda: bridge.trace_has(event_id, "step", step=step, status="succeeded"),
        timeout=timeout,
        what=f"step {step} of {event_id}",
    )
    assert entry is not None
    result: dict[str, Any] = entry["result"]
    return result


def send_and_wait(bridge: Bridge, event: dict[str, Any], step: str) -> dict[str, Any]:
    assert bridge.post(event).status_code == 202
    return step_result(bridge, event["id"], step)


def test_three_status_changes_make_one_thread_in_order(bridge: Bridge) -> None:
    bridge.write_rule("proof.yaml", THREAD_RULE)
    bridge.start_worker()
    first = send_and_wait(bridge, proof("t-1", "in_review"), "notify")
    second = send_and_wait(bridge, proof("t-2", "changes_requested"), "notify")
    third = send_and_wait(bridge, proof("t-3", "approved"), "notify")
    # Another proof has a thread of its own.
    other = send_and_wait(bridge, proof("t-4", "in_review", proof_id=8), "notify")
    # Each run's second step posts to #alerts (paced there, one a second after a burst).
    for event_id in ("t-1", "t-2", "t-3", "t-4"):
        step_result(bridge, event_id, "link")

    creative = bridge.slack.received("#creative")
    parent, reply_1, reply_2, other_parent = creative
    assert [m["text"] for m in creative] == [
        "Proof Spring hero: in_review",
        "Proof Spring hero: changes_requested",
        "Proof Spring hero: approved",
        "Proof Spring hero: in_review",
    ]
    assert "thread_ts" not in other_parent
    assert parent["thread_ts"] == parent["ts"] and parent["reply_count"] == 2
    assert reply_1["thread_ts"] == reply_2["thread_ts"] == parent["ts"]
    # Only the approval is also shown in the channel.
    assert "subtype" not in reply_1 and reply_2["subtype"] == "thread_broadcast"

    assert first["started"] is True and second["started"] is third["started"] is False
    assert first["ts"] == first["thread_ts"] == parent["ts"]
    assert (second["ts"], second["thread_ts"]) == (reply_1["ts"], parent["ts"])
    assert third["ts"] == reply_2["ts"] and other["ts"] == other_parent["ts"]
    channel = parent["channel"]
    assert first["permalink"] == (
        f"https://sandbox.slack.local/archives/{channel}/p{parent['ts'].replace('.', '')}"
    )
    assert second["permalink"].endswith(f"?thread_ts={parent['ts']}&cid={channel}")
    # Later steps read the results as steps.notify.*.
    # (Inserted into mrkdwn, `&` is escaped as Slack wants it.)
    links = [m["text"].replace("&amp;", "&") for m in bridge.slack.received("#alerts")]
    assert links[0] == f"{first['permalink']} started=True"
    assert links[1] == f"{second['permalink']} started=False"
    assert len(calls(bridge, "chat.postMessage")) == 8


def test_one_message_is_updated_three_times(bridge: Bridge) -> None:
    bridge.write_rule("proof.yaml", LIVING_RULE)
    bridge.start_worker()
    results = [
        send_and_wait(bridge, proof(f"m-{n}", status), "status")
        for n, status in enumerate(["in_review", "changes_requested", "in_review", "approved"])
    ]
    [message] = bridge.slack.received("#creative")
    assert message["text"] == "Proof *Spring hero* — approved"
    assert [v["text"] for v in message["history"]] == [
        "Proof *Spring hero* — in_review",
        "Proof *Spring hero* — changes_requested",
        "Proof *Spring hero* — in_review",
    ]
    assert message["edited"]["user"] == message["user"]
    assert len(calls(bridge, "chat.postMessage")) == 1
    updates = calls(bridge, "chat.update")
    assert [(u["status"], u["ts"]) for u in updates] == [(200, message["ts"])] * 3
    assert [r["updated"] for r in results] == [False, True, True, True]
    assert {(r["channel"], r["ts"], r["permalink"]) for r in results} == {
        (message["channel"], message["ts"], results[0]["permalink"])
    }
    # The permalink is asked once, then kept with the key.
    assert len(calls(bridge, "chat.getPermalink")) == 1


def test_a_deleted_parent_starts_a_new_thread(bridge: Bridge) -> None:
    bridge.write_rule("proof.yaml", THREAD_RULE)
    bridge.start_worker()
    first = send_and_wait(bridge, proof("d-1", "in_review"), "notify")
    deleted = httpx.delete(f"{bridge.slack_url}/_sandbox/messages/{first['channel']}/{first['ts']}")
    assert deleted.status_code == 200
    second = send_and_wait(bridge, proof("d-2", "changes_requested"), "notify")
    third = send_and_wait(bridge, proof("d-3", "approved"), "notify")

    assert second["started"] is True and second["ts"] != first["ts"]
    assert third["started"] is False and third["thread_ts"] == second["ts"]
    refused = [r for r in calls(bridge, "chat.postMessage") if r["error"]]
    assert [r["error"] for r in refused] == ["thread_not_found"]
    new_parent, reply = bridge.slack.received("#creative")
    assert new_parent["text"] == "Proof Spring hero: changes_requested"
    assert "thread_ts" not in {**new_parent, "thread_ts": None} or new_parent["reply_count"] == 1
    assert reply["thread_ts"] == new_parent["ts"]
    assert [m["text"] for m in bridge.slack.deleted] == ["Proof Spring hero: in_review"]


def test_a_deleted_living_message_is_posted_again(bridge: Bridge) -> None:
    bridge.write_rule("proof.yaml", LIVING_RULE)
    bridge.start_worker()
    first = send_and_wait(bridge, proof("l-1", "in_review"), "status")
    assert bridge.slack.delete(first["channel"], first["ts"])
    second = send_and_wait(bridge, proof("l-2", "approved"), "status")
    third = send_and_wait(bridge, proof("l-3", "in_review"), "status")
    assert second["updated"] is False and second["ts"] != first["ts"]
    assert third["updated"] is True and third["ts"] == second["ts"]
    [message] = bridge.slack.received("#creative")
    assert message["text"] == "Proof *Spring hero* — in_review"
    assert [u["error"] for u in calls(bridge, "chat.update")] == ["message_not_found", None]


def test_two_first_posts_at_once_make_one_thread(bridge: Bridge) -> None:
    bridge.write_rule("proof.yaml", THREAD_RULE)
    # The first post Slack receives takes a while: the other run meets the claim.
    httpx.post(
        f"{bridge.slack_url}/_sandbox/scenario",
        json={"kind": "delay", "channel": "#creative", "seconds": 1},
    )
    bridge.start_worker()
    bridge.start_worker()
    batch = [proof("c-1", "in_review"), proof("c-2", "changes_requested")]
    assert bridge.post(batch).status_code == 202
    results = [step_result(bridge, e, "notify") for e in ("c-1", "c-2")]
    parent, reply = bridge.slack.received("#creative")
    assert "thread_ts" not in {k: v for k, v in parent.items() if v != parent["ts"]}
    assert reply["thread_ts"] == parent["ts"] and parent["reply_count"] == 1
    assert sorted(r["started"] for r in results) == [False, True]
    assert {r["thread_ts"] for r in results} == {parent["ts"]}


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_worker_killed_after_slack_answered_does_not_post_twice(bridge: Bridge) -> None:
    bridge.write_rule("proof.yaml", THREAD_RULE)
    # The message is posted; asking its permalink hangs, so the worker is killed after
    # Slack answered the post and before the step's result is stored.
    httpx.post(
        f"{bridge.slack_url}/_sandbox/scenario",
        json={"kind": "hang", "method": "chat.getPermalink", "seconds": 60},
    )
    step_env = {"BRIDGE_STEP_TIMEOUT": "1"}
    worker = bridge.start_worker(step_env)
    assert bridge.post(proof("k-1", "in_review")).status_code == 202
    wait_for(lambda: bridge.slack.hanging, what="the permalink request in flight")
    assert len(bridge.slack.received("#creative")) == 1
    worker.send_signal(signal.SIGKILL)
    worker.wait(5)
    bridge.start_worker(step_env)
    # arq hands a killed worker's job to another after its timeout.
    result = step_result(bridge, "k-1", "notify", timeout=45)
    wait_for(lambda: bridge.trace_has("k-1", "run", status="succeeded"))
    [parent] = bridge.slack.received("#creative")
    assert (result["ts"], result["started"]) == (parent["ts"], True)
    assert result["permalink"].endswith(parent["ts"].replace(".", ""))
    assert len(calls(bridge, "chat.postMessage")) == 2  # the parent, and the #alerts link


def test_a_step_timed_out_after_slack_answered_returns_the_same_message(bridge: Bridge) -> None:
    bridge.write_rule("proof.yaml", LIVING_RULE)
    httpx.post(
        f"{bridge.slack_url}/_sandbox/scenario",
        json={"kind": "hang", "method": "chat.getPermalink", "seconds": 5},
    )
    bridge.start_worker({"BRIDGE_STEP_TIMEOUT": "1"})
    result = send_and_wait(bridge, proof("s-1", "in_review"), "status")
    failed = bridge.trace_has("s-1", "step", status="failed")
    assert failed is not None and failed["attempt"] == 1
    [message] = bridge.slack.received("#creative")
    assert (result["ts"], result["updated"]) == (message["ts"], False)
    assert len(calls(bridge, "chat.postMessage")) == 1
    assert calls(bridge, "chat.update") == []


BAD_KEYS = """
id: keyed
on: lytho.proof.status_changed
actions:
  - id: both
    uses: slack.post
    with: {channel: "#creative", text: x, thread_key: "p-{{ data.id }}", thread_ts: "1.2"}
  - id: two_keys
    uses: slack.post
    with: {channel: "#creative", text: x, thread_key: a, message_key: b}
  - id: early
    uses: slack.post
    with: {channel: "#creative", text: x, message_key: "{{ steps.late.ts }}"}
  - id: late
    uses: slack.post
    with:
      {channel: "#creative", text: x, thread_key: "{{ {'id': data.id} }}", reply_broadcast: "yes"}
"""


def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **files: str) -> None:
    for name, text in files.items():
        path = tmp_path / "rules" / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "templates").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRIDGE_RULES_DIR", "rules")
    monkeypatch.setenv("BRIDGE_TEMPLATES_DIR", "templates")


def test_validate_knows_the_key_parameters_and_checks_their_templates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project(tmp_path, monkeypatch, **{"keyed.yaml": BAD_KEYS})
    assert main(["validate"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "rules/keyed.yaml:7:11: slack.post takes 'thread_key' or 'thread_ts', not both "
        "(rule 'keyed')",
        "rules/keyed.yaml:10:11: slack.post takes 'thread_key' or 'message_key', not both "
        "(rule 'keyed')",
        "rules/keyed.yaml:13:56: with.message_key in rule 'keyed' reads steps.late, which is "
        "not an earlier step; earlier steps: both, two_keys",
        "rules/keyed.yaml:17:51: thread_key expects a string or number, but "
        "\"{{ {'id': data.id} }}\" is an object (slack.post in rule 'keyed'); "
        "use one of its fields",
        "rules/keyed.yaml:17:93: reply_broadcast expects a boolean, but 'yes' is a string "
        "(slack.post in rule 'keyed'); write true or false without quotes "
        "(reply_broadcast: true)",
        "5 problem(s) found",
    ]


TESTED = """
cases:
  - name: a status change renders its thread and message keys
    event: {type: lytho.proof.status_changed, data: {id: 7, name: Spring hero, status: approved}}
    expect:
      actions:
        - {step: notify, uses: slack.post, with: {thread_key: proof-7, reply_broadcast: true}}
        - {step: link, uses: slack.post,
           with: {text: "<steps.notify.permalink> started=<steps.notify.started>"}}
  - name: the living message's key
    event: {type: lytho.proof.status_changed, data: {id: 7, name: Spring hero, status: approved}}
    expect:
      actions:
        - {rule: proof-living, uses: slack.post, with: {message_key: proof-status-7}}
  - name: a wrong expectation names the rendered key
    event: {type: lytho.proof.status_changed, data: {id: 8, name: Spring hero, status: approved}}
    expect:
      actions:
        - {step: notify, uses: slack.post, with: {thread_key: proof-7}}
"""


def test_rule_tests_assert_the_rendered_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {"thread.yaml": THREAD_RULE, "living.yaml": LIVING_RULE, "tests__k.test.yaml": TESTED}
    project(tmp_path, monkeypatch, **files)
    assert main(["validate"]) == 0
    capsys.readouterr()
    assert main(["test"]) == 1
    out = capsys.readouterr().out
    assert "ok    rules/tests/k.test.yaml:3: a status change renders" in out
    assert "ok    rules/tests/k.test.yaml:10: the living message's key" in out
    assert "FAIL  rules/tests/k.test.yaml:15: a wrong expectation" in out
    assert '"thread_key": "proof-8"' in out
    assert out.splitlines()[-1] == "2 passed, 1 failed"


def test_a_message_the_bot_may_not_edit_goes_to_the_dead_letters(bridge: Bridge) -> None:
    bridge.write_rule("proof.yaml", LIVING_RULE)
    theirs = httpx.post(
        f"{bridge.slack_url}/_sandbox/messages", json={"channel": "#creative", "text": "mine!"}
    ).json()
    # The key names a message a person wrote (say, a key copied by hand).
    key = f"{bridge.settings.key_prefix}slack:message:creative:proof-status-7"
    bridge.redis.hset(key, mapping={"channel": theirs["channel"], "ts": theirs["ts"]})
    bridge.start_worker()
    assert bridge.post(proof("x-1", "approved")).status_code == 202
    [letter] = wait_for(bridge.dead_letters, what="a dead letter")
    assert (letter["event_id"], letter["step"]) == ("x-1", "status")
    assert letter["error"] == (
        "Slack chat.update → cant_update_message; the message was not posted by this bot, "
        "so it may not edit it"
    )
    assert [m["text"] for m in bridge.slack.received("#creative")] == ["mine!"]
    assert len(calls(bridge, "chat.update")) == 1  # permanent: not retried
    assert calls(bridge, "chat.postMessage") == []


def test_a_key_is_claimed_once_and_forgotten_only_for_the_message_found_gone(
    redis_url: str, key_prefix: str
) -> None:
    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        store = SlackKeys(client, Keys(key_prefix))
        try:
            assert await store.claim("thread", "creative", "proof-7", "run-a")
            assert not await store.claim("thread", "creative", "proof-7", "run-b")
            # The same step coming back (a retry) still holds it; another's release is no-op.
            assert await store.claim("thread", "creative", "proof-7", "run-a")
            await store.release("thread", "creative", "proof-7", "run-b")
            assert not await store.claim("thread", "creative", "proof-7", "run-b")
            where = {"channel": "C1", "ts": "1.000001"}
            await store.record(
                "step-a",
                {"ts": "1.000001"},
                kind="thread",
                scope="creative",
                key="proof-7",
                message=where,
                owner="run-a",
            )
            assert await store.claim("thread", "creative", "proof-7", "run-b")
            assert await store.find("thread", "creative", "proof-7") == where
            assert await store.step("step-a") == {"ts": "1.000001"}
            ttl = await client.ttl(f"{key_prefix}slack:thread:creative:proof-7")
            assert 30 * 24 * 3600 - 5 < ttl <= 30 * 24 * 3600
            # A worker that found an older message gone does not drop the newer one.
            await store.forget("thread", "creative", "proof-7", "0.000009")
            assert await store.find("thread", "creative", "proof-7") == where
            await store.forget("thread", "creative", "proof-7", "1.000001")
            assert await store.find("thread", "creative", "proof-7") is None
        finally:
            await client.aclose()

    asyncio.run(scenario())
