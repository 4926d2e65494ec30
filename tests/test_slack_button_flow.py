"""Issue 15, "buttons that act", as docs/slack.md shows it: a message with a "Push to Lytics"
button; pressing it (a signed Slack callback) runs lytics.collect and edits the message to
say who pressed it. Real web app, Redis, worker, Slack and Lytics sandboxes over loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.cli.slack_send import action_body, block_actions_payload, signed_headers
from bridge.sandbox.lytics import create_lytics_app
from bridge.sandbox.server import ThreadedServer
from tests.helpers import Bridge, running_bridge, wait_for

SIGNING_SECRET = "button-flow-signing-secret"
LYTICS_TOKEN = "lytics-button-flow-token"

TEMPLATE = """{
  "text": {{ ("Asset ready: " ~ data.name) | tojson }},
  "blocks": [
    {"type": "section",
     "text": {"type": "mrkdwn", "text": {{ ("*" ~ data.name ~ "* is ready") | tojson }}}},
    {"type": "actions", "block_id": "asset-actions", "elements": [
      {"type": "button", "action_id": "push_to_lytics", "style": "primary",
       "text": {"type": "plain_text", "text": "Push to Lytics"},
       "value": "{{ data.id }}"}
    ]}
  ]
}
"""

RULES = """
rules:
  - id: asset-ready
    on: lytho.asset.tagged
    when:
      - {path: data.added_tags, contains: ready}
    actions:
      - uses: slack.post
        with:
          channel: "#creative"
          message_key: "asset-{{ data.id }}"
          template: asset_ready.json.j2
  - id: push-asset-to-lytics
    on: slack.action.push_to_lytics
    actions:
      - uses: lytics.collect
        with:
          stream: lytho_assets
          data: {asset_id: "{{ data.value }}", pushed_by: "{{ data.user.name }}"}
      - uses: slack.post
        with:
          channel: "#creative"
          message_key: "asset-{{ data.value }}"
          text: "Asset {{ data.value }} pushed to Lytics by <@{{ data.user.id }}>"
"""


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    lytics = ThreadedServer(create_lytics_app(LYTICS_TOKEN))
    lytics.start()
    try:
        with running_bridge(
            redis_url,
            key_prefix,
            tmp_path,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            LYTICS_API_URL=lytics.url,
            LYTICS_API_TOKEN=LYTICS_TOKEN,
        ) as b:
            b.write_template("asset_ready.json.j2", TEMPLATE)
            b.write_rule("assets.yaml", RULES)
            b.start_slack()
            b.start_web()
            b.lytics_server = lytics  # type: ignore[attr-defined]
            yield b
    finally:
        lytics.stop()


def collected(bridge: Bridge) -> dict[str, list[dict[str, Any]]]:
    server = bridge.lytics_server  # type: ignore[attr-defined]
    found: dict[str, list[dict[str, Any]]] = server._server.config.app.state.sandbox.collected
    return found


def test_pressing_push_to_lytics_collects_and_edits_the_message(bridge: Bridge) -> None:
    bridge.start_worker()
    tagged = {
        "id": "tag-1001",
        "type": "lytho.asset.tagged",
        "data": {"id": 1001, "name": "Spring hero", "added_tags": ["ready"]},
    }
    assert bridge.post(tagged).status_code == 202
    [posted] = wait_for(lambda: bridge.slack.received("#creative"), what="the asset message")
    button = posted["blocks"][1]["elements"][0]
    assert (button["action_id"], button["value"]) == ("push_to_lytics", "1001")

    # Ana presses the button on that message: Slack's callback, signed.
    payload = block_actions_payload(
        button["action_id"],
        button["value"],
        text="Push to Lytics",
        block_id="asset-actions",
        user={"id": "U0ANA1", "username": "ana", "name": "ana", "team_id": "T0DEVTEAM1"},
        channel={"id": posted["channel"], "name": "creative"},
        message_ts=posted["ts"],
    )
    body = action_body(payload)
    answer = httpx.post(
        f"{bridge.web_url}/hooks/slack",
        content=body,
        headers=signed_headers(SIGNING_SECRET, body),
        timeout=10,
    )
    assert (answer.status_code, answer.content) == (200, b"")
    event_id = answer.headers["x-bridge-events"]
    run = wait_for(lambda: bridge.trace_has(event_id, "run"), timeout=30, what="the run")
    assert run is not None and run["status"] == "succeeded", json.dumps(bridge.trace(event_id))

    assert collected(bridge)["lytho_assets"] == [{"asset_id": "1001", "pushed_by": "ana"}]
    [message] = bridge.slack.received("#creative")  # the same message, edited
    assert message["ts"] == posted["ts"]
    assert message["text"] == "Asset 1001 pushed to Lytics by <@U0ANA1>"
    assert not message.get("blocks")  # the button is gone
