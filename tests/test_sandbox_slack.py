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


@pytest.fixture
def strict() -> Iterator[tuple[SlackSandbox, str]]:
    sandbox = SlackSandbox()
    with serve_in_thread(create_slack_app(sandbox)) as server:
        yield sandbox, f"{server.url}/api"


def test_replies_name_an_existing_parent_and_are_recorded_with_it(
    strict: tuple[SlackSandbox, str],
) -> None:
    sandbox, api = strict
    parent = post(f"{api}/chat.postMessage", channel="#creative", text="proof 7: in review")
    channel, ts = parent["channel"], parent["ts"]
    reply = post(f"{api}/chat.postMessage", channel=channel, thread_ts=ts, text="changes")
    broadcast = post(
        f"{api}/chat.postMessage",
        channel="#creative",
        thread_ts=reply["ts"],  # a reply's ts names its thread, as in Slack
        text="approved",
        reply_broadcast=True,
    )
    assert reply["message"]["thread_ts"] == broadcast["message"]["thread_ts"] == ts  # type: ignore[index]
    assert broadcast["message"]["subtype"] == "thread_broadcast"  # type: ignore[index]
    assert "subtype" not in reply["message"]  # type: ignore[operator]
    stored = sandbox.find(str(channel), str(ts))
    assert stored is not None
    assert (stored["thread_ts"], stored["reply_count"], stored["latest_reply"]) == (
        ts,
        2,
        broadcast["ts"],
    )
    # A thread_ts that names no message is refused, and nothing is posted.
    assert post(f"{api}/chat.postMessage", channel=channel, thread_ts="1.000001", text="x") == {
        "ok": False,
        "error": "thread_not_found",
    }
    assert len(sandbox.received()) == 3
    lines = sandbox.describe(sandbox.received()[2])
    assert lines == [f"#creative (thread {ts}, also sent to the channel): approved"]


def test_a_deleted_parent_takes_no_reply_and_a_deleted_message_no_edit(
    strict: tuple[SlackSandbox, str],
) -> None:
    sandbox, api = strict
    parent = post(f"{api}/chat.postMessage", channel="#creative", text="parent")
    reply = post(
        f"{api}/chat.postMessage", channel=parent["channel"], thread_ts=parent["ts"], text="r"
    )
    gone = httpx.delete(
        f"{api.removesuffix('/api')}/_sandbox/messages/{parent['channel']}/{parent['ts']}"
    )
    assert gone.status_code == 200
    again = httpx.delete(
        f"{api.removesuffix('/api')}/_sandbox/messages/{parent['channel']}/{parent['ts']}"
    )
    assert again.status_code == 404
    assert again.json() == {"error": f"no message {parent['ts']} in {parent['channel']}"}
    assert post(
        f"{api}/chat.postMessage", channel=parent["channel"], thread_ts=parent["ts"], text="x"
    ) == {"ok": False, "error": "thread_not_found"}
    assert post(
        f"{api}/chat.update", channel=parent["channel"], ts=parent["ts"], text="edited"
    ) == {"ok": False, "error": "message_not_found"}
    assert post(f"{api}/chat.getPermalink", channel=parent["channel"], message_ts=parent["ts"]) == {
        "ok": False,
        "error": "message_not_found",
    }
    # Its replies stay, as in Slack.
    assert [m["ts"] for m in sandbox.received()] == [reply["ts"]]
    assert [m["text"] for m in sandbox.deleted] == ["parent"]


def test_chat_update_edits_the_bots_own_message_in_place(
    strict: tuple[SlackSandbox, str],
) -> None:
    sandbox, api = strict
    seen: list[dict[str, object]] = []
    sandbox.on_message = seen.append
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Spring hero*"}}]
    first = post(f"{api}/chat.postMessage", channel="#creative", text="in review", blocks=blocks)
    channel, ts = first["channel"], first["ts"]
    answer = post(f"{api}/chat.update", channel=channel, ts=ts, text="approved", blocks=[])
    assert answer["ok"] is True
    assert (answer["channel"], answer["ts"], answer["text"]) == (channel, ts, "approved")
    message = answer["message"]
    assert isinstance(message, dict)
    assert message["text"] == "approved" and "blocks" not in message  # [] removes them
    assert message["edited"]["user"] == "U0LYTBRIDGE"
    [stored] = sandbox.received()
    assert stored["text"] == "approved" and stored["history"] == [
        {"text": "in review", "blocks": blocks}
    ]
    # What `bridge dev` prints, and the request log, show the edit.
    assert sandbox.describe(stored) == ["#creative (edited): approved"]
    assert [m["text"] for m in seen] == ["in review", "approved"]
    update = [r for r in sandbox.requests if r["path"] == "/api/chat.update"]
    assert [(r["status"], r["channel"], r["ts"]) for r in update] == [(200, channel, ts)]


