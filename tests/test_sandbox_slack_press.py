"""The Slack sandbox as Slack's interactivity sender: a button of a message the bridge
posted is pressed through `POST /_sandbox/press`, and the sandbox sends the signed
`block_actions` callback Slack would to the bridge's `POST /hooks/slack` (real web app,
Redis, worker and sandbox over loopback); a retried delivery, a wrong signing secret, and
presses of buttons that do not exist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.sandbox.server import serve_in_thread
from bridge.sandbox.slack import DEFAULT_TOKEN, SlackSandbox, create_slack_app
from bridge.sandbox.slack_press import sign
from tests.helpers import Bridge, running_bridge, wait_for

ROOT = Path(__file__).resolve().parents[1]
SIGNING_SECRET = "press-through-the-sandbox-signing-secret"
AUTH = {"authorization": f"Bearer {DEFAULT_TOKEN}"}
DOC_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
DOC_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
    b"G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-"
    b"collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F3977"
    b"00885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d"
    b"10d2c447fce8b6703c"
)
DOC_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"

TEMPLATE = """{
  "text": {{ ("Asset ready: " ~ data.name) | tojson }},
  "blocks": [
    {"type": "section",
     "text": {"type": "mrkdwn", "text": {{ ("*" ~ data.name ~ "* is ready") | tojson }}}},
    {"type": "actions", "block_id": "asset-actions", "elements": [
      {"type": "button", "action_id": "push_to_lytics", "style": "primary",
       "text": {"type": "plain_text", "text": "Push to Lytics"},
       "value": "{{ data.id }}"},
      {"type": "button", "action_id": "dismiss",
       "text": {"type": "plain_text", "text": "Dismiss"}, "value": "{{ data.id }}"}
    ]}
  ]
}
"""

RULES = """
rules:
  - id: asset-ready
    on: lytho.asset.tagged
    actions:
      - uses: slack.post
        with:
          channel: "#creative"
          message_key: "asset-{{ data.id }}"
          template: asset_ready.json.j2
  - id: pressed
    on: slack.action.push_to_lytics
    actions:
      - uses: slack.post
        with:
          channel: "#creative"
          message_key: "asset-{{ data.value }}"
          text: "Asset {{ data.value }} pushed by {{ data.user.name }} (<@{{ data.user.id }}>)"
