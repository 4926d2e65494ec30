"""`bridge send --slack-action` / `--slack-command`: what Slack would send, signed, to a bridge.

A button press is a `block_actions` payload and a slash command a form, both as Slack posts
them to `POST /hooks/slack` (`application/x-www-form-urlencoded`), signed with the signing
secret: SLACK_SIGNING_SECRET, or the development one that `bridge dev` uses when none is set.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from typing import Any
from urllib.parse import urlencode

from bridge.cli.config import DEV_SLACK_SIGNING_SECRET

# Who presses and where, unless told otherwise (ids shaped like Slack's).
DEV_USER = {"id": "U0DEVUSER1", "username": "dev", "name": "dev", "team_id": "T0DEVTEAM1"}
DEV_TEAM = {"id": "T0DEVTEAM1", "domain": "lytbridge-dev"}
DEV_CHANNEL = {"id": "C0DEVCHAN1", "name": "dev"}


def _trigger_id() -> str:
    return f"{int(time.time())}.{secrets.randbelow(10**11)}.{secrets.token_hex(16)}"


def block_actions_payload(
    action_id: str,
    value: str | None = None,
    *,
    text: str | None = None,
    block_id: str = "actions",
    user: dict[str, str] | None = None,
    channel: dict[str, str] | None = None,
    message_ts: str | None = None,
    response_url: str | None = None,
) -> dict[str, Any]:
    """A `block_actions` payload for one button press, in the shape Slack sends."""
    now = time.time()
    channel = channel or DEV_CHANNEL
    message_ts = message_ts or f"{now - 60:.6f}"
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "block_id": block_id,
        "text": {"type": "plain_text", "text": text or action_id, "emoji": True},
        "action_ts": f"{now:.6f}",
    }
    if value is not None:
        button["value"] = value
    return {
        "type": "block_actions",
        "user": user or DEV_USER,
        "api_app_id": "A0DEVAPP01",
        "token": "unused-verification-token",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel["id"],
            "is_ephemeral": False,
        },
        "trigger_id": _trigger_id(),
        "team": DEV_TEAM,
        "channel": channel,
        "message": {"type": "message", "ts": message_ts, "text": text or action_id},
        "response_url": response_url
        or f"https://hooks.slack.com/actions/{DEV_TEAM['id']}/0/{secrets.token_hex(12)}",
        "actions": [button],
    }


def action_body(payload: dict[str, Any]) -> bytes:
    """The form body of an interactivity payload: `payload=<JSON>`."""
    return urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()


def command_body(command: str, text: str = "") -> bytes:
    """The form body of a slash command, in the fields Slack sends."""
    name = command if command.startswith("/") else f"/{command}"
    return urlencode(
        {
            "token": "unused-verification-token",
            "team_id": DEV_TEAM["id"],
            "team_domain": DEV_TEAM["domain"],
            "channel_id": DEV_CHANNEL["id"],
            "channel_name": DEV_CHANNEL["name"],
            "user_id": DEV_USER["id"],
            "user_name": DEV_USER["username"],
            "command": name,
            "text": text,
            "api_app_id": "A0DEVAPP01",
            "response_url": f"https://hooks.slack.com/commands/{DEV_TEAM['id']}/0/"
            + secrets.token_hex(12),
            "trigger_id": _trigger_id(),
        }
    ).encode()


def signed_headers(secret: str, body: bytes, stamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends with a body: content type, timestamp and v0 signature."""
    from bridge.ingress.signatures import sign_slack

    stamp = int(time.time()) if stamp is None else stamp
    return {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": str(stamp),
        "x-slack-signature": sign_slack(secret, stamp, body),
    }


def send_slack(args: argparse.Namespace, default_url: str) -> int:
    """POST a signed button press or slash command to the bridge; print what it answered."""
    import httpx

    from bridge.cli.config import companion_settings, redacted

    settings, state = companion_settings(redis=False)
    configured = settings.slack_signing_secret
    secret = configured.get() if configured else DEV_SLACK_SIGNING_SECRET
    if args.slack_action:
        payload = block_actions_payload(args.slack_action, args.value)
        body = action_body(payload)
        what = f"button {args.slack_action!r}" + (f" (value {args.value!r})" if args.value else "")
    else:
        command, _, text = args.slack_command.strip().partition(" ")
        body = command_body(command, text.strip())
        what = f"slash command {command}"
    base = args.url or (state.url if state else default_url)
    url = f"{base.rstrip('/')}/hooks/slack"
    response = httpx.post(url, content=body, headers=signed_headers(secret, body), timeout=10)
    shown = response.text or "(empty body, as Slack expects)"
    print(redacted(f"{response.status_code} {shown}", settings))
    if response.is_success:
        for event_id in response.headers.get("x-bridge-events", "").split():
            print(f"see: bridge trace {event_id}")
        print(f"sent the {what} as {DEV_USER['username']} in #{DEV_CHANNEL['name']}")
        return 0
    if response.status_code == 401:
        print(
            "the bridge refused the Slack signature: run bridge send in the folder of bridge "
            "dev, or set SLACK_SIGNING_SECRET to the bridge's",
            file=sys.stderr,
        )
    elif response.status_code == 404:
        print(
            "the bridge takes no Slack requests: set SLACK_SIGNING_SECRET there",
            file=sys.stderr,
        )
    return 1
