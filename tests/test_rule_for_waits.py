"""`for:` on a rule: wait, then check the conditions again on the object's current state.

End to end on real Redis with `bridge worker` processes. A wait of an hour is made due by
moving its check job to now (the queue's clock, as tests/test_digest.py closes a window),
so nothing asserted depends on timing; one test waits a real second.
"""

from __future__ import annotations

import html
import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.cli.main import main
from bridge.cli.report import trace_lines
from bridge.events import Event
from bridge.ingress.pollers.snapshot import Commit, Snapshot
from bridge.sandbox.lytho_workflow import create_lytho_workflow_app
from bridge.sandbox.server import serve_in_thread
from tests.helpers import Bridge, running_bridge, wait_for
from tests.pollers.support import WF_ID, WF_SECRET, make_context, poll, poller

ORDER_RULE = """
id: order-still-pending
on: shop.order.status_changed
when:
  - {path: data.status, eq: pending}
for: 1h
actions:
  - uses: slack.post
    with:
      channel: "#ops"
      text: >-
        Order {{ subject }} pending for {{ rule.id }}:
        {{ current.data.note }} ({{ current.from }})
"""

REMINDER = """
id: proof-review-reminder
on: lytho.proof.status_changed
when:
  - {path: data.status, eq: in_review}
for: 48h
actions:
  - uses: slack.post
    with:
      channel: "#creative"
      text: "Proof {{ data.name }} is still in review (v{{ current.data.version }})"
"""


TOKEN = "waits-admin-token-0123456789"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "rules.md"


def recipe() -> tuple[str, str]:
    """The cookbook's reminder rule and its rule test, as docs/rules.md shows them."""
    text = DOCS.read_text()
    section = text[text.index("### 6. Proof still in review after two days") :]
    rule, tests = re.findall(r"```yaml\n(.*?)```", section, re.S)[:2]
    return rule, tests


def outcome(bridge: Bridge, event_id: str) -> str:
    """The event's outcome as the admin API (and the dashboard's event list) shows it."""
    response = httpx.get(
        f"{bridge.web_url}/api/events/{event_id}",
        headers={"authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    return str(response.json()["outcome"])


def event_page(bridge: Bridge, event_id: str) -> str:
    with httpx.Client(base_url=bridge.web_url, timeout=10) as client:
        form = client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]*)"', form.text)
        assert csrf is not None
        assert client.post("/login", data={"csrf": csrf[1], "token": TOKEN}).status_code == 303
        page = client.get(f"/events/{event_id}")
        assert page.status_code == 200
        return html.unescape(re.sub(r"<[^>]+>", "", page.text))  # the text a person reads


def order(n: int, status: str, *, kind: str = "status_changed", note: str = "") -> dict[str, Any]:
    return {
        "id": f"o-{n}",
        "type": f"shop.order.{kind}",
        "subject": "order-1",
        "time": f"2026-12-06T10:{n:02d}:00Z",
        "data": {"status": status, "note": note},
    }


def check_jobs(bridge: Bridge) -> list[str]:
    prefix = f"{bridge.settings.key_prefix}wait:check:"
    jobs: list[bytes] = bridge.redis.zrange(bridge.settings.queue_name, 0, -1)  # type: ignore[assignment]
    return [j.decode() for j in jobs if j.decode().startswith(prefix)]


def check_now(bridge: Bridge) -> None:
    """The wait's time is up: its check job becomes due now (the queue's clock)."""
    [job] = check_jobs(bridge)
    assert bridge.redis.zadd(bridge.settings.queue_name, {job: 0}, xx=True, ch=True) == 1


def traced(bridge: Bridge, event_id: str, what: str, **fields: Any) -> dict[str, Any]:
    """The event's first `wait` trace entry with these fields, once it is traced."""
    found = wait_for(lambda: bridge.trace_has(event_id, "wait", **fields), what=what)
    assert found is not None
    return found


def waits(bridge: Bridge, event_id: str) -> list[dict[str, Any]]:
    return [e for e in bridge.trace(event_id) if e["kind"] == "wait"]


def statuses(bridge: Bridge, event_id: str, kind: str = "wait") -> list[str]:
    return [e["status"] for e in bridge.trace(event_id) if e["kind"] == kind]