"""

BUTTONS: list[dict[str, Any]] = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "*Spring hero* is ready"}},
    {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "action_id": "push_to_lytics",
                "text": {"type": "plain_text", "text": "Push to Lytics"},
                "value": "1001",
            }
        ],
    },
]


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path, SLACK_SIGNING_SECRET=SIGNING_SECRET) as b:
        b.write_template("asset_ready.json.j2", TEMPLATE)
        b.write_rule("assets.yaml", RULES)
        b.start_slack()
        b.start_web()
        # Slack's app settings: the Request URL and the signing secret. No 3 s limit here:
        # a loaded test machine must not turn a slow answer into a failed test.
        b.slack.interactivity_url = f"{b.web_url}/hooks/slack"
        b.slack.signing_secret = SIGNING_SECRET
        b.slack.interactivity_timeout = 60.0
        yield b


def press(bridge: Bridge, **fields: Any) -> httpx.Response:
    return httpx.post(f"{bridge.slack_url}/_sandbox/press", json=fields, timeout=70)


def bot_message(slack_url: str, blocks: list[dict[str, Any]] = BUTTONS) -> dict[str, Any]:
    """A message with a button, posted by the bot straight through the Web API."""
    answer = httpx.post(
        f"{slack_url}/api/chat.postMessage",
        json={"channel": "#creative", "text": "Spring hero is ready", "blocks": blocks},
        headers=AUTH,
    ).json()
    assert answer["ok"] is True, answer
    found: dict[str, Any] = answer
    return found


def callbacks(sandbox: SlackSandbox) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests if r.get("direction") == "out"]


def test_a_press_through_the_sandbox_runs_the_rule_that_edits_the_message(
    bridge: Bridge,
) -> None:
    bridge.start_worker()
    tagged = {"id": "tag-1001", "type": "lytho.asset.tagged", "data": {"id": 1001, "name": "Hero"}}
    assert bridge.post(tagged).status_code == 202
    [posted] = wait_for(lambda: bridge.slack.received("#creative"), what="the asset message")

    answer = press(
        bridge, channel="#creative", ts=posted["ts"], action_id="push_to_lytics", user="ana"
    )
    assert answer.status_code == 200, answer.text
    sent = answer.json()
    assert (sent["ok"], sent["status"], sent["body"], sent["error"]) == (True, 200, "", None)
    event_id = sent["headers"]["x-bridge-events"]

    # What Slack documents for a block_actions payload, about the message pressed.
    payload = sent["payload"]
    assert payload["type"] == "block_actions"
    assert payload["container"] == {
        "type": "message",
        "message_ts": posted["ts"],
        "channel_id": posted["channel"],
        "is_ephemeral": False,
    }
    assert payload["channel"] == {"id": posted["channel"], "name": "creative"}
    assert payload["user"]["name"] == payload["user"]["username"] == "ana"
    assert payload["message"]["ts"] == posted["ts"]
    assert payload["message"]["blocks"] == posted["blocks"]
    [action] = payload["actions"]
    assert {k: action[k] for k in ("action_id", "block_id", "value", "type")} == {
        "action_id": "push_to_lytics",
        "block_id": "asset-actions",
        "value": "1001",
        "type": "button",
    }
    assert action["text"] == {"type": "plain_text", "text": "Push to Lytics"}
    assert payload["response_url"].startswith(f"{bridge.slack_url}/_sandbox/respond/")

    run = wait_for(lambda: bridge.trace_has(event_id, "run"), timeout=30, what="the run")
    assert run is not None and run["status"] == "succeeded", json.dumps(bridge.trace(event_id))
    [message] = bridge.slack.received("#creative")  # the same message, edited
    user_id = payload["user"]["id"]
    assert (message["ts"], message["text"]) == (
        posted["ts"],
        f"Asset 1001 pushed by ana (<@{user_id}>)",
    )
    assert not message.get("blocks")
    # The sandbox's request log holds the callback and the bridge's answer.
    [logged] = callbacks(bridge.slack)
    assert (logged["path"], logged["status"], logged["retry_num"]) == (
        f"{bridge.web_url}/hooks/slack",
        200,
        0,
    )


def test_a_retried_delivery_is_stored_once(bridge: Bridge) -> None:
    posted = bot_message(bridge.slack_url)
    first = press(bridge, channel=posted["channel"], ts=posted["ts"], action_id="push_to_lytics")
    assert first.json()["status"] == 200
    event_id = first.json()["headers"]["x-bridge-events"]
    assert (bridge.stored_events(), bridge.queued()) == (1, 1)

    # Slack thought the answer too slow and delivers the same press again, twice.
    url = f"{bridge.slack_url}/_sandbox/press/retry"
    for num in (1, 2):
        again = httpx.post(url, json={"reason": "http_timeout"}, timeout=70).json()
        assert (again["status"], again["retry_num"]) == (200, num)
        assert again["headers"]["x-bridge-events"] == event_id
    assert (bridge.stored_events(), bridge.queued()) == (1, 1)
    assert [r["retry_num"] for r in callbacks(bridge.slack)] == [0, 1, 2]


def test_a_sandbox_with_a_wrong_signing_secret_is_refused_and_nothing_is_stored(
    bridge: Bridge,
) -> None:
    posted = bot_message(bridge.slack_url)
    settings = {"url": f"{bridge.web_url}/hooks/slack", "signing_secret": "not-the-bridge-secret"}
    configured = httpx.post(f"{bridge.slack_url}/_sandbox/interactivity", json=settings)
    assert configured.json() == {"url": settings["url"], "signing_secret": "set"}

    sent = press(bridge, channel="#creative", ts=posted["ts"], action_id="push_to_lytics").json()
    assert (sent["ok"], sent["status"]) == (False, 401)
    assert json.loads(sent["body"]) == {
        "error": "bad_signature",
        "message": "X-Slack-Signature does not match the body",
    }
    assert (bridge.stored_events(), bridge.queued()) == (0, 0)


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A Request URL that keeps what it gets and answers 200 at once."""
    got: list[tuple[dict[str, str], bytes]] = []

    async def take(request: Request) -> Response:
        got.append((dict(request.headers), await request.body()))
        return Response(status_code=200)

    with serve_in_thread(Starlette(routes=[Route("/hooks/slack", take, methods=["POST"])])) as s:
        yield f"{s.url}/hooks/slack", got


@pytest.fixture
def sandbox_url(receiver: tuple[str, list[Any]]) -> Iterator[str]:
    sandbox = SlackSandbox(interactivity_url=receiver[0], signing_secret=SIGNING_SECRET)
    sandbox.interactivity_timeout = 60.0
    with serve_in_thread(create_slack_app(sandbox)) as server:
        yield server.url


def test_unknown_messages_and_buttons_are_404_and_nothing_is_sent(
    sandbox_url: str, receiver: tuple[str, list[Any]]
) -> None:
    posted = bot_message(sandbox_url)
    url = f"{sandbox_url}/_sandbox/press"
    ts = posted["ts"]
    nope = httpx.post(url, json={"channel": "#creative", "ts": ts, "action_id": "nope"})
    assert (nope.status_code, nope.json()) == (
        404,
        {"error": f"message {ts} in #creative has no button 'nope' (its buttons: push_to_lytics)"},
    )
    gone = httpx.post(url, json={"channel": "#creative", "ts": "1.000001", "action_id": "x"})
    assert (gone.status_code, gone.json()) == (404, {"error": "no message 1.000001 in #creative"})
    bad = httpx.post(url, content=b"channel=#creative")
    assert (bad.status_code, bad.json()) == (
        400,
        {"error": "send JSON: {channel, ts, action_id, user}"},
    )
    retry = httpx.post(f"{url}/retry", json={})
    assert (retry.status_code, retry.json()) == (
        409,
        {"error": "no callback sent yet: press a button first (POST /_sandbox/press)"},
    )
    assert receiver[1] == []


