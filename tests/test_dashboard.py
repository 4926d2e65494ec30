"""The dashboard: login, CSRF, pages, and a real headless Chromium clicking through them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.sandbox.slack import DEFAULT_TOKEN
from bridge.web.auth import SESSION_SECONDS, new_session_cookie, read_session
from tests.helpers import Bridge, running_bridge, wait_for

TOKEN = "dashboard-admin-token-0123456789"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

RULE = """
id: proof-approved-to-slack
description: "Tell #creative when a proof is approved"
on: lytho.proof.status_changed
when:
  - {path: data.status, eq: approved}
  - any:
      - {path: data.tags, contains: hero}
      - data.priority == "high"
actions:
  - id: notify
    uses: slack.post
    with: {channel: "#CHANNEL", text: "Proof {{ data.name }} approved"}
"""


def proof(event_id: str, status: str = "approved", **data: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "lytho.proof.status_changed",
        "data": {"status": status, "name": "Banner", "tags": ["hero"], **data},
    }


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path, BRIDGE_ADMIN_TOKEN=TOKEN) as b:
        b.write_rule("proof.yaml", RULE.replace("CHANNEL", "creative"))
        b.start_slack()
        b.start_web()
        yield b


def outcome(bridge: Bridge, event_id: str) -> str:
    response = httpx.get(
        f"{bridge.web_url}/api/events/{event_id}", headers={"authorization": f"Bearer {TOKEN}"}
    )
    return str(response.json()["outcome"]) if response.status_code == 200 else ""


def hidden(html: str, name: str = "csrf") -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found is not None, f"no hidden {name} field"
    return found[1]


@contextmanager
def logged_in(bridge: Bridge) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=bridge.web_url, timeout=10) as client:
        form = client.get("/login")
        response = client.post("/login", data={"csrf": hidden(form.text), "token": TOKEN})
        assert response.status_code == 303
        yield client


# --- over HTTP --------------------------------------------------------------------------


def test_login_sets_a_signed_http_only_session(bridge: Bridge) -> None:
    with httpx.Client(base_url=bridge.web_url, timeout=10) as client:
        page = client.get("/rules")
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=/rules"
        form = client.get("/login?next=/rules")
        assert form.status_code == 200
        csrf = hidden(form.text)

        assert client.post("/login", data={"token": TOKEN}).status_code == 403  # no CSRF
        wrong = client.post("/login", data={"csrf": csrf, "token": "nope", "next": "/rules"})
        assert wrong.status_code == 401
        assert "That token is not BRIDGE_ADMIN_TOKEN." in wrong.text
        assert "lytbridge_session" not in client.cookies

        ok = client.post("/login", data={"csrf": csrf, "token": TOKEN, "next": "/rules"})
        assert ok.status_code == 303 and ok.headers["location"] == "/rules"
        cookie = ok.headers["set-cookie"]
        assert cookie.startswith("lytbridge_session=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert TOKEN not in cookie
        rules = client.get("/rules")
        assert rules.status_code == 200
        assert "proof-approved-to-slack" in rules.text

        client.post("/logout", data={"csrf": hidden(rules.text)})
        assert client.get("/rules").status_code == 303


def test_login_never_redirects_to_another_site(bridge: Bridge) -> None:
    with httpx.Client(base_url=bridge.web_url, timeout=10) as client:
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            csrf = hidden(client.get("/login").text)
            response = client.post("/login", data={"csrf": csrf, "token": TOKEN, "next": target})
            assert response.headers["location"] == "/"


def test_forged_or_expired_sessions_are_refused() -> None:
    cookie, session = new_session_cookie(TOKEN, now=1_000_000)
    assert read_session(TOKEN, cookie, now=1_000_100) == session
    assert read_session(TOKEN, cookie, now=1_000_000 + SESSION_SECONDS + 1) is None
    assert read_session("another-token", cookie, now=1_000_100) is None
    payload, signature = cookie.rsplit(".", 1)
    assert read_session(TOKEN, payload + "x." + signature, now=1_000_100) is None
    assert read_session(TOKEN, "garbage", now=1_000_100) is None


def test_a_forged_cookie_leads_to_the_login(bridge: Bridge) -> None:
    forged, _ = new_session_cookie("not-the-token")
    response = httpx.get(f"{bridge.web_url}/events", cookies={"lytbridge_session": forged})
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login")


def test_every_post_needs_the_sessions_csrf_token(bridge: Bridge) -> None:
    assert bridge.post(proof("x-1", "draft")).status_code == 202
    with logged_in(bridge) as client:
        for path in ("/events/x-1/replay", "/dead-letters/dl_x/drop", "/logout"):
            response = client.post(path, data={"csrf": "forged"})
            assert response.status_code == 403
            assert "Form expired" in response.text
        page = client.get("/events/x-1")
        replay = client.post("/events/x-1/replay", data={"csrf": hidden(page.text)})
        assert replay.status_code == 303
        assert re.match(r"/events/x-1\?flash=replayed&run=replay-\d+$", replay.headers["location"])


def test_pages_carry_security_headers_and_no_secret(bridge: Bridge) -> None:
    bridge.start_worker()
    assert bridge.post(proof("s-1", "draft", note=f"{DEFAULT_TOKEN} {TOKEN}")).status_code == 202
    wait_for(lambda: outcome(bridge, "s-1") == "unmatched", what="the evaluation")
    with logged_in(bridge) as client:
        for path in ("/", "/rules", "/events", "/events/s-1", "/dead-letters"):
            page = client.get(path)
            assert page.status_code == 200, path
            assert DEFAULT_TOKEN not in page.text and TOKEN not in page.text, path
            assert page.headers["content-security-policy"].startswith("default-src 'none'")
            assert page.headers["x-frame-options"] == "DENY"
            assert page.headers["cache-control"] == "no-store"
        assert "********** **********" in client.get("/events/s-1").text


def test_the_bearer_token_opens_the_pages_too(bridge: Bridge) -> None:
    response = httpx.get(f"{bridge.web_url}/rules", headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert "proof-approved-to-slack" in response.text


def test_an_unknown_event_is_a_404_page(bridge: Bridge) -> None:
    with logged_in(bridge) as client:
        response = client.get("/events/nope")
        assert response.status_code == 404
        assert "No event &#39;nope&#39; is stored" in response.text


# --- in a real browser ------------------------------------------------------------------


@pytest.fixture
def browser_page(bridge: Bridge) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                base_url=bridge.web_url, viewport={"width": 1280, "height": 900}
            )
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
            context.close()
        finally:
            browser.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def tiles(page: Any) -> str:
    """The overview's numbers after a reload, one line: `2 events in 24 h 1 rule matches …`."""
    page.reload()
    return str(page.locator(".tiles").inner_text()).replace("\n", " ")


