"""`bridge dev`'s /dev/slack page: a message with buttons; a press is a signed Slack callback
that becomes an event, runs the rules, and is shown (real web app, Redis, worker, Slack
sandbox over loopback)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.cli.dev_slack import DevSlackPage
from bridge.sandbox.server import ThreadedServer
from bridge.settings import Settings
from bridge.web.app import create_app
from tests.helpers import Bridge, running_bridge, wait_for

SIGNING_SECRET = "dev-page-test-signing-secret"

RULE = """
id: pushed-to-lytics
on: slack.action.push_to_lytics
actions:
  - uses: slack.post
    with:
      channel: "#creative"
      text: "{{ data.user.name }} pushed asset {{ data.value }} to Lytics"
"""

TEMPLATE = """{
  "text": {{ ("Asset ready: " ~ data.name) | tojson }},
  "blocks": [
    {"type": "section", "text": {"type": "mrkdwn", "text": {{ ("*" ~ data.name ~ "*") | tojson }}}},
    {"type": "actions", "block_id": "asset-{{ data.id }}", "elements": [
      {"type": "button", "action_id": "push_to_lytics", "value": "{{ data.id }}",
       "text": {"type": "plain_text", "text": "Push <to> Lytics"}, "style": "primary"}
    ]}
  ]
}
"""


@pytest.fixture
def page(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[tuple[Bridge, str]]:
    with running_bridge(
        redis_url, key_prefix, tmp_path, SLACK_SIGNING_SECRET=SIGNING_SECRET
    ) as bridge:
        bridge.write_rule("push.yaml", RULE)
        bridge.start_slack()
        server = ThreadedServer(DevSlackPage(create_app(Settings.from_env(bridge.env))))
        server.start()
        try:
            yield bridge, server.url
        finally:
            server.stop()


def forms(text: str) -> list[dict[str, str]]:
    """The hidden fields of each button's form on the page."""
    found = []
    for form in re.findall(r"<form .*?</form>", text, re.DOTALL):
        fields = re.findall(r'name="([^"]+)" value="([^"]*)"', form)
        found.append({name: html.unescape(value) for name, value in fields})
    return found


def test_pressing_a_templates_button_runs_the_rule_and_shows_what_happened(
    page: tuple[Bridge, str],
) -> None:
    bridge, url = page
    bridge.write_template("asset_ready.json.j2", TEMPLATE)
    bridge.start_worker()
    shown = httpx.get(f"{url}/dev/slack", timeout=10)
    assert shown.status_code == 200
    assert "asset_ready.json.j2" in shown.text
    assert "Push &lt;to&gt; Lytics" in shown.text  # the label, escaped
    [button] = forms(shown.text)
    assert (button["action_id"], button["value"], button["block_id"]) == (
        "push_to_lytics",
        "1001",
        "asset-1001",
    )
    pressed = httpx.post(f"{url}/dev/slack/press", data=button, timeout=30)
    assert pressed.status_code == 200
    [event_id] = re.findall(r"bridge trace (evt_[0-9a-f]+)", pressed.text)
    assert "run pushed-to-lytics  succeeded" in pressed.text
    messages = wait_for(lambda: bridge.slack.received("#creative"), what="a Slack message")
    assert [m["text"] for m in messages] == ["dev pushed asset 1001 to Lytics"]
    assert bridge.trace_has(event_id, "run", status="succeeded") is not None


def test_without_a_template_the_page_shows_a_demo_message_to_press(
    page: tuple[Bridge, str],
) -> None:
    _, url = page
    shown = httpx.get(f"{url}/dev/slack", timeout=10)
    assert "a demo message" in shown.text
    assert [f["action_id"] for f in forms(shown.text)] == ["push_to_lytics", "dismiss"]


def test_a_press_without_the_pages_token_stores_nothing(page: tuple[Bridge, str]) -> None:
    bridge, url = page
    shown = httpx.get(f"{url}/dev/slack", timeout=10)
    button = {**forms(shown.text)[0], "token": "guessed"}
    pressed = httpx.post(f"{url}/dev/slack/press", data=button, timeout=10)
    assert "this page is out of date: reload it" in pressed.text
    assert bridge.stored_events() == 0
