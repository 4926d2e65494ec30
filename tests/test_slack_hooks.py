"""POST /hooks/slack end to end: Slack's signed button presses and slash commands become
events that run rules (real web app, Redis, worker and Slack sandbox over loopback);
unsigned, forged, stale or malformed requests are refused and store nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from slack_sdk.signature import SignatureVerifier

from bridge.cli.slack_send import action_body, block_actions_payload, signed_headers
from bridge.events import Event
from bridge.ingress.normalize import generic_events
from bridge.ingress.signatures import SignatureError, sign_slack, verify_slack
from bridge.ingress.slack import action_events, type_word
from tests.helpers import Bridge, running_bridge, wait_for

SIGNING_SECRET = "8d1b3e0c5f2a4d6e9b7c1a3f5e7d9b2c"

RULE = """
id: pushed-to-lytics
on: slack.action.push_to_lytics
actions:
  - uses: slack.post
    with:
      channel: "#creative"
      text: "{{ data.user.name }} pushed asset {{ data.value }} to Lytics"
"""

COMMAND_RULE = """
id: deploy-command
on: slack.command.deploy
actions:
  - uses: slack.post
    with:
      channel: "#creative"
      text: "{{ data.user.name }} asked to deploy {{ data.text }}"
"""


def press(action_id: str = "push_to_lytics", value: str = "asset-1001") -> dict[str, Any]:
    """A block_actions payload as Slack sends it for a button press (docs.slack.dev)."""
    return {
        "type": "block_actions",
        "user": {"id": "U0ANA1", "username": "ana", "name": "ana", "team_id": "T0TEAM1"},
        "api_app_id": "A0APP1",
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": "1764700000.000100",
            "channel_id": "C0CREATIVE",
            "is_ephemeral": False,
        },
        "trigger_id": "1764700010.4242.0123456789abcdef0123456789abcdef",
        "team": {"id": "T0TEAM1", "domain": "acme"},
        "channel": {"id": "C0CREATIVE", "name": "creative"},
        "message": {"type": "message", "ts": "1764700000.000100", "text": "Spring hero"},
        "response_url": "https://hooks.slack.com/actions/T0TEAM1/1/abc",
        "actions": [
            {
                "action_id": action_id,
                "block_id": "asset-actions",
                "text": {"type": "plain_text", "text": "Push to Lytics", "emoji": True},
                "value": value,
                "type": "button",
                "action_ts": "1764700010.123456",
            }
        ],
    }


def form(payload: Any) -> bytes:
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    return urlencode({"payload": raw}).encode()


def command(name: str = "/deploy", text: str = "spring-site") -> bytes:
    return urlencode(
        {
            "token": "legacy-verification-token",
            "team_id": "T0TEAM1",
            "team_domain": "acme",
            "channel_id": "C0CREATIVE",
            "channel_name": "creative",
            "user_id": "U0ANA1",
            "user_name": "ana",
            "command": name,
            "text": text,
            "api_app_id": "A0APP1",
            "response_url": "https://hooks.slack.com/commands/T0TEAM1/2/def",
            "trigger_id": "1764700020.4242.fedcba9876543210fedcba9876543210",
        }
    ).encode()


def post(
    bridge: Bridge,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    secret: str = SIGNING_SECRET,
) -> httpx.Response:
    sent = signed_headers(secret, body) if headers is None else headers
    return httpx.post(f"{bridge.web_url}/hooks/slack", content=body, headers=sent, timeout=10)


def assert_nothing_stored(bridge: Bridge) -> None:
    assert bridge.queued() == 0
    assert bridge.stored_events() == 0
    prefix = bridge.settings.key_prefix
    keys = [
        k
        for k in bridge.redis.scan_iter(match=f"{prefix}*", count=1000)
        if not k.startswith(f"{prefix}metrics:".encode())
    ]
    assert keys == []


def stored(bridge: Bridge, event_id: str) -> dict[str, Any]:
    raw = bridge.redis.get(f"{bridge.settings.key_prefix}event:{event_id}")
    assert isinstance(raw, bytes), f"no event {event_id} stored"
    found: dict[str, Any] = json.loads(raw)
    return found


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path, SLACK_SIGNING_SECRET=SIGNING_SECRET) as b:
        b.write_rule("push.yaml", RULE)
        b.write_rule("deploy.yaml", COMMAND_RULE)
        b.start_slack()
        b.start_web()
        yield b


# --- the signature scheme -----------------------------------------------------------------

# The worked example of docs.slack.dev/authentication/verifying-requests-from-slack.
DOC_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
DOC_STAMP = "1531420618"
DOC_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
    b"G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-"
    b"collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F3977"
    b"00885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d"
    b"10d2c447fce8b6703c"
)
DOC_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_slacks_worked_example_signs_and_verifies() -> None:
    assert sign_slack(DOC_SECRET, DOC_STAMP, DOC_BODY) == DOC_SIGNATURE
    headers = {"x-slack-request-timestamp": DOC_STAMP, "x-slack-signature": DOC_SIGNATURE}
    verify_slack(DOC_SECRET, headers, DOC_BODY, now=int(DOC_STAMP) + 299)
    with pytest.raises(SignatureError, match="301 s off; at most 300 s allowed"):
        verify_slack(DOC_SECRET, headers, DOC_BODY, now=int(DOC_STAMP) + 301)
    # What `bridge send` signs, slack_sdk's own verifier accepts.
    body = action_body(block_actions_payload("push_to_lytics", "1001"))
    assert SignatureVerifier(SIGNING_SECRET).is_valid_request(
        body, signed_headers(SIGNING_SECRET, body)
    )


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"x-slack-request-timestamp": "abc", "x-slack-signature": DOC_SIGNATURE}, "whole number"),
        (
            {"x-slack-request-timestamp": "\uff11\uff12\uff13", "x-slack-signature": DOC_SIGNATURE},
            "whole number",
        ),
        ({"x-slack-request-timestamp": DOC_STAMP, "x-slack-signature": "v1=ab"}, "must be v0="),
        ({"x-slack-request-timestamp": DOC_STAMP, "x-slack-signature": "v0=é"}, "must be v0="),
        ({"x-slack-request-timestamp": DOC_STAMP, "x-slack-signature": "v0=00"}, "does not match"),
    ],
)
def test_malformed_signature_headers_are_refused_never_an_exception(
    headers: dict[str, str], message: str
) -> None:
    with pytest.raises(SignatureError, match=message):
        verify_slack(DOC_SECRET, headers, DOC_BODY, now=int(DOC_STAMP))
    with pytest.raises(SignatureError, match="does not match"):
        not_utf8 = {"x-slack-request-timestamp": DOC_STAMP, "x-slack-signature": DOC_SIGNATURE}
        verify_slack(DOC_SECRET, not_utf8, b"\xff" + DOC_BODY, now=int(DOC_STAMP))


@pytest.mark.parametrize(
    ("action", "value"),
    [
        ({"type": "button", "value": "v1"}, "v1"),
        ({"type": "button"}, None),
        ({"type": "static_select", "selected_option": {"value": "high"}}, "high"),
        (
            {"type": "multi_static_select", "selected_options": [{"value": "a"}, {"value": "b"}]},
            ["a", "b"],
        ),
        ({"type": "datepicker", "selected_date": "2026-12-24"}, "2026-12-24"),
        ({"type": "users_select", "selected_user": "U0BEN2"}, "U0BEN2"),
    ],
)
def test_a_menus_choice_is_the_events_value(action: dict[str, Any], value: Any) -> None:
    payload = press()
    payload["actions"] = [{"action_id": "pick", "block_id": "b", **action}]
    [event] = action_events(payload)
    assert event.type == "slack.action.pick"
    assert event.data["value"] == value
    assert event.data["action_type"] == action["type"]


def test_action_ids_become_types_rules_can_name() -> None:
    assert type_word("push_to_lytics") == "push_to_lytics"
    assert type_word("Push to Lytics!") == "push_to_lytics_"
    assert type_word("approve.v2*[x]") == "approve_v2__x_"
    long = type_word("a" * 255)
    assert len(long) == 200 and long.startswith("a" * 191 + "_")
    assert long != type_word("a" * 254)
    for raw in ("Push to Lytics!", "a" * 255, "ü/é", "a b\n"):
        [event] = generic_events("t", {"type": "slack.action." + type_word(raw)}, None)
        assert event.type.count(".") == 2


# --- end to end ---------------------------------------------------------------------------


def test_a_signed_button_press_becomes_an_event_and_runs_its_rule(bridge: Bridge) -> None:
    bridge.start_worker()
    response = post(bridge, form(press()))
    assert response.status_code == 200
    assert response.content == b""  # Slack shows nothing, and keeps the message as it is
    [event_id] = response.headers["x-bridge-events"].split()
    messages = wait_for(lambda: bridge.slack.received("#creative"), what="a Slack message")
    assert [m["text"] for m in messages] == ["ana pushed asset asset-1001 to Lytics"]
    assert wait_for(lambda: bridge.trace_has(event_id, "run", status="succeeded"))
    event = Event.from_dict(stored(bridge, event_id))
    assert (event.source, event.type) == ("slack", "slack.action.push_to_lytics")
    assert event.subject == "C0CREATIVE/1764700000.000100"
    assert event.time == "2025-12-02T18:26:50.123Z"
    assert event.data == {
        "action_id": "push_to_lytics",
        "block_id": "asset-actions",
        "value": "asset-1001",
        "text": "Push to Lytics",
        "action_type": "button",
        "user": {"id": "U0ANA1", "name": "ana"},
        "channel": {"id": "C0CREATIVE", "name": "creative"},
        "message_ts": "1764700000.000100",
        "response_url": "https://hooks.slack.com/actions/T0TEAM1/1/abc",
        "trigger_id": "1764700010.4242.0123456789abcdef0123456789abcdef",
        "team": {"id": "T0TEAM1", "domain": "acme"},
    }


def test_a_retried_delivery_stores_nothing_new_and_posts_once(bridge: Bridge) -> None:
    bridge.start_worker()
    body = form(press())
    first = post(bridge, body)
    retried = post(bridge, body, {**signed_headers(SIGNING_SECRET, body), "x-slack-retry-num": "1"})
    assert (first.status_code, retried.status_code) == (200, 200)
    assert retried.headers["x-bridge-events"] == first.headers["x-bridge-events"]
    event_id = first.headers["x-bridge-events"]
    wait_for(lambda: bridge.trace_has(event_id, "run", status="succeeded"), what="the run")
    assert bridge.stored_events() == 1
    assert len(bridge.slack.received()) == 1
    assert len([e for e in bridge.trace(event_id) if e["kind"] == "evaluated"]) == 1
    # Another press of the same button (a new trigger) is another event.
    again = press()
    again["trigger_id"] = "1764700099.4242.99999999999999999999999999999999"
    again["actions"][0]["action_ts"] = "1764700099.000001"
    assert post(bridge, form(again)).status_code == 200
    assert bridge.stored_events() == 2


def test_a_slash_command_becomes_an_event_and_is_answered_only_to_its_sender(
    bridge: Bridge,
) -> None:
    bridge.start_worker()
    response = post(bridge, command("/Deploy", "spring-site"))
    assert response.status_code == 200
    assert response.json() == {
        "response_type": "ephemeral",
        "text": "Received /Deploy: lytbridge runs the rules on slack.command.deploy.",
    }
    event_id = response.headers["x-bridge-events"]
    messages = wait_for(lambda: bridge.slack.received("#creative"), what="a Slack message")
    assert [m["text"] for m in messages] == ["ana asked to deploy spring-site"]
    event = stored(bridge, event_id)
    assert (event["type"], event["subject"]) == ("slack.command.deploy", "C0CREATIVE")
    assert event["data"]["user"] == {"id": "U0ANA1", "name": "ana"}
    assert event["data"]["text"] == "spring-site"
    assert post(bridge, command("/Deploy", "spring-site")).headers["x-bridge-events"] == event_id
    assert bridge.stored_events() == 1


# --- refusals: nothing stored ---------------------------------------------------------------


def test_unsigned_forged_and_stale_requests_are_401_and_store_nothing(bridge: Bridge) -> None:
    body = form(press())
    unsigned = post(bridge, body, {"content-type": "application/x-www-form-urlencoded"})
    assert unsigned.status_code == 401
    assert unsigned.json() == {
        "error": "bad_signature",
        "message": "missing header X-Slack-Request-Timestamp, X-Slack-Signature",
    }
    forged = post(bridge, body, secret="another-apps-signing-secret")
    assert forged.status_code == 401
    assert forged.json() == {
        "error": "bad_signature",
        "message": "X-Slack-Signature does not match the body",
    }
    tampered = post(bridge, form(press(value="asset-6666")), signed_headers(SIGNING_SECRET, body))
    assert tampered.json()["message"] == "X-Slack-Signature does not match the body"
    stale = post(bridge, body, signed_headers(SIGNING_SECRET, body, int(time.time()) - 360))
    assert stale.status_code == 401
    assert stale.json() in [
        {
            "error": "bad_signature",
            "message": f"X-Slack-Request-Timestamp is {off} s off; at most 300 s allowed",
        }
        for off in (360, 361)
    ]
    assert_nothing_stored(bridge)


def test_without_a_signing_secret_the_endpoint_is_404(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    with running_bridge(redis_url, key_prefix, tmp_path) as b:
        b.start_web()
        response = post(b, form(press()))
        assert response.status_code == 404
        assert response.json() == {
            "error": "unknown_source",
            "message": "POST /hooks/slack is off: set SLACK_SIGNING_SECRET to your Slack "
            "app's signing secret (docs/slack.md)",
        }
        assert_nothing_stored(b)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b"team_id=T0TEAM1",
            "the form has neither 'payload' (a button press) nor 'command' (a slash command)",
        ),
        (
            form("{not json"),
            "the form field 'payload' holds no valid JSON: malformed JSON at "
            "line 1 column 2: Expecting property name enclosed in double quotes",
        ),
        (
            form(""),
            "the form field 'payload' holds no valid JSON: the body is empty; expected JSON",
        ),
        (form([press()]), "the form field 'payload' must hold a JSON object"),
        (
            form({**press(), "type": "view_submission"}),
            "payload type 'view_submission' is not "
            "supported; lytbridge takes block_actions (buttons, menus) and slash commands",
        ),
        (form({**press(), "actions": []}), "the payload's 'actions' must be a non-empty array"),
        (form({**press(), "actions": [{"value": "1"}]}), "actions[0] has no 'action_id'"),
        (
            form({**press(), "user": {"id": "U1", "name": "\ud800"}}),
            "'data.user.name' holds a lone surrogate (such as \\ud800); strings must be valid "
            "Unicode",
        ),
        (command("deploy"), "'command' must be a slash command such as /deploy, got 'deploy'"),
        (b"payload=%ff", "the body is not valid UTF-8"),
    ],
)
def test_bad_forms_are_400_with_the_reason_and_store_nothing(
    bridge: Bridge, body: bytes, message: str
) -> None:
    response = post(bridge, body)
    assert response.status_code == 400
    assert response.json() == {"error": "bad_event", "message": message}
    assert_nothing_stored(bridge)


def test_json_and_oversized_bodies_are_refused_before_the_signature(bridge: Bridge) -> None:
    body = json.dumps(press()).encode()
    headers = {**signed_headers(SIGNING_SECRET, body), "content-type": "application/json"}
    response = post(bridge, body, headers)
    assert response.status_code == 415
    assert response.json()["message"] == (
        "content type 'application/json' is not what Slack sends; expected "
        "application/x-www-form-urlencoded"
    )
    big = b"payload=" + b"a" * (1024 * 1024)
    assert post(bridge, big).status_code == 413
    assert_nothing_stored(bridge)


def test_slacks_certificate_check_is_answered_and_stores_nothing(bridge: Bridge) -> None:
    for body in (b"ssl_check=1&token=legacy-token", b"token=legacy-token&ssl_check=1"):
        response = post(bridge, body, {"content-type": "application/x-www-form-urlencoded"})
        assert (response.status_code, response.content) == (200, b"")
    # A command that says ssl_check is still a command: unsigned, it is refused.
    sneaky = command() + b"&ssl_check=1"
    response = post(bridge, sneaky, {"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 401
    assert_nothing_stored(bridge)


# --- bridge send --slack-action -------------------------------------------------------------


def test_bridge_send_slack_action_presses_a_button_on_a_running_bridge(
    bridge: Bridge, tmp_path: Path
) -> None:
    bridge.start_worker()
    env = {
        "PATH": "/usr/bin:/bin",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "REDIS_URL": bridge.env["REDIS_URL"],
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge.cli",
            "send",
            "--slack-action",
            "push_to_lytics",
            "--value",
            "asset-2002",
            "--url",
            bridge.web_url,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "200 (empty body, as Slack expects)"
    assert lines[1].startswith("see: bridge trace evt_")
    assert lines[2] == "sent the button 'push_to_lytics' (value 'asset-2002') as dev in #dev"
    messages = wait_for(lambda: bridge.slack.received("#creative"), what="a Slack message")
    assert [m["text"] for m in messages] == ["dev pushed asset asset-2002 to Lytics"]
    wrong = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge.cli",
            "send",
            "--slack-action",
            "push_to_lytics",
            "--url",
            bridge.web_url,
        ],
        cwd=tmp_path,
        env={**env, "SLACK_SIGNING_SECRET": "not-the-bridges"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert wrong.returncode == 1
    assert wrong.stdout.startswith("401 ")
    assert "not-the-bridges" not in wrong.stdout + wrong.stderr
    assert bridge.stored_events() == 1


# --- docs/events.md shows what the door makes ------------------------------------------------


def test_the_slack_examples_in_docs_events_md_are_what_the_door_makes() -> None:
    import re

    from bridge.ingress.slack import command_event, parse_form

    doc = (Path(__file__).resolve().parents[1] / "docs" / "events.md").read_text()
    section = doc.split("## Slack buttons and slash commands", 1)[1].split("\n## ", 1)[0]
    examples = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", section, re.DOTALL)]
    assert [e["type"] for e in examples] == ["slack.action.push_to_lytics", "slack.command.deploy"]
    assert examples[0] == action_events(press())[0].to_dict()
    made = command_event(parse_form(command("/deploy", "spring-site"))).to_dict()
    assert examples[1] == {**made, "time": examples[1]["time"]}
