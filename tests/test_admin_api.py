"""The admin JSON API under /api/: events, traces, replays, rules, dead letters; its guard."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.operate.queries import event_outcome
from bridge.sandbox.slack import DEFAULT_TOKEN
from tests.helpers import Bridge, running_bridge, wait_for

TOKEN = "admin-token-for-tests-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}

RULE = """
id: proof-approved-to-slack
description: "Tell #creative when a proof is approved"
on: lytho.proof.status_changed
when:
  - {path: data.status, eq: approved}
actions:
  - id: notify
    uses: slack.post
    with: {channel: "#CHANNEL", text: "Proof {{ data.name }} approved"}
"""


def proof(event_id: str, status: str = "approved", **data: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "lytho.proof.status_changed",
        "data": {"status": status, "name": "Banner", **data},
    }


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path, BRIDGE_ADMIN_TOKEN=TOKEN) as b:
        b.write_rule("proof.yaml", RULE.replace("CHANNEL", "creative"))
        b.start_slack()
        b.start_web()
        yield b


def api(bridge: Bridge, method: str, path: str, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("headers", AUTH)
    return httpx.request(method, f"{bridge.web_url}{path}", timeout=10, **kwargs)


def outcome(bridge: Bridge, event_id: str) -> str:
    response = api(bridge, "GET", f"/api/events/{event_id}")
    return str(response.json()["outcome"]) if response.status_code == 200 else ""


def test_without_the_admin_token_the_admin_surface_is_off(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    with running_bridge(redis_url, key_prefix, tmp_path) as bridge:
        bridge.start_web()
        for method, path in [
            ("GET", "/api/events"),
            ("GET", "/api/rules"),
            ("POST", "/api/events/x/replay"),
            ("DELETE", "/api/dead-letters/dl_x"),
        ]:
            response = api(bridge, method, path)
            assert response.status_code == 404
            assert response.json() == {
                "error": "not_found",
                "message": "the admin API is off; set BRIDGE_ADMIN_TOKEN",
            }
        for path in ("/", "/login", "/events", "/static/dashboard.css"):
            assert httpx.get(f"{bridge.web_url}{path}").status_code == 404
        assert httpx.get(f"{bridge.web_url}/metrics").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong-token"},
        {"authorization": f"Bearer {TOKEN}x"},
        {"authorization": f"Basic {TOKEN}"},
        {"authorization": "Bearer"},
    ],
    ids=["missing", "wrong", "longer", "basic", "empty"],
)
def test_a_missing_or_wrong_token_is_401(bridge: Bridge, headers: dict[str, str]) -> None:
    for method, path in [("GET", "/api/events"), ("POST", "/api/events/x/replay")]:
        response = api(bridge, method, path, headers=headers)
        assert response.status_code == 401
        assert response.json() == {
            "error": "unauthorized",
            "message": "send Authorization: Bearer <BRIDGE_ADMIN_TOKEN>",
        }
        assert response.headers["www-authenticate"] == 'Bearer realm="lytbridge"'


def test_events_newest_first_with_filters_outcomes_and_paging(bridge: Bridge) -> None:
    bridge.start_worker()
    assert bridge.post(proof("e-1")).status_code == 202
    wait_for(lambda: outcome(bridge, "e-1") == "succeeded", what="e-1 to succeed")
    assert bridge.post(proof("e-2", "draft")).status_code == 202
    assert bridge.post({"id": "e-3", "type": "shop.order.paid"}, source="shop").status_code == 202
    wait_for(lambda: outcome(bridge, "e-3") == "unmatched", what="e-3 to be matched")
    wait_for(lambda: outcome(bridge, "e-2") == "unmatched", what="e-2 to be matched")

    response = api(bridge, "GET", "/api/events")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert [e["id"] for e in body["events"]] == ["e-3", "e-2", "e-1"]
    assert body["next_offset"] is None
    first = body["events"][2]
    assert first["type"] == "lytho.proof.status_changed"
    assert first["source"] == "demo"
    assert first["outcome"] == "succeeded"
    assert first["matched"] == ["proof-approved-to-slack"]
    assert first["received_at"] > 1.7e9

    def ids(query: str) -> list[str]:
        response = api(bridge, "GET", f"/api/events?{query}")
        assert response.status_code == 200, response.text
        return [e["id"] for e in response.json()["events"]]

    assert ids("source=shop") == ["e-3"]
    assert ids("type=lytho.proof.status_changed") == ["e-2", "e-1"]
    assert ids("type=lytho.*") == ["e-2", "e-1"]
    assert ids("outcome=unmatched") == ["e-3", "e-2"]
    assert ids("outcome=succeeded&source=demo") == ["e-1"]
    assert ids("outcome=failed") == []
    page = api(bridge, "GET", "/api/events?limit=2").json()
    assert [e["id"] for e in page["events"]] == ["e-3", "e-2"]
    assert ids(f"limit=2&offset={page['next_offset']}") == ["e-1"]

    for query, message in [
        ("outcome=won", "outcome 'won' is not known; expected one of pending, unmatched, "),
        ("limit=0", "limit has value 0; expected 1 to 500"),
        ("limit=ten", "limit has value 'ten'; expected a whole number"),
    ]:
        response = api(bridge, "GET", f"/api/events?{query}")
        assert response.status_code == 400
        assert response.json()["error"] == "bad_request"
        assert response.json()["message"].startswith(message)


def test_one_event_with_its_trace_and_rendered_actions(bridge: Bridge) -> None:
    bridge.start_worker()
    assert bridge.post(proof("t-1")).status_code == 202
    wait_for(lambda: outcome(bridge, "t-1") == "succeeded", what="the run")
    response = api(bridge, "GET", "/api/events/t-1")
    assert response.status_code == 200
    body = response.json()
    assert body["event"]["data"] == {"status": "approved", "name": "Banner"}
    kinds = [entry["kind"] for entry in body["trace"]]
    assert kinds == ["evaluated", "step", "run"]
    [evaluation] = body["trace"][0]["rules"]
    assert evaluation["rule"] == "proof-approved-to-slack" and evaluation["matched"] is True
    [condition] = evaluation["conditions"]["children"]
    assert condition == {
        "op": "eq",
        "result": True,
        "path": "data.status",
        "expected": "approved",
        "actual": "approved",
        "line": condition["line"],
    }
    step = body["trace"][1]
    assert step["status"] == "succeeded" and step["attempt"] == 1 and step["duration_ms"] >= 0
    [action] = body["actions"]
    assert action["rule"] == "proof-approved-to-slack" and action["step"] == "notify"
    assert action["with"] == {"channel": "#creative", "text": "Proof Banner approved"}
    assert action["result"]["ts"] == step["result"]["ts"]

    missing = api(bridge, "GET", "/api/events/nope")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": "not_found",
        "message": "no event 'nope' is stored (unknown, or older than BRIDGE_TRACE_TTL)",
    }


def test_replay_runs_the_event_again(bridge: Bridge) -> None:
    bridge.start_worker()
    assert bridge.post(proof("r-1")).status_code == 202
    wait_for(lambda: bridge.slack.received("#creative"), what="the first message")
    response = api(bridge, "POST", "/api/events/r-1/replay")
    assert response.status_code == 202
    run = response.json()["run"]
    assert response.json() == {"event_id": "r-1", "run": run}
    assert re.fullmatch(r"replay-\d+", run)
    wait_for(lambda: len(bridge.slack.received("#creative")) == 2, what="the replayed message")
    wait_for(lambda: bridge.trace_has("r-1", "run", run=run, status="succeeded"), what="the run")
    assert outcome(bridge, "r-1") == "succeeded"
    assert api(bridge, "POST", "/api/events/nope/replay").status_code == 404


def test_rules_with_numbers_and_the_rule_sets_validity(bridge: Bridge) -> None:
    bridge.start_worker()
    assert bridge.post(proof("n-1")).status_code == 202
    assert bridge.post(proof("n-2")).status_code == 202

    def rules() -> dict[str, Any]:
        response = api(bridge, "GET", "/api/rules")
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    body = wait_for(
        lambda: (b := rules())["rules"][0]["matches_24h"] == 2 and b, what="the worker's counts"
    )
    assert body["rule_set"] == {
        "valid": True,
        "state": "ok",
        "loaded_at": body["rule_set"]["loaded_at"],
        "problems": [],
        "warnings": [],
    }
    [rule] = body["rules"]
    assert rule["id"] == "proof-approved-to-slack"
    assert rule["description"] == "Tell #creative when a proof is approved"
    assert rule["enabled"] is True
    assert rule["on"] == ["lytho.proof.status_changed"]
    assert rule["actions"] == ["slack.post"]
    assert rule["file"].endswith("proof.yaml")
    assert rule["failures_24h"] == 0
    assert rule["last_fired"] > 1.7e9

    bridge.write_rule("broken.yaml", "id: broken\non: x\nwhen:\n  - {path: data.a, equals: 1}\n")
    body = rules()
    assert body["rule_set"]["valid"] is False
    assert body["rule_set"]["state"] == "stale"
    [problem] = body["rule_set"]["problems"]
    assert "broken.yaml:4:" in problem and "equals" in problem
    assert [r["id"] for r in body["rules"]] == ["proof-approved-to-slack"]  # the last good set


def test_rule_warnings_are_shown_beside_a_valid_rule_set(bridge: Bridge) -> None:
    typo = RULE.replace("proof-approved-to-slack", "typo").replace(
        "lytho.proof.status_changed", "lytho.proof.status_changd"
    )
    bridge.write_rule("typo.yaml", typo)
    response = api(bridge, "GET", "/api/rules")
    assert response.status_code == 200
    rule_set = response.json()["rule_set"]
    assert rule_set["valid"] is True  # a warning does not stop the rule set
    [warning] = rule_set["warnings"]
    assert "typo.yaml:" in warning and "did you mean 'lytho.proof.status_changed'" in warning
    page = httpx.get(f"{bridge.web_url}/rules", headers=AUTH, timeout=10)
    assert page.status_code == 200
    assert "did you mean &#39;lytho.proof.status_changed&#39;" in page.text


def test_dead_letters_listed_retried_and_dropped(bridge: Bridge) -> None:
    bridge.write_rule("proof.yaml", RULE.replace("CHANNEL", "no-such-channel"))
    bridge.start_worker()
    assert bridge.post(proof("d-1")).status_code == 202
    assert bridge.post(proof("d-2")).status_code == 202
    wait_for(lambda: len(bridge.dead_letters()) == 2, what="two dead letters")

    body = api(bridge, "GET", "/api/dead-letters").json()
    assert body["count"] == 2
    letters = {letter["event_id"]: letter for letter in body["dead_letters"]}
    assert set(letters) == {"d-1", "d-2"}
    letter = letters["d-1"]
    assert letter["rule_id"] == "proof-approved-to-slack"
    assert letter["step"] == "notify" and letter["uses"] == "slack.post"
    assert "channel_not_found" in letter["error"]
    # A run's end is traced after its dead letter is stored: wait for both.
    wait_for(
        lambda: all(outcome(bridge, e) not in ("pending", "running") for e in ("d-1", "d-2")),
        what="both runs' ends",
    )
    assert outcome(bridge, "d-1") == "failed"
    assert api(bridge, "GET", "/api/events?outcome=failed").json()["events"][0]["id"] in letters

    dropped = api(bridge, "DELETE", f"/api/dead-letters/{letters['d-2']['id']}")
    assert dropped.status_code == 200
    assert dropped.json() == {"dropped": letters["d-2"]["id"]}
    assert api(bridge, "DELETE", f"/api/dead-letters/{letters['d-2']['id']}").status_code == 404

    bridge.write_rule("proof.yaml", RULE.replace("CHANNEL", "creative"))
    wait_for(lambda: bridge.worker_logs().count("loaded 1 rules") >= 2, what="the reload")
    retried = api(bridge, "POST", f"/api/dead-letters/{letter['id']}/retry")
    assert retried.status_code == 202
    assert retried.json() == {
        "retrying": letter["id"],
        "event_id": "d-1",
        "rule_id": "proof-approved-to-slack",
        "step": "notify",
    }
    wait_for(lambda: bridge.slack.received("#creative"), what="the retried message")
    assert api(bridge, "GET", "/api/dead-letters").json() == {"dead_letters": [], "count": 0}
    wait_for(lambda: outcome(bridge, "d-1") == "succeeded", what="the retried run's outcome")

    missing = api(bridge, "POST", "/api/dead-letters/dl_nope/retry")
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "message": "no dead letter 'dl_nope'"}


def test_secrets_never_leave_through_the_api(bridge: Bridge) -> None:
    # A sender pasted the bridge's own Slack token and admin token into an event.
    event = proof("s-1", "draft", note=f"token {DEFAULT_TOKEN} and {TOKEN}")
    assert bridge.post(event).status_code == 202
    text = api(bridge, "GET", "/api/events/s-1").text
    assert DEFAULT_TOKEN not in text and TOKEN not in text
    assert "token ********** and **********" in text


def test_unknown_api_paths_answer_json(bridge: Bridge) -> None:
    response = api(bridge, "GET", "/api/nothing-here")
    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "message": "no such endpoint: GET /api/nothing-here",
    }


def test_the_dashboard_session_works_for_the_api_with_its_csrf_token(bridge: Bridge) -> None:
    with httpx.Client(base_url=bridge.web_url, timeout=10) as browser:
        form = browser.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        login = browser.post("/login", data={"csrf": csrf[1], "token": TOKEN, "next": "/"})
        assert login.status_code == 303
        assert browser.get("/api/events").status_code == 200
        page = browser.get("/rules")
        session_csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert session_csrf is not None
        assert bridge.post(proof("c-1", "draft")).status_code == 202
        refused = browser.post("/api/events/c-1/replay")
        assert refused.status_code == 403
        assert refused.json()["error"] == "csrf"
        replayed = browser.post("/api/events/c-1/replay", headers={"x-csrf-token": session_csrf[1]})
        assert replayed.status_code == 202


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], "pending"),
        ([{"kind": "evaluated", "rules": [], "matched": []}], "unmatched"),
        ([{"kind": "evaluated", "matched": ["a"]}], "running"),
        (
            [{"kind": "evaluated", "matched": ["a"], "suppressed": {"a": {"by": "dedupe"}}}],
            "suppressed",
        ),
        (
            [
                {"kind": "evaluated", "matched": ["a", "b"], "suppressed": {"b": {}}},
                {"kind": "run", "rule": "a", "status": "succeeded"},
            ],
            "succeeded",
        ),
        (
            [
                {"kind": "evaluated", "matched": ["a", "b"]},
                {"kind": "run", "rule": "a", "status": "dead_lettered"},
            ],
            "failed",
        ),
        (
            [  # a dead letter retried with success
                {"kind": "evaluated", "matched": ["a"]},
                {"kind": "run", "rule": "a", "status": "dead_lettered"},
                {"kind": "run", "rule": "a", "status": "succeeded"},
            ],
            "succeeded",
        ),
        (
            [  # a replay still running
                {"kind": "evaluated", "matched": ["a"]},
                {"kind": "run", "rule": "a", "status": "succeeded"},
                {"kind": "replayed", "run": "replay-1"},
                {"kind": "evaluated", "matched": ["a"], "run": "replay-1"},
            ],
            "running",
        ),
        (
            [
                {"kind": "evaluated", "matched": ["a"]},
                {"kind": "run", "rule": "a", "status": "succeeded_with_errors"},
            ],
            "succeeded_with_errors",
        ),
        (
            [  # a trace written before runs said so themselves
                {"kind": "evaluated", "matched": ["a", "b"]},
                {"kind": "step", "rule": "a", "status": "failed", "continued": True},
                {"kind": "run", "rule": "a", "status": "succeeded"},
                {"kind": "run", "rule": "b", "status": "succeeded"},
            ],
            "succeeded_with_errors",
        ),
        (
            [
                {"kind": "evaluated", "matched": ["a", "b"]},
                {"kind": "run", "rule": "a", "status": "succeeded_with_errors"},
                {"kind": "run", "rule": "b", "status": "dead_lettered"},
            ],
            "failed",
        ),
        (
            [  # a replay's run is its own: the first run's errors are not the replay's
                {"kind": "evaluated", "matched": ["a"]},
                {"kind": "step", "rule": "a", "status": "failed", "continued": True},
                {"kind": "run", "rule": "a", "status": "succeeded_with_errors"},
                {"kind": "evaluated", "matched": ["a"], "run": "replay-1"},
                {"kind": "run", "rule": "a", "run": "replay-1", "status": "succeeded"},
            ],
            "succeeded_with_errors",
        ),
        (
            [  # a match that joined a digest: the digest's run is under its own id
                {"kind": "evaluated", "matched": ["a"], "digests": {"a": "dg_1"}},
            ],
            "digested",
        ),
        (
            [  # another rule's run still counts
                {"kind": "evaluated", "matched": ["a", "b"], "digests": {"a": "dg_1"}},
                {"kind": "run", "rule": "b", "status": "succeeded"},
            ],
            "succeeded",
        ),
    ],
    ids=[
        "pending",
        "unmatched",
        "running",
        "suppressed",
        "ran",
        "failed",
        "retried",
        "replay",
        "with-errors",
        "continued-step",
        "failed-wins",
        "replay-of-errors",
        "digested",
        "digested-and-ran",
    ],
)
def test_event_outcomes_from_traces(entries: list[dict[str, Any]], expected: str) -> None:
    assert event_outcome(entries) == expected
