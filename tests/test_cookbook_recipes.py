"""Cookbook recipes 9 and 10 of docs/rules.md, as the page shows them: each validates, passes
its rule test, and runs end to end (real Redis, a real worker, the sandboxes) posting what
the page says it posts."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.cli.main import main
from bridge.cli.report import trace_lines
from bridge.events import Event
from bridge.sandbox.lytho import create_lytho_app
from bridge.sandbox.lytics import create_lytics_app
from bridge.sandbox.server import ThreadedServer
from tests.helpers import Bridge, running_bridge, wait_for

DOCS = Path(__file__).resolve().parents[1] / "docs" / "rules.md"

VERDICT = "### 9. A proof's verdict → tag the asset and tell #marketing, or reply in its thread"
ACCOUNT = "### 10. A profile enters an audience → who it is, from Lytics and the CRM"


def section(heading: str) -> str:
    text = DOCS.read_text()
    start = text.index(heading)
    end = text.find("\n### ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def recipe(heading: str) -> dict[str, str]:
    """The recipe's files, by the path each yaml block names in its first line."""
    files = {}
    for block in re.findall(r"```yaml\n(.*?)```", section(heading), re.S):
        first = block.splitlines()[0]
        assert first.startswith("# rules/"), first
        files[first[2:].split(":")[0].strip()] = block
    return files


def shown_messages(heading: str) -> list[tuple[str, bool, str]]:
    """The `[slack sandbox]` lines of the recipe: (channel, in a thread, text)."""
    found = re.findall(
        r"^\[slack sandbox\] (#[\w-]+)( \(thread [\d.]+\))?: (.*)$", section(heading), re.M
    )
    return [(channel, bool(thread), text) for channel, thread, text in found]


def project(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "templates").mkdir(exist_ok=True)
    return tmp_path


