"""Wrong admin tokens are throttled per client address; logout ends a session; Secure cookies."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.web.auth import LOGIN_FAILURES, LOGIN_WINDOW
from tests.helpers import Bridge, running_bridge

TOKEN = "throttle-admin-token-0123456789"
WRONG = "wrong-guess-9876543210"
ATTACKER = "203.0.113.7"
OPERATOR = "198.51.100.9"


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path, BRIDGE_ADMIN_TOKEN=TOKEN) as b:
        b.start_web()
        yield b


def api(bridge: Bridge, token: str, address: str) -> httpx.Response:
    # The test server trusts its loopback peer as a proxy, as Heroku's router is trusted:
    # the last X-Forwarded-For entry is the client.
    headers = {"authorization": f"Bearer {token}", "x-forwarded-for": address}
    return httpx.get(f"{bridge.web_url}/api/rules", headers=headers, timeout=10)


def hidden(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found is not None
    return found[1]


def login(client: httpx.Client, token: str, **headers: str) -> httpx.Response:
    form = client.get("/login", headers=headers)
    return client.post("/login", data={"csrf": hidden(form.text), "token": token}, headers=headers)


def throttled_body(response: httpx.Response) -> dict[str, str]:
    wait = int(response.headers["retry-after"])
    assert 0 < wait <= LOGIN_WINDOW
    return {
        "error": "too_many_attempts",
        "message": f"too many wrong admin tokens from this address; try again in {wait} s",
    }


def test_wrong_bearer_tokens_are_throttled_per_address(
    bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.web.auth")
    for _ in range(LOGIN_FAILURES):
        assert api(bridge, WRONG, ATTACKER).status_code == 401

    # Now even the right token is refused from that address, without being judged.
    refused = api(bridge, TOKEN, ATTACKER)
    assert refused.status_code == 429
    assert refused.json() == throttled_body(refused)
    # Writing another address in front of the proxy's own entry changes nothing.
    spoofed = api(bridge, WRONG, f"192.0.2.1, {ATTACKER}")
    assert spoofed.status_code == 429
    for _ in range(5):
        assert api(bridge, WRONG, ATTACKER).status_code == 429

    # Another address is not held back: the right token works, a wrong one is a 401.
    assert api(bridge, TOKEN, OPERATOR).status_code == 200
    assert api(bridge, WRONG, OPERATOR).status_code == 401

    messages = [r.getMessage() for r in caplog.records if r.name == "bridge.web.auth"]
    wrong = [m for m in messages if m.startswith("wrong admin token")]
    refusals = [m for m in messages if m.startswith("refused")]
    assert len(wrong) == LOGIN_FAILURES + 1
    assert f"from {ATTACKER}: 10 of 10 allowed" in wrong[LOGIN_FAILURES - 1]
    # Seven refusals, one line: refusals are logged at a bounded rate.
    assert len(refusals) == 1 and refusals[0].startswith(
        f"refused admin API bearer token from {ATTACKER}: 10 wrong admin tokens"
    )
    assert not any(TOKEN in m or WRONG in m for m in messages)


def test_wrong_dashboard_logins_are_throttled_with_bearer_tries(bridge: Bridge) -> None:
    with httpx.Client(base_url=bridge.web_url, timeout=10) as client:
        as_attacker = {"x-forwarded-for": ATTACKER}
        for _ in range(LOGIN_FAILURES // 2):
            wrong = login(client, WRONG, **as_attacker)
            assert wrong.status_code == 401
            assert "That token is not BRIDGE_ADMIN_TOKEN." in wrong.text
        # Wrong logins and wrong bearer tokens draw on one allowance per address.
        for _ in range(LOGIN_FAILURES - LOGIN_FAILURES // 2):
            assert api(bridge, WRONG, ATTACKER).status_code == 401

        refused = login(client, TOKEN, **as_attacker)
        assert refused.status_code == 429
        wait = int(refused.headers["retry-after"])
        assert (
            f"Too many wrong admin tokens from this address; try again in {wait} s." in refused.text
        )
        assert "lytbridge_session" not in client.cookies
        assert TOKEN not in refused.text

        ok = login(client, TOKEN, **{"x-forwarded-for": OPERATOR})
        assert ok.status_code == 303
        assert "lytbridge_session" in client.cookies


def test_a_session_stops_working_after_logout(bridge: Bridge) -> None:
    with httpx.Client(base_url=bridge.web_url, timeout=10) as client:
        assert login(client, TOKEN).status_code == 303
        cookie = client.cookies["lytbridge_session"]
        page = client.get("/rules")
        assert page.status_code == 200
        assert client.post("/logout", data={"csrf": hidden(page.text)}).status_code == 303

    # The old cookie, kept by someone (a copied header, another tab), opens nothing.
    with httpx.Client(base_url=bridge.web_url, timeout=10) as stale:
        stale.cookies.set("lytbridge_session", cookie)
        assert stale.get("/rules").status_code == 303
        assert stale.get("/rules").headers["location"] == "/login?next=/rules"
        assert stale.get("/api/rules").status_code == 401
    # Other sessions are untouched by one logout.
    with httpx.Client(base_url=bridge.web_url, timeout=10) as other:
        assert login(other, TOKEN).status_code == 303
        assert other.get("/rules").status_code == 200


def test_the_session_cookie_is_secure_behind_an_https_router(bridge: Bridge) -> None:
    # Heroku's router ends TLS and says so in X-Forwarded-Proto. The test speaks plain
    # HTTP, where a client keeps Secure cookies to itself: the login form's cookie is sent
    # by hand, as a browser would send it over HTTPS.
    https = {"x-forwarded-proto": "https"}
    form = httpx.get(f"{bridge.web_url}/login", headers=https, timeout=10)
    assert "; secure" in form.headers["set-cookie"].lower()
    csrf = hidden(form.text)
    session = httpx.post(
        f"{bridge.web_url}/login",
        data={"csrf": csrf, "token": TOKEN},
        headers={**https, "cookie": f"lytbridge_login={csrf}"},
        timeout=10,
    )
    assert session.status_code == 303
    [cookie] = [
        v
        for k, v in session.headers.multi_items()
        if k == "set-cookie" and "lytbridge_session=" in v
    ]
    assert "; secure" in cookie.lower() and "httponly" in cookie.lower()
    with httpx.Client(base_url=bridge.web_url, timeout=10) as client:
        plain = login(client, TOKEN)
        assert plain.status_code == 303
        assert "secure" not in plain.headers["set-cookie"].lower()


def test_300_wrong_tokens_are_mostly_refused_and_logged_in_a_few_lines(
    bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.web.auth")
    with httpx.Client(base_url=bridge.web_url, timeout=10) as client:
        statuses = [
            client.get(
                "/api/rules",
                headers={"authorization": f"Bearer {WRONG}-{n}", "x-forwarded-for": ATTACKER},
            ).status_code
            for n in range(300)
        ]

    assert statuses == [401] * LOGIN_FAILURES + [429] * (300 - LOGIN_FAILURES)
    lines = [r.getMessage() for r in caplog.records if r.name == "bridge.web.auth"]
    # Ten wrong tokens, then the 1st, 100th and 200th of the 290 refusals.
    assert len(lines) == LOGIN_FAILURES + 3
    assert [line.split(" from ")[0] for line in lines[LOGIN_FAILURES:]] == [
        "refused admin API bearer token"
    ] * 3
    assert not any(WRONG in line for line in lines)
