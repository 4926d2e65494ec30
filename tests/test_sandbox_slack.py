"""The Slack sandbox: strict for tests (unknown and archived channels fail as in Slack), open
for `bridge dev` (every channel exists), and Block Kit printed as a person reads it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from bridge.cli.dev import dev_slack_sandbox
from bridge.sandbox.server import serve_in_thread
from bridge.sandbox.slack import DEFAULT_TOKEN, SlackSandbox, create_slack_app

AUTH = {"authorization": f"Bearer {DEFAULT_TOKEN}"}


@pytest.fixture
def open_sandbox() -> Iterator[tuple[SlackSandbox, str, list[tuple[str, str]]]]:
    created: list[tuple[str, str]] = []
    sandbox = SlackSandbox(strict=False, on_channel=lambda name, cid: created.append((name, cid)))
    with serve_in_thread(create_slack_app(sandbox)) as server:
        yield sandbox, f"{server.url}/api/chat.postMessage", created


def post(url: str, **args: object) -> dict[str, object]:
    answer = httpx.post(url, json=args, headers=AUTH)
    assert answer.status_code == 200
    body: dict[str, object] = answer.json()
    return body


def test_a_strict_sandbox_refuses_unknown_and_archived_channels() -> None:
    sandbox = SlackSandbox()
    with serve_in_thread(create_slack_app(sandbox)) as server:
        url = f"{server.url}/api/chat.postMessage"
        assert post(url, channel="#dam-ops", text="hi") == {
            "ok": False,
            "error": "channel_not_found",
        }
        assert post(url, channel="#old-campaigns", text="hi") == {
            "ok": False,
            "error": "is_archived",
        }
        assert post(url, channel="#creative", text="hi")["ok"] is True
    assert sandbox.received("#dam-ops") == [] and len(sandbox.received()) == 1


def test_an_open_sandbox_creates_a_channel_on_its_first_post(
    open_sandbox: tuple[SlackSandbox, str, list[tuple[str, str]]],
) -> None:
    sandbox, url, created = open_sandbox
    first = post(url, channel="#dam-ops", text="one")
    assert first["ok"] is True
    second = post(url, channel="dam-ops", text="two")
    reply = post(url, channel=first["channel"], thread_ts=first["ts"], text="in the thread")
    assert first["channel"] == second["channel"] == reply["channel"]
    assert created == [("dam-ops", first["channel"])]
    assert [m["text"] for m in sandbox.received("#dam-ops")] == ["one", "two", "in the thread"]
    # Ids and names a newcomer may use alike; known channels keep their ids.
    assert post(url, channel="C_ORDERS", text="x")["ok"] is True
    assert sandbox.channel_id("#creative") == "C00000003"
    assert [name for name, _ in created] == ["dam-ops", "C_ORDERS"]
    # What Slack would never take as a channel name is still refused.
    assert post(url, channel="#two words", text="x") == {"ok": False, "error": "channel_not_found"}


def test_bridge_dev_prints_the_text_of_block_kit_blocks(capsys: pytest.CaptureFixture[str]) -> None:
    sandbox = dev_slack_sandbox()
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "Proof approved"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Banner*\nby Ana"}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": "*Project*\n10"},
                {"type": "mrkdwn", "text": "*Version*\n2"},
            ],
            "accessory": {"type": "button", "text": {"type": "plain_text", "text": "Open"}},
        },
        {"type": "divider"},
        {
            "type": "context",
            "elements": [
                {"type": "image", "image_url": "https://x/y.png", "alt_text": "logo"},
                {"type": "mrkdwn", "text": "Lytho proof 9"},
            ],
        },
        {"type": "image", "image_url": "https://x/z.png", "alt_text": "the banner"},
        {
            "type": "actions",
            "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Approve"}}],
        },
        {
            "type": "rich_text",
            "elements": [
                {"type": "rich_text_section", "elements": [{"type": "text", "text": "rich"}]}
            ],
        },
        {"type": "video", "title": {"type": "plain_text", "text": "x"}},
    ]
    with serve_in_thread(create_slack_app(sandbox)) as server:
        url = f"{server.url}/api/chat.postMessage"
        first = post(
            url, channel="#dam-ops", text="Proof approved: Banner\nsecond line", blocks=blocks
        )
        post(url, channel=first["channel"], thread_ts=first["ts"], text="recorded")
    assert capsys.readouterr().out.splitlines() == [
        "[slack sandbox] #dam-ops created on its first post (in dev every channel exists; "
        "in Slack, invite the bot to it)",
        "[slack sandbox] #dam-ops: Proof approved: Banner",
        "  second line",
        "  │ Proof approved",
        "  │ *Banner*",
        "  │ by Ana",
        "  │ *Project* 10",
        "  │ *Version* 2",
        "  │ [Open]",
        "  │ ────────────────────────",
        "  │ [image: logo] · Lytho proof 9",
        "  │ [image: the banner]",
        "  │ [Approve]",
        "  │ rich",
        "  │ [video block]",
        f"[slack sandbox] #dam-ops (thread {first['ts']}): recorded",
    ]