def printed(bridge: Bridge, event_id: str) -> str:
    raw: bytes | None = bridge.redis.get(f"{bridge.settings.key_prefix}event:{event_id}")  # type: ignore[assignment]
    assert raw is not None
    return "\n".join(trace_lines(Event.from_dict(json.loads(raw)), bridge.trace(event_id)))


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    # A short step timeout: the jobs of a SIGKILLed worker are taken up again soon after.
    env = {"BRIDGE_STEP_TIMEOUT": "1", "BRIDGE_ADMIN_TOKEN": TOKEN}
    with running_bridge(redis_url, key_prefix, tmp_path, **env) as running:
        running.write_rule("order.yaml", ORDER_RULE)
        running.start_slack()
        running.start_web()
        yield running


@pytest.mark.timeout(90)
def test_a_match_that_still_holds_after_the_wait_runs_once_with_the_current_state(
    bridge: Bridge,
) -> None:
    bridge.start_worker()
    assert bridge.post([order(1, "pending", note="first")], source="shop").status_code == 202
    wait_for(lambda: bridge.trace_has("o-1", "wait", status="waiting"), what="the wait")
    # An update that keeps the condition, and a second match: the first wait is kept.
    update = order(2, "pending", kind="updated", note="paid by card")
    assert bridge.post([update], source="shop").status_code == 202
    assert bridge.post([order(3, "pending", note="third")], source="shop").status_code == 202
    again = traced(bridge, "o-3", "the second match")
    assert again["status"] == "already_waiting" and again["wait_of"] == "o-1"
    wait_for(
        lambda: all(bridge.trace_has(e, "evaluated") for e in ("o-1", "o-2", "o-3")),
        what="the three events matched",
    )
    assert bridge.slack.received("#ops") == []
    assert len(check_jobs(bridge)) == 1
    assert outcome(bridge, "o-1") == "running"
    assert "wait order-still-pending: waiting until " in event_page(bridge, "o-1")
    assert outcome(bridge, "o-3") == "suppressed"  # its match keeps o-1's wait

    check_now(bridge)
    [message] = wait_for(lambda: bridge.slack.received("#ops"), what="the run")
    # The latest event about the order is the third (10:03): its note, not the first's.
    assert message["text"] == "Order order-1 pending for order-still-pending: third (event)"
    wait_for(lambda: statuses(bridge, "o-1", "run") == ["succeeded"], what="the run's end")
    assert statuses(bridge, "o-1") == ["waiting", "holds"]
    assert waits(bridge, "o-1")[1]["current"] == {"from": "event", "event": "o-3"}
    assert statuses(bridge, "o-3", "run") == []
    wait_for(lambda: bridge.queued() == 0, what="the queue to empty")
    assert len(bridge.slack.received("#ops")) == 1
    shown = printed(bridge, "o-1")
    assert "wait order-still-pending: waiting until " in shown and "(for 1h)" in shown
    assert "wait order-still-pending: still holds (current state: event o-3) → run" in shown
    assert outcome(bridge, "o-1") == "succeeded"


@pytest.mark.timeout(90)
def test_a_change_that_breaks_the_condition_cancels_the_wait(bridge: Bridge) -> None:
    bridge.start_worker()
    assert bridge.post([order(1, "pending")], source="shop").status_code == 202
    wait_for(lambda: bridge.trace_has("o-1", "wait", status="waiting"), what="the wait")
    assert bridge.post([order(2, "shipped")], source="shop").status_code == 202
    cancelled = traced(bridge, "o-1", "the cancel", status="cancelled")
    assert cancelled["by"] == "o-2"
    assert cancelled["why"] == "data.status eq 'pending' (actual 'shipped': not equal)"
    cancels = traced(bridge, "o-2", "the cancelling event's trace", status="cancels")
    assert cancels["rule"] == "order-still-pending" and cancels["wait_of"] == "o-1"
    assert check_jobs(bridge) == []  # the check is off the queue
    wait_for(lambda: bridge.queued() == 0, what="the queue to empty")
    assert bridge.slack.received("#ops") == []
    assert statuses(bridge, "o-1", "run") == []
    assert "cancelled by event o-2: data.status eq 'pending'" in printed(bridge, "o-1")
    assert "cancelled by event o-2: data.status eq 'pending'" in event_page(bridge, "o-1")
    assert outcome(bridge, "o-1") == "suppressed"  # matched, and not run
    # Pending again: a new wait starts from that event.
    assert bridge.post([order(3, "pending", note="again")], source="shop").status_code == 202
    wait_for(lambda: bridge.trace_has("o-3", "wait", status="waiting"), what="a new wait")
    check_now(bridge)
    [message] = wait_for(lambda: bridge.slack.received("#ops"), what="the run")
    assert message["text"].endswith(": again (event)")