@pytest.mark.parametrize(
    ("heading", "rule", "cases"),
    [
        (
            VERDICT,
            "proof-verdict",
            [
                "approved, so the asset is tagged and #marketing is told",
                "an asset already tagged approved is announced, not tagged again",
                "changes requested, so a message in the proof's thread",
                "a proof without a version (a hand-made event) is answered without one",
                "back in review, so nothing happens",
            ],
        ),
        (
            ACCOUNT,
            "high-value-account",
            [
                "a known profile with an account in the CRM",
                "a profile Lytics does not know is not announced",
                "another audience is not this rule's",
            ],
        ),
    ],
)
def test_the_recipe_validates_and_passes_its_rule_test(
    heading: str,
    rule: str,
    cases: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = recipe(heading)
    assert f"rules/{rule}.yaml" in files and f"rules/tests/{rule}.test.yaml" in files
    monkeypatch.chdir(project(tmp_path, files))
    for name in ("BRIDGE_RULES_DIR", "BRIDGE_TEMPLATES_DIR", "BRIDGE_VAR_CRM_API_URL"):
        monkeypatch.delenv(name, raising=False)
    assert main(["validate"]) == 0
    assert "ok: 1 rule(s) in rules" in capsys.readouterr().out
    assert main(["test"]) == 0
    out = capsys.readouterr().out
    ok = re.findall(r"^ok    rules/tests/[\w.-]+:\d+: (.*)$", out, re.M)
    assert ok == cases, out
    assert f"{len(cases)} passed, 0 failed" in out


# --- 9: a proof's verdict, against the Lytho DAM and Slack sandboxes -------------------------


def sandbox_state(server: ThreadedServer) -> Any:
    app: Any = server._server.config.app
    return app.state.sandbox


@pytest.fixture
def dam(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[tuple[Bridge, Any]]:
    lytho = ThreadedServer(create_lytho_app("lytho-test-key", rate_limit_per_minute=None))
    lytho.start()
    env = {
        "LYTHO_API_URL": f"{lytho.url}/v1/",
        "LYTHO_API_KEY": "lytho-test-key",
        # Lytho's 20 a minute, spaced, would make this test take a minute; the limiter is
        # tested in tests/clients.
        "BRIDGE_RATE_LIMIT_LYTHO": "1000/1s",
    }
    try:
        with running_bridge(redis_url, key_prefix, tmp_path, **env) as b:
            b.start_slack()
            b.start_web()
            yield b, sandbox_state(lytho)
    finally:
        lytho.stop()


def proof(
    event_id: str, n: int, name: str, status: str, version: int, asset: int
) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "lytho.proof.status_changed",
        "subject": str(n),
        "data": {
            "id": n,
            "projectId": 10,
            "name": name,
            "status": status,
            "version": version,
            "assetId": asset,
        },
    }


def ran(b: Bridge, event_id: str) -> None:
    run = wait_for(lambda: b.trace_has(event_id, "run"), timeout=30, what=f"the run of {event_id}")
    assert run is not None and run["status"] == "succeeded", b.trace(event_id)


def chosen(b: Bridge, event_id: str) -> Any:
    [entry] = [e for e in b.trace(event_id) if e["kind"] == "step" and e.get("uses") == "choose"]
    return entry["result"]["branch"]


def step_status(b: Bridge, event_id: str, step: str) -> list[str]:
    return [e["status"] for e in b.trace(event_id) if e["kind"] == "step" and e["step"] == step]


def tag_names(lytho: Any, asset_id: int) -> list[str]:
    return sorted(t["name"] for t in lytho.assets[str(asset_id)]["tags"])


def test_recipe_9_routes_each_verdict_to_its_branch(dam: tuple[Bridge, Any]) -> None:
    b, lytho = dam
    files = recipe(VERDICT)
    b.write_rule("proof-verdict.yaml", files["rules/proof-verdict.yaml"])
    b.start_worker()
    assert tag_names(lytho, 1004) == ["approved", "logo"]
    before_1003 = tag_names(lytho, 1003)

    events = [
        proof("pv-7", 7, "Hero visual v3", "approved", 3, 1001),
        proof("pv-10", 10, "Banner set v1", "approved", 1, 1004),
        proof("pv-8a", 8, "Story video v1", "changes_requested", 1, 1002),
        proof("pv-9", 9, "Flyer A5 v2", "rejected", 1, 1003),
    ]
    assert b.post(events).status_code == 202
    for event in events:
        ran(b, event["id"])
    # The second round of changes comes after the first: it replies in the proof's thread.
    second = proof("pv-8b", 8, "Story video v2", "changes_requested", 2, 1002)
    assert b.post(second).status_code == 202
    ran(b, "pv-8b")

    # Approved: the asset is read, tagged unless it already was, and #marketing is told.
    assert [chosen(b, e) for e in ("pv-7", "pv-10", "pv-8a", "pv-8b", "pv-9")] == [
        0,
        0,
        1,
        1,
        None,
    ]
    assert "approved" in tag_names(lytho, 1001)
    assert step_status(b, "pv-7", "tag") == ["succeeded"]
    assert step_status(b, "pv-10", "tag") == ["skipped"]
    assert tag_names(lytho, 1004) == ["approved", "logo"]
    assert tag_names(lytho, 1003) == before_1003  # rejected: nothing ran
    marketing = sorted(m["text"] for m in b.slack.received("#marketing"))
    assert marketing == [
        ":white_check_mark: *Brand logo* is approved and ready to use (proof Banner set v1, v1)",
        ":white_check_mark: *Spring campaign hero* is approved and ready to use "
        "(proof Hero visual v3, v3)",
    ]
    # Changes requested: the first message starts the proof's thread, the next replies in it.
    first, reply = b.slack.received("#creative")
    assert first.get("thread_ts") in (None, first["ts"])
    assert reply["thread_ts"] == first["ts"]
    assert [first["text"], reply["text"]] == [
        ":pencil2: Changes requested on *Story video v1* (v1): upload the next version to the "
        "same proof",
        ":pencil2: Changes requested on *Story video v2* (v2): upload the next version to the "
        "same proof",
    ]

    # What the page shows is what was posted (proof 7's message, proof 8's two)...
    posted = [
        ("#marketing", False, m["text"])
        for m in b.slack.received("#marketing")
        if "Hero visual" in m["text"]
    ] + [("#creative", False, first["text"]), ("#creative", True, reply["text"])]
    assert shown_messages(VERDICT) == posted
    # ... and what `bridge trace` prints for the rejected proof.
    raw: bytes = b.redis.get(f"{b.settings.key_prefix}event:pv-9")  # type: ignore[assignment]
    printed = trace_lines(Event.from_dict(json.loads(raw)), b.trace("pv-9"))
    at = next(i for i, line in enumerate(printed) if "choose proof-verdict/verdict" in line)
    shown = re.search(r"```\n(\d\d:\d\d:\d\d\.\d+  choose .*?)```", section(VERDICT), re.S)
    assert shown is not None
    doc = shown[1].rstrip("\n").splitlines()
    assert printed[at].split("  ", 1)[1] == doc[0].split("  ", 1)[1]
    assert printed[at + 1 : at + len(doc)] == doc[1:]


# --- 10: who entered the audience, from the Lytics sandbox and a CRM --------------------------


class Crm:
    """A CRM's accounts endpoint on 127.0.0.1: records each request, knows one account."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadedServer(
            Starlette(routes=[Route("/api/accounts", self._accounts, methods=["GET"])])
        )

    async def _accounts(self, request: Request) -> JSONResponse:
        email = request.query_params.get("email")
        with self._lock:
            self.requests.append(
                {"email": email, "accept": request.headers.get("accept"), "method": "GET"}
            )
        if email == "ada0@example.com":
            return JSONResponse({"accounts": [{"name": "Acme BV", "owner": "Noor Visser"}]})
        return JSONResponse({"accounts": []})

    def __enter__(self) -> Crm:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    @property
    def url(self) -> str:
        return self._server.url


@pytest.fixture
def audience(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[tuple[Bridge, Crm]]:
    lytics = ThreadedServer(create_lytics_app("lytics-test-token"))
    lytics.start()
    try:
        with Crm() as crm:
            env = {
                "LYTICS_API_URL": lytics.url,
                "LYTICS_API_TOKEN": "lytics-test-token",
                # The CRM of this environment: a local one, which the address guard must let in.
                "BRIDGE_VAR_CRM_API_URL": f"{crm.url}/api",
                "BRIDGE_HTTP_ALLOW": "127.0.0.1",
            }
            with running_bridge(redis_url, key_prefix, tmp_path, **env) as b:
                b.start_slack()
                b.start_web()
                yield b, crm
    finally:
        lytics.stop()


def entered(payload_id: str, uid: str, email: str, slug: str) -> dict[str, Any]:
    """Lytics' audience webhook for one profile entering a segment (docs/events.md)."""
    return {
        "id": payload_id,
        "data": {
            "_uid": uid,
            "email": email,
            "segment_events": [
                {"id": f"{payload_id}-se", "event": "segment_entered", "slug": slug, "enter": True}
            ],
        },
    }


def test_recipe_10_names_the_profile_and_its_crm_account_in_sales(
    audience: tuple[Bridge, Crm],
) -> None:
    b, crm = audience
    files = recipe(ACCOUNT)
    b.write_rule("vars.yaml", files["rules/vars.yaml"])
    b.write_rule("high-value-account.yaml", files["rules/high-value-account.yaml"])
    b.start_worker()
    hooks = [
        entered("hv-ada", "uid000", "ada0@example.com", "high_value_users"),
        entered("hv-dev", "uid003", "dev3@example.com", "high_value_users"),
        entered("hv-nobody", "uid999", "nobody@example.com", "high_value_users"),
        entered("hv-other", "uid000", "ada0@example.com", "cart_abandoners"),
    ]
    for hook in hooks:
        response = b.post(hook, source="lytics")
        assert response.status_code == 202, response.text
    for event_id in ("hv-ada-se", "hv-dev-se", "hv-nobody-se"):
        ran(b, event_id)
    other = wait_for(lambda: b.trace_has("hv-other-se", "evaluated"), what="the other segment")
    assert other is not None and other["matched"] == []  # another audience is not this rule's
    wait_for(lambda: b.queued() == 0, what="the queue to empty")

    sales = {m["text"] for m in b.slack.received("#sales")}
    assert sales == {text for _, _, text in shown_messages(ACCOUNT)}
    assert sales == {
        ":star: Ada Sample (ada0@example.com) entered *high_value_users* · account Acme BV, "
        "owner Noor Visser",
        ":star: Dev Sample (dev3@example.com) entered *high_value_users* · no account in the "
        "CRM yet",
    }
    # The CRM was asked once per known profile, by the e-mail Lytics has, as JSON.
    assert sorted(r["email"] for r in crm.requests) == ["ada0@example.com", "dev3@example.com"]
    assert {r["accept"] for r in crm.requests} == {"application/json"}
    # A profile Lytics does not know: found false, and both later steps skipped.
    lookup = b.trace_has("hv-nobody-se", "step", step="who", status="succeeded")
    assert lookup is not None and lookup["result"]["found"] is False
    assert step_status(b, "hv-nobody-se", "account") == ["skipped"]
    assert step_status(b, "hv-nobody-se", "tell") == ["skipped"]
    # The address came from the variable: the request the trace records went to the CRM.
    sent = b.trace_has("hv-ada-se", "step", step="account", status="succeeded")
    assert sent is not None
    assert sent["params"]["url"] == f"{crm.url}/api/accounts"
    assert sent["result"]["json"] == {"accounts": [{"name": "Acme BV", "owner": "Noor Visser"}]}