def test_the_callback_is_signed_as_slack_signs_and_its_response_url_edits_the_message(
    sandbox_url: str, receiver: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    # Slack's worked example (docs.slack.dev/authentication/verifying-requests-from-slack).
    assert sign(DOC_SECRET, "1531420618", DOC_BODY) == DOC_SIGNATURE
    posted = bot_message(sandbox_url)
    fields = {"channel": "#creative", "ts": posted["ts"], "action_id": "push_to_lytics"}
    sent = httpx.post(f"{sandbox_url}/_sandbox/press", json=fields, timeout=70).json()
    assert sent["status"] == 200
    httpx.post(f"{sandbox_url}/_sandbox/press/retry", json={"reason": "http_error"}, timeout=70)
    [(headers, body), (retry_headers, retry_body)] = receiver[1]
    verifier = SignatureVerifier(SIGNING_SECRET)
    assert verifier.is_valid_request(body, headers)
    assert verifier.is_valid_request(retry_body, retry_headers)
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert "x-slack-retry-num" not in headers
    assert (retry_headers["x-slack-retry-num"], retry_headers["x-slack-retry-reason"]) == (
        "1",
        "http_error",
    )
    assert retry_body == body
    [raw] = parse_qs(body.decode())["payload"]
    payload = json.loads(raw)
    assert payload == sent["payload"]
    # A block sent without a block_id gets one, the same on every press.
    assert payload["actions"][0]["block_id"]
    assert payload["user"]["id"] == "U0PERSON1"

    done = httpx.post(
        payload["response_url"], json={"replace_original": True, "text": "Pushed by person"}
    )
    assert done.json() == {"ok": True}
    messages = httpx.get(f"{sandbox_url}/_sandbox/messages").json()["messages"]
    assert [(m["ts"], m["text"], "blocks" in m) for m in messages] == [
        (posted["ts"], "Pushed by person", False)
    ]
    [response] = httpx.get(f"{sandbox_url}/_sandbox/responses").json()["responses"]
    assert response["body"] == {"replace_original": True, "text": "Pushed by person"}
    expired = httpx.post(f"{sandbox_url}/_sandbox/respond/nope", json={"text": "x"})
    assert (expired.status_code, expired.json()) == (404, {"ok": False, "error": "expired_url"})


@pytest.mark.slow
def test_bridge_dev_aims_its_slack_sandbox_at_itself(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """In `bridge dev`, a button of a message the bridge posted is pressed through the
    sandbox's control, and the press reaches dev's own POST /hooks/slack, signed."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "rules" / "assets.yaml").write_text(RULES)
    (tmp_path / "templates" / "asset_ready.json.j2").write_text(TEMPLATE)
    event = {"id": "tag-1001", "type": "lytho.asset.tagged", "data": {"id": 1001, "name": "Hero"}}
    (tmp_path / "tagged.json").write_text(json.dumps(event))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BRIDGE_", "SLACK_", "LYTHO_", "LYTICS_", "REDIS_"))
    }
    env |= {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "REDIS_URL": redis_url}
    env |= {"BRIDGE_KEY_PREFIX": key_prefix}
    output = tmp_path / "dev.out"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "dev", "--port", "0"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        hint = wait_for(
            lambda: [x for x in output.read_text().splitlines() if "/_sandbox/press" in x],
            timeout=60,
            what="bridge dev to start",
        )
        assert hint[0].startswith("[dev] or press one in the sandbox: POST http://127.0.0.1:")
        sandbox = hint[0].split("POST ", 1)[1].split("/_sandbox/press", 1)[0]
        sent = subprocess.run(
            [sys.executable, "-m", "bridge.cli", "send", "tagged.json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr

        def messages() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = httpx.get(f"{sandbox}/_sandbox/messages").json()[
                "messages"
            ]
            return found

        # dev prints, under a message with buttons, what the control takes to press one.
        [line] = wait_for(
            lambda: [x for x in output.read_text().splitlines() if x.startswith("  press: ")],
            timeout=30,
            what="the asset message",
        )
        fields, also = line.removeprefix("  press: ").split(" (or action_id ")
        assert also == "dismiss)"
        [posted] = messages()
        assert json.loads(fields) == {
            "channel": posted["channel"],
            "ts": posted["ts"],
            "action_id": "push_to_lytics",
        }
        press = {**json.loads(fields), "user": "ana"}
        answer = httpx.post(f"{sandbox}/_sandbox/press", json=press, timeout=10)
        assert answer.json()["status"] == 200, answer.text
        user_id = answer.json()["payload"]["user"]["id"]
        edited = f"Asset 1001 pushed by ana (<@{user_id}>)"
        wait_for(lambda: messages()[0]["text"] == edited, timeout=30, what="the edit")
        printed = output.read_text().splitlines()
        assert "[slack sandbox] button 'push_to_lytics' pressed: answered 200" in printed
        assert f"[slack sandbox] #creative (edited): {edited}" in printed
    finally:
        process.terminate()
        assert process.wait(30) == 0