@pytest.mark.timeout(90)
def test_an_older_event_changes_nothing_and_a_deletion_cancels(bridge: Bridge) -> None:
    bridge.start_worker()
    assert bridge.post([order(5, "pending", note="new")], source="shop").status_code == 202
    wait_for(lambda: bridge.trace_has("o-5", "wait", status="waiting"), what="the wait")
    # Sent late, but from before the match (10:01 < 10:05): not the order's state now.
    late = order(1, "shipped", kind="updated")
    assert bridge.post([late], source="shop").status_code == 202
    wait_for(lambda: bridge.trace_has("o-1", "evaluated"), what="the late event")
    assert bridge.trace_has("o-5", "wait", status="cancelled") is None
    assert len(check_jobs(bridge)) == 1
    gone = {**order(6, "pending", kind="deleted"), "data": {"status": "pending"}}
    assert bridge.post([gone], source="shop").status_code == 202
    cancelled = traced(bridge, "o-5", "the cancel", status="cancelled")
    assert cancelled["by"] == "o-6"
    assert cancelled["why"] == "the object was deleted (shop.order.deleted)"
    assert check_jobs(bridge) == []
    wait_for(lambda: bridge.queued() == 0, what="the queue to empty")
    assert bridge.slack.received("#ops") == []


@pytest.mark.timeout(90)
def test_a_one_second_wait_runs_when_its_time_is_up(bridge: Bridge) -> None:
    bridge.write_rule("order.yaml", ORDER_RULE.replace("for: 1h", "for: 1s"))
    bridge.start_worker()
    assert bridge.post([order(1, "pending", note="soon")], source="shop").status_code == 202
    [message] = wait_for(lambda: bridge.slack.received("#ops"), what="the run")
    assert message["text"].endswith(": soon (event)")
    assert statuses(bridge, "o-1") == ["waiting", "holds"]


@pytest.mark.timeout(120)
def test_a_worker_sigkilled_in_the_middle_of_a_wait_checks_once(bridge: Bridge) -> None:
    victim = bridge.start_worker()
    assert bridge.post([order(1, "pending", note="kept")], source="shop").status_code == 202
    wait_for(lambda: bridge.trace_has("o-1", "wait", status="waiting"), what="the wait")
    victim.send_signal(signal.SIGKILL)
    victim.wait(5)
    # The wait lives in Redis: a fresh worker checks it when it is due.
    check_now(bridge)
    bridge.start_worker()
    bridge.start_worker()
    [message] = wait_for(lambda: bridge.slack.received("#ops"), what="the run")
    assert message["text"].endswith(": kept (event)")
    wait_for(lambda: bridge.queued() == 0, what="the queue to empty")
    assert len(bridge.slack.received("#ops")) == 1
    assert statuses(bridge, "o-1") == ["waiting", "holds"]
    assert statuses(bridge, "o-1", "run") == ["succeeded"]


# --- the current state from a poller's snapshot -------------------------------------------