def log_in(page: Any) -> None:
    page.goto("/")
    assert page.url.endswith("/login?next=/")
    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    assert page.locator("p.error").inner_text() == "That token is not BRIDGE_ADMIN_TOKEN."
    shot(page, "login")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    assert page.locator("h1").inner_text() == "Overview"


@pytest.mark.browser
def test_browser_overview_rules_events_and_a_trace(bridge: Bridge, browser_page: Any) -> None:
    page = browser_page
    bridge.start_worker()
    assert bridge.post(proof("p-1")).status_code == 202
    assert bridge.post(proof("p-2", "draft", tags=["banner"])).status_code == 202
    wait_for(lambda: outcome(bridge, "p-1") == "succeeded", what="p-1's run")
    wait_for(lambda: outcome(bridge, "p-2") == "unmatched", what="p-2's evaluation")

    log_in(page)
    # The worker's counts arrive with its next flush (every 2 s).
    wait_for(lambda: "2 events in 24 h" in tiles(page), what="the overview's numbers")
    assert "1 rule matches in 24 h" in tiles(page)
    assert page.locator("figure.chart rect.bar-events").count() == 24
    assert "2 events" in page.locator("figure.chart").first.inner_text()
    shot(page, "overview")

    page.click("nav >> text=Rules")
    row = page.locator("tr[data-rule=proof-approved-to-slack]")
    assert "Tell #creative when a proof is approved" in row.inner_text()
    assert row.locator("td.num").first.inner_text() == "1"
    assert "The rule files are valid." in page.locator(".status").inner_text()
    shot(page, "rules")

    page.click("nav >> text=Events")
    rows = page.locator("#events tbody tr")
    assert [rows.nth(i).locator("td").first.inner_text() for i in range(2)] == ["p-2", "p-1"]
    page.select_option("select[name=outcome]", "succeeded")
    page.click("form.filters button")
    page.wait_for_url("**/events?*outcome=succeeded*")
    assert page.locator("#events tbody tr").count() == 1
    page.click("nav >> text=Events")
    # The list refreshes by itself: a new event shows up without a reload.
    assert bridge.post(proof("p-3", "draft")).status_code == 202
    page.locator("#events tbody tr", has_text="p-3").wait_for()
    shot(page, "events")

    page.click("#events >> text=p-1")
    page.wait_for_url("**/events/p-1")
    assert "succeeded" in page.locator("h1").inner_text()
    tree = page.locator(".rule-eval.ok").inner_text()
    assert "✓ rule proof-approved-to-slack" in tree
    assert re.search(r'✓\s*data\.status\s*eq\s*"approved"\s*actual\s*"approved"', tree)
    assert re.search(r'✓\s*data\.tags\s*contains\s*"hero"', tree)
    attempt = page.locator("table.attempts tbody tr").first.inner_text()
    assert "notify" in attempt and "succeeded" in attempt and re.search(r"\d+(\.\d+)? ms", attempt)
    assert '"text": "Proof Banner approved"' in page.locator("table.actions").inner_text()
    shot(page, "trace-matched")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("text=Replay")
    page.wait_for_url("**/events/p-1?flash=replayed*")
    assert page.locator(".flash").inner_text().startswith("Queued again as run replay-")
    wait_for(lambda: len(bridge.slack.received("#creative")) == 2, what="the replayed message")

    page.goto("/events/p-2")
    tree = page.locator(".rule-eval.fail").inner_text()
    assert "✗ rule proof-approved-to-slack" in tree
    assert re.search(r'✗\s*data\.tags\s*contains\s*"hero"\s*actual\s*\["banner"\]', tree)
    shot(page, "trace-unmatched")
    assert TOKEN not in page.content() and DEFAULT_TOKEN not in page.content()


