"""What the admin surface shows of a run: runs that succeeded with errors, the parameters a
step sent (never re-rendered), and never a configured secret, in any output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from markupsafe import escape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.operate.queries import NOT_RECORDED, NOT_RENDERED
from bridge.sandbox.server import ThreadedServer
from bridge.sandbox.slack import DEFAULT_TOKEN
from tests.helpers import SECRET, Bridge, running_bridge, wait_for

TOKEN = "outputs-admin-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}

RULE = """
id: announce
on: demo.thing
actions:
  - id: first
    uses: slack.post
    continue_on_error: true
    retry: {attempts: 1}
    with: {channel: "#CHANNEL", text: "first {{ data.name }}"}
  - id: second
    uses: slack.post
    with: {channel: "#creative", text: "Proof {{ data.name }} approved"}
"""


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path, BRIDGE_ADMIN_TOKEN=TOKEN) as b:
        b.start_slack()
        b.start_web()
        yield b


def get(bridge: Bridge, path: str) -> httpx.Response:
    response = httpx.get(f"{bridge.web_url}{path}", headers=AUTH, timeout=10)
    assert response.status_code == 200, (path, response.text[:300])
    return response


def outcome(bridge: Bridge, event_id: str) -> str:
    response = httpx.get(f"{bridge.web_url}/api/events/{event_id}", headers=AUTH, timeout=10)
    return str(response.json()["outcome"]) if response.status_code == 200 else ""


def bridge_cli(bridge: Bridge, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        env={**os.environ, **bridge.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- 11.3: a step that failed under continue_on_error is visible -----------------------


def test_a_run_with_a_continued_failure_shows_as_succeeded_with_errors(bridge: Bridge) -> None:
    bridge.write_rule("announce.yaml", RULE.replace("CHANNEL", "no-such-channel"))
    bridge.start_worker()
    assert (
        bridge.post({"id": "c-1", "type": "demo.thing", "data": {"name": "x"}}).status_code == 202
    )
    assert bridge.post({"id": "c-2", "type": "demo.other"}).status_code == 202
    wait_for(lambda: outcome(bridge, "c-1") == "succeeded_with_errors", what="the run's outcome")
    assert [m["text"] for m in bridge.slack.received("#creative")] == ["Proof x approved"]

    listed = {e["id"]: e["outcome"] for e in get(bridge, "/api/events").json()["events"]}
    assert listed["c-1"] == "succeeded_with_errors"

    def ids(query: str) -> list[str]:
        return [e["id"] for e in get(bridge, f"/api/events?{query}").json()["events"]]

    assert ids("outcome=succeeded_with_errors") == ["c-1"]
    assert ids("outcome=succeeded") == []
    assert ids("outcome=failed") == []

    page = get(bridge, "/events").text
    assert (
        '<span class="outcome outcome-succeeded_with_errors">succeeded with errors</span>' in page
    )
    assert '<option value="succeeded_with_errors" >succeeded with errors</option>' in page
    event_page = get(bridge, "/events/c-1").text
    assert "succeeded with errors" in event_page
    assert 'failed under continue_on_error: <span class="error">first</span>' in event_page

    printed = bridge_cli(bridge, "trace", "c-1")
    assert printed.returncode == 0, printed.stderr
    run_lines = [line for line in printed.stdout.splitlines() if "  run announce" in line]
    assert len(run_lines) == 1
    assert run_lines[0].endswith(
        "run announce  succeeded with errors  (failed under continue_on_error: first)"
    )
    assert any(
        "step announce/first slack.post  try 1  failed (continued)" in line
        for line in printed.stdout.splitlines()
    )


# --- 12.7: what a step sent, as it ran --------------------------------------------------


def test_the_event_page_shows_the_params_sent_not_a_new_rendering(bridge: Bridge) -> None:
    bridge.write_rule("announce.yaml", RULE.replace("CHANNEL", "creative"))
    bridge.start_worker()
    name = "<b>Tom & Jerry</b> <!channel>"
    assert (
        bridge.post({"id": "p-1", "type": "demo.thing", "data": {"name": name}}).status_code == 202
    )
    wait_for(lambda: outcome(bridge, "p-1") == "succeeded", what="the run")
    sent = [m["text"] for m in bridge.slack.received("#creative")]
    escaped = "Tom &amp; Jerry"
    assert sent == [
        f"first &lt;b&gt;{escaped}&lt;/b&gt; &lt;!channel&gt;",
        f"Proof &lt;b&gt;{escaped}&lt;/b&gt; &lt;!channel&gt; approved",
    ]

    # The rule changes after the run: the page still shows what was sent then.
    changed = RULE.replace("CHANNEL", "creative").replace("Proof", "Reworded")
    bridge.write_rule("announce.yaml", changed.replace("on:", "description: new wording\non:"))
    [rule] = get(bridge, "/api/rules").json()["rules"]
    assert rule["description"] == "new wording"  # the web process loaded the change
    actions = get(bridge, "/api/events/p-1").json()["actions"]
    assert [(a["step"], a["status"], a["with"]) for a in actions] == [
        ("first", "succeeded", {"channel": "#creative", "text": sent[0]}),
        ("second", "succeeded", {"channel": "#creative", "text": sent[1]}),
    ]
    assert actions[1]["result"]["ts"]
    page = get(bridge, "/events/p-1").text
    assert str(escape(f'"text": {json.dumps(sent[1])}')) in page
    assert "Reworded" not in page


def test_steps_traced_without_params_say_they_were_not_recorded(bridge: Bridge) -> None:
    # A trace written before steps recorded their params: matched, one step, done.
    key = f"{bridge.settings.key_prefix}trace:old-1"
    event = {"id": "old-1", "source": "demo", "type": "demo.thing", "time": "t", "data": {}}
    bridge.redis.set(f"{bridge.settings.key_prefix}event:old-1", json.dumps(event))
    bridge.redis.zadd(f"{bridge.settings.key_prefix}events", {"old-1": 1.7e12})
    for entry in (
        {"at": 1.7e9, "kind": "evaluated", "rules": [], "matched": ["gone"]},
        {"at": 1.7e9, "kind": "step", "rule": "gone", "step": "notify", "uses": "slack.post",
         "attempt": 1, "status": "succeeded", "result": {"ok": True}},
        {"at": 1.7e9, "kind": "step", "rule": "gone", "step": "tag", "uses": "lytho.tag_asset",
         "attempt": 1, "status": "skipped"},
        {"at": 1.7e9, "kind": "step", "rule": "gone", "step": "sync", "uses": "lytics.collect",
         "attempt": 1, "status": "failed", "continued": True, "error": "TemplateError: …"},
        {"at": 1.7e9, "kind": "run", "rule": "gone", "status": "succeeded"},
    ):  # fmt: skip
        bridge.redis.rpush(key, json.dumps(entry))

    body = get(bridge, "/api/events/old-1").json()
    assert body["outcome"] == "succeeded_with_errors"
    notify, tag, sync = body["actions"]
    assert notify["with"] is None and notify["not_recorded"] == NOT_RECORDED
    assert notify["result"] == {"ok": True}
    assert tag["skipped"] is True and "not_recorded" not in tag
    assert sync["with"] is None and sync["not_recorded"] == NOT_RENDERED
    assert sync["error"] == "TemplateError: …" and sync["continued"] is True
    page = get(bridge, "/events/old-1").text
    assert NOT_RECORDED in page
    assert "skipped (if: false): nothing was sent" in page


# --- 12.11: no configured secret in any output -----------------------------------------

SECRETS = {
    "SLACK_BOT_TOKEN": DEFAULT_TOKEN,
    "LYTICS_API_TOKEN": "lyt-tok-7f3a",
    "BRIDGE_ADMIN_TOKEN": TOKEN,
    "BRIDGE_WEBHOOK_SECRET": SECRET,
    "BRIDGE_WEBHOOK_SECRET_SHOP": "whsec_c2hvcC1vdXRwdXRz",
    "LYTHO_API_KEY": "lytho-key-9d2e",
    "LYTHO_CLIENT_SECRET": "lytho-cs-41aa",
}


def upstream_app() -> Starlette:
    async def fail(request: Request) -> Response:
        # An upstream that echoes credentials into its error body.
        echoed = " ".join(SECRETS.values())
        return JSONResponse({"message": f"boom Bearer {echoed}"}, status_code=400)

    return Starlette(routes=[Route("/fail", fail, methods=["POST"])])


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadedServer(upstream_app())
    server.start()
    yield server.url
    server.stop()


def every_output(bridge: Bridge, event_id: str) -> dict[str, str]:
    outputs = {
        path: get(bridge, path.replace("{id}", event_id)).text
        for path in (
            "/api/events",
            "/api/events/{id}",
            "/api/dead-letters",
            "/",
            "/events",
            "/events/{id}",
            "/dead-letters",
        )
    }
    printed = bridge_cli(bridge, "trace", event_id)
    assert printed.returncode == 0, printed.stderr
    outputs["bridge trace"] = printed.stdout + printed.stderr
    listed = bridge_cli(bridge, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert "dl_raw" in listed.stdout
    outputs["bridge dlq list"] = listed.stdout + listed.stderr
    outputs["worker log"] = bridge.worker_logs()
    return outputs


def test_no_configured_secret_appears_in_any_output(
    redis_url: str, key_prefix: str, tmp_path: Path, upstream: str
) -> None:
    env = {**SECRETS, "BRIDGE_HTTP_ALLOW": "127.0.0.1", "LYTHO_CLIENT_ID": "client-1"}
    with running_bridge(redis_url, key_prefix, tmp_path, **env) as bridge:
        bridge.write_rule(
            "forward.yaml",
            "id: forward\non: demo.thing\nactions:\n  - id: upstream\n    uses: http.post\n"
            f'    with: {{url: "{upstream}/fail", json: {{note: "{{{{ data.note }}}}"}}}}\n',
        )
        bridge.start_slack()
        bridge.start_web()
        bridge.start_worker()
        everything = " ".join(SECRETS.values())
        data = {"note": f"pasted {everything}", **{s: "as a key" for s in SECRETS.values()}}
        event = {"id": "s-1", "type": "demo.thing", "subject": everything, "data": data}
        assert bridge.post(event).status_code == 202
        [letter] = wait_for(bridge.dead_letters, what="the upstream's refusal")
        assert letter["error"].startswith("POST /fail → 400 Bad Request: boom Bearer **********")
        # The run's end (with the error) is traced after the dead letter: check it too.
        wait_for(lambda: bridge.trace_has("s-1", "run"), what="the run's end")

        # And records stored by something that did not mask them (an older version).
        raw_entry = {
            "at": 1.7e9,
            "kind": "step",
            "rule": "forward",
            "step": "old",
            "uses": "http.post",
            "attempt": 1,
            "status": "failed",
            "error": f"upstream said {everything}",
            "params": {s: s for s in SECRETS.values()},
        }
        bridge.redis.rpush(f"{key_prefix}trace:s-1", json.dumps(raw_entry))
        raw_letter = dict(letter, id="dl_raw", error=f"old {everything}", event=event)
        bridge.redis.hset(f"{key_prefix}dlq", "dl_raw", json.dumps(raw_letter))
        bridge.redis.zadd(f"{key_prefix}dlq:index", {"dl_raw": 1.7e9})

        outputs = every_output(bridge, "s-1")
        for where, text in outputs.items():
            for name, secret in SECRETS.items():
                assert secret not in text, f"{name} in {where}"
        assert "pasted **********" in outputs["/api/events/{id}"]
        assert '"**********":"as a key"' in outputs["/api/events/{id}"]
        assert "old **********" in outputs["/api/dead-letters"]
        assert "upstream said **********" in outputs["bridge trace"]
        assert "&#34;**********&#34;: &#34;as a key&#34;" in outputs["/events/{id}"]