@pytest.fixture
def workflow(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[tuple[Bridge, str]]:
    with (
        serve_in_thread(create_lytho_workflow_app()) as server,
        running_bridge(redis_url, key_prefix, tmp_path) as running,
    ):
        running.start_slack()
        yield running, server.url


def workflow_env(url: str) -> dict[str, str]:
    return {
        "LYTHO_WORKFLOW_API_URL": f"{url}/v1/",
        "LYTHO_TOKEN_URL": f"{url}/oauth/token",
        "LYTHO_CLIENT_ID": WF_ID,
        "LYTHO_CLIENT_SECRET": WF_SECRET,
    }


async def proof_in_review(b: Bridge, url: str) -> tuple[Any, str]:
    """Proof 8 goes to review, as the Workflow poller sees it: (context, the event's id)."""
    ctx = await make_context(b.env["REDIS_URL"], b.settings.key_prefix, workflow_env(url))
    workflow = poller(ctx, "lytho_workflow")
    assert (await poll(workflow)).done  # seeds the snapshot
    httpx.patch(
        f"{url}/_sandbox/proof/8", json={"status": "in_review"}, timeout=5
    ).raise_for_status()
    assert (await poll(workflow)).events == 1
    ids = await ctx.redis.zrange(ctx.keys.events, 0, -1)
    return ctx, ids[-1].decode()


@pytest.mark.timeout(90)
async def test_the_cookbook_reminder_names_the_reviewers_of_a_proof_still_in_review(
    workflow: tuple[Bridge, str],
) -> None:
    b, url = workflow
    b.write_rule("proof-review-reminder.yaml", recipe()[0])
    b.start_worker(workflow_env(url))  # lytho_workflow.get reads the sandbox
    ctx, event_id = await proof_in_review(b, url)
    try:
        wait_for(lambda: b.trace_has(event_id, "wait", status="waiting"), what="the wait")
        check_now(b)
        [message] = wait_for(lambda: b.slack.received("#creative"), what="the reminder")
        assert re.fullmatch(
            r":hourglass: Proof \*Story video v1\* \(v1\) has been in review since "
            r"\d{4}-\d\d-\d\d \d\d:\d\d UTC\. Reviewers: Sam Okafor, Lee Chen",
            message["text"],
        ), message["text"]
        holds = traced(b, event_id, "the check", status="holds")
        assert holds["current"] == {"from": "snapshot", "event": event_id}
        wait_for(lambda: statuses(b, event_id, "run") == ["succeeded"], what="the run's end")
    finally:
        await ctx.close()


@pytest.mark.timeout(90)
async def test_a_proof_the_snapshot_shows_approved_gets_no_reminder(
    workflow: tuple[Bridge, str],
) -> None:
    b, url = workflow
    b.write_rule("reminder.yaml", REMINDER)
    b.start_worker()
    ctx, event_id = await proof_in_review(b, url)
    try:
        wait_for(lambda: b.trace_has(event_id, "wait", status="waiting"), what="the wait")
        # The poller saw the approval and advanced its snapshot; its event is not handled
        # yet when the check comes: the check reads the snapshot.
        snapshot = Snapshot(ctx.redis, b.settings.key_prefix, "lytho_workflow")
        entry = (await snapshot.get("proof", ["8"]))["8"]
        assert entry is not None and entry["status"] == "in_review"
        commit = Commit()
        commit.put(snapshot.key("proof"), "8", {**entry, "status": "approved"})
        await snapshot.commit(commit)
        check_now(b)
        ended = traced(b, event_id, "the check", status="not_run")
        assert ended["why"] == "data.status eq 'in_review' (actual 'approved': not equal)"
        assert ended["current"] == {"from": "snapshot", "event": event_id}
        wait_for(lambda: b.queued() == 0, what="the queue to empty")
        assert b.slack.received("#creative") == []
        assert "no longer holds (data.status eq 'in_review'" in printed(b, event_id)
    finally:
        await ctx.close()


# --- bridge validate --------------------------------------------------------------------

BAD = """
rules:
  - id: too-short
    on: shop.order.placed
    for: 0.5s
    actions: [{uses: slack.post, with: {channel: "#a", text: x}}]
  - id: too-long
    on: shop.order.placed
    for: 31d
    actions: [{uses: slack.post, with: {channel: "#a", text: x}}]
  - id: not-a-duration
    on: shop.order.placed
    for: soon
    actions: [{uses: slack.post, with: {channel: "#a", text: x}}]
  - id: with-digest
    on: shop.order.placed
    digest: {window: 1h}
    for: 2h
    actions: [{uses: slack.post, with: {channel: "#a", text: x}}]
"""


def test_bridge_validate_refuses_bad_waits_with_file_line_and_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "rules" / "waits.yaml").write_text(BAD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BRIDGE_RULES_DIR", raising=False)
    monkeypatch.delenv("BRIDGE_TEMPLATES_DIR", raising=False)
    assert main(["validate"]) == 1
    out, err = capsys.readouterr()
    shown = [line for line in (out + err).splitlines() if line.startswith("rules/")]
    assert shown == [
        "rules/waits.yaml:5:10: 'for' in rule 'too-short' is '0.5s'; expected at least 1s "
        "(a wait is checked to the second)",
        "rules/waits.yaml:9:10: 'for' in rule 'too-long' is '31d'; expected at most 30d "
        "(for longer, run a rule on a schedule)",
        "rules/waits.yaml:13:10: bad duration 'soon' for 'for' in rule 'not-a-duration'; "
        "expected seconds or a duration such as 30s, 5m, 24h, 7d",
        "rules/waits.yaml:18:10: 'for' and 'digest' in rule 'with-digest' do not go together: "
        "a digest collects many matches into one run, 'for' re-checks one object's match; "
        "use one of them",
    ]


# --- bridge test and bridge fire --dry-run -------------------------------------------------

RULE_TESTS = """
cases:
  - name: still in review two days later, so a reminder with the state then
    events:
      - {id: p1, type: lytho.proof.status_changed, source: lytho_workflow, subject: "8",
         time: "2026-12-01T09:00:00Z", data: {name: Flyer, status: in_review, version: 1}}
      - {id: p2, type: lytho.proof.updated, source: lytho_workflow, subject: "8",
         time: "2026-12-02T09:00:00Z", data: {name: Flyer, status: in_review, version: 2}}
      - {id: p3, type: lytho.proof.updated, source: lytho_workflow, subject: "9",
         time: "2026-12-04T09:00:00Z", data: {name: Other, status: approved, version: 1}}
    expect:
      actions:
        - {uses: slack.post, with: {text: "Proof Flyer is still in review (v2)"}}
  - name: approved within the two days, so no reminder
    events:
      - {id: p1, type: lytho.proof.status_changed, source: lytho_workflow, subject: "8",
         time: "2026-12-01T09:00:00Z", data: {name: Flyer, status: in_review, version: 1}}
      - {id: p2, type: lytho.proof.status_changed, source: lytho_workflow, subject: "8",
         time: "2026-12-02T09:00:00Z", data: {name: Flyer, status: approved, version: 1}}
    expect:
      actions: []
  - name: a task of the same id is another object
    events:
      - {id: p1, type: lytho.proof.status_changed, source: lytho_workflow, subject: "8",
         time: "2026-12-01T09:00:00Z", data: {name: Flyer, status: in_review, version: 1}}
      - {id: t1, type: lytho.task.status_changed, source: lytho_workflow, subject: "8",
         time: "2026-12-02T09:00:00Z", data: {name: Task, status: done, version: 3}}
    expect:
      actions:
        - {uses: slack.post, with: {text: "Proof Flyer is still in review (v1)"}}
"""


def test_rule_tests_check_a_wait_against_the_cases_later_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "rules" / "reminder.yaml").write_text(REMINDER)
    (tmp_path / "rules" / "reminder.test.yaml").write_text(RULE_TESTS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BRIDGE_RULES_DIR", raising=False)
    monkeypatch.delenv("BRIDGE_TEMPLATES_DIR", raising=False)
    code = main(["test"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "3 passed" in out + err
    # The wrong expectation fails: the reminder carries the state after the wait.
    (tmp_path / "rules" / "reminder.test.yaml").write_text(RULE_TESTS.replace("(v2)", "(v1)", 1))
    assert main(["test"]) == 1
    out, err = capsys.readouterr()
    assert "Proof Flyer is still in review (v2)" in out + err
    # bridge fire --dry-run says the actions come after the wait, and renders them.
    event: dict[str, Any] = {
        "type": "lytho.proof.status_changed",
        "source": "lytho_workflow",
        "subject": "8",
    }
    event["data"] = {"name": "Flyer", "status": "in_review", "version": 4}
    (tmp_path / "event.json").write_text(json.dumps(event))
    assert main(["fire", "--dry-run", "event.json"]) == 0
    out, _ = capsys.readouterr()
    assert "after for: 48h, if the conditions still hold then" in out
    assert "Proof Flyer is still in review (v4)" in out


def test_the_cookbook_reminder_validates_and_passes_its_rule_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rule, tests = recipe()
    (tmp_path / "rules" / "tests").mkdir(parents=True)
    (tmp_path / "templates").mkdir()
    (tmp_path / "rules" / "proof-review-reminder.yaml").write_text(rule)
    (tmp_path / "rules" / "tests" / "proof-review-reminder.test.yaml").write_text(tests)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BRIDGE_RULES_DIR", raising=False)
    monkeypatch.delenv("BRIDGE_TEMPLATES_DIR", raising=False)
    assert main(["validate"]) == 0
    assert main(["test"]) == 0
    out, err = capsys.readouterr()
    assert "2 passed" in out + err, out + err