def test_chat_update_refuses_as_slack_does(strict: tuple[SlackSandbox, str]) -> None:
    sandbox, api = strict
    base = api.removesuffix("/api")
    mine = post(f"{api}/chat.postMessage", channel="#creative", text="mine")
    theirs = httpx.post(
        f"{base}/_sandbox/messages", json={"channel": "#creative", "text": "a person's"}
    ).json()
    channel = mine["channel"]
    assert theirs["channel"] == channel
    update = f"{api}/chat.update"
    assert post(update, channel=channel, ts=theirs["ts"], text="x") == {
        "ok": False,
        "error": "cant_update_message",
    }
    # chat.update needs the channel id chat.postMessage answered, not the #name.
    assert post(update, channel="#creative", ts=mine["ts"], text="x") == {
        "ok": False,
        "error": "channel_not_found",
    }
    assert post(update, channel=channel, ts="1.000009", text="x") == {
        "ok": False,
        "error": "message_not_found",
    }
    assert post(update, channel=channel, ts=mine["ts"]) == {"ok": False, "error": "no_text"}
    assert post(update, channel=channel, ts=mine["ts"], text="x", blocks=[{"no": 1}]) == {
        "ok": False,
        "error": "invalid_blocks",
    }
    refused = httpx.post(update, json={"channel": channel, "ts": mine["ts"], "text": "x"})
    assert refused.json() == {"ok": False, "error": "not_authed"}
    # A scenario for chat.update answers in Slack's shape; nothing changed meanwhile.
    httpx.post(
        f"{base}/_sandbox/scenario",
        json={"kind": "rate_limit", "method": "chat.update", "retry_after": 3},
    )
    limited = httpx.post(
        update, json={"channel": channel, "ts": mine["ts"], "text": "x"}, headers=AUTH
    )
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "3")
    assert [m["text"] for m in sandbox.received()] == ["mine", "a person's"]


def test_chat_get_permalink_links_a_message_and_a_reply(strict: tuple[SlackSandbox, str]) -> None:
    _, api = strict
    parent = post(f"{api}/chat.postMessage", channel="#creative", text="parent")
    channel, ts = str(parent["channel"]), str(parent["ts"])
    reply = post(f"{api}/chat.postMessage", channel=channel, thread_ts=ts, text="reply")
    # slack-sdk sends chat.getPermalink as a GET with query parameters.
    answer = httpx.get(
        f"{api}/chat.getPermalink", params={"channel": channel, "message_ts": ts}, headers=AUTH
    )
    assert answer.json() == {
        "ok": True,
        "channel": channel,
        "permalink": f"https://sandbox.slack.local/archives/{channel}/p{ts.replace('.', '')}",
    }
    linked = post(f"{api}/chat.getPermalink", channel=channel, message_ts=reply["ts"])
    assert linked["permalink"] == (
        f"https://sandbox.slack.local/archives/{channel}/p{str(reply['ts']).replace('.', '')}"
        f"?thread_ts={ts}&cid={channel}"
    )
    assert post(f"{api}/chat.getPermalink", channel="C_NONE", message_ts=ts) == {
        "ok": False,
        "error": "channel_not_found",
    }


def test_what_a_hook_adds_to_a_message_is_served_but_not_answered() -> None:
    # The benchmarks stamp when each message arrived (bench/baselines.py slack_app).
    def stamp(record: dict[str, object]) -> None:
        record["received_at"] = 1.5

    sandbox = SlackSandbox(on_message=stamp)
    with serve_in_thread(create_slack_app(sandbox)) as server:
        answer = post(f"{server.url}/api/chat.postMessage", channel="#creative", text="hi")
        listed = httpx.get(f"{server.url}/_sandbox/messages").json()["messages"]
    assert "received_at" not in answer["message"]  # Slack's answer has no such field
    assert [m["received_at"] for m in listed] == [1.5]