@pytest.mark.browser
def test_browser_dead_letters_retry_and_drop(bridge: Bridge, browser_page: Any) -> None:
    page = browser_page
    bridge.write_rule("proof.yaml", RULE.replace("CHANNEL", "no-such-channel"))
    bridge.start_worker()
    assert bridge.post(proof("d-1")).status_code == 202
    assert bridge.post(proof("d-2")).status_code == 202
    letters = wait_for(lambda: len(found := bridge.dead_letters()) == 2 and found, what="letters")
    by_event = {letter["event_id"]: letter["id"] for letter in letters}

    log_in(page)
    wait_for(lambda: "2 dead letters" in tiles(page), what="the dead-letter tile")
    page.click("nav >> text=Dead letters")
    assert page.locator("table.letters tbody tr").count() == 2
    assert "channel_not_found" in page.locator("table.letters").inner_text()
    shot(page, "dead-letters")

    # A rule file breaks: the rules page says so, and the last good set keeps running.
    bridge.write_rule("broken.yaml", "id: broken\non: x\nwhen:\n  - {path: data.a, equals: 1}\n")
    page.click("nav >> text=Rules")
    failures = page.locator("tr[data-rule=proof-approved-to-slack] td.num").nth(1)
    wait_for(lambda: page.reload() is not None and failures.inner_text() == "2", what="failures")
    status = page.locator(".status.fail").inner_text()
    assert "the last good rule set is still running" in status
    assert "broken.yaml:4:" in status
    shot(page, "rules-invalid")
    (bridge.rules_dir / "broken.yaml").unlink()

    bridge.write_rule("proof.yaml", RULE.replace("CHANNEL", "creative"))
    wait_for(lambda: bridge.worker_logs().count("loaded 1 rules") >= 2, what="the fixed rule")
    page.click("nav >> text=Dead letters")
    page.locator(f"tr[data-letter={by_event['d-1']}] >> text=Retry").click()
    page.wait_for_url("**/dead-letters?flash=retried*")
    assert by_event["d-1"] in page.locator(".flash").inner_text()
    wait_for(lambda: bridge.slack.received("#creative"), what="the retried message")

    dialogs: list[str] = []

    def dismiss_then_accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss() if len(dialogs) == 1 else dialog.accept()

    page.on("dialog", dismiss_then_accept)
    drop = page.locator(f"tr[data-letter={by_event['d-2']}] >> text=Drop")
    drop.click()  # dismissed: nothing happens
    assert page.locator("table.letters tbody tr").count() == 1
    drop.click()
    page.wait_for_url("**/dead-letters?flash=dropped*")
    assert dialogs[0].startswith(f"Drop dead letter {by_event['d-2']}?")
    assert page.locator("table.letters tbody tr.empty").inner_text() == "No dead letters."
    assert bridge.dead_letters() == []
    shot(page, "dead-letters-empty")
