"""Wrong admin tokens are throttled per client address; logout ends a session; Secure cookies."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bridge.errors import ConfigError
from bridge.settings import Settings
from bridge.web.throttle import LOGIN_FAILURES, LOGIN_WINDOW
from tests.helpers import Bridge, running_bridge

TOKEN = "throttle-admin-token-0123456789"
WRONG = "wrong-guess-9876543210"
ATTACKER = "203.0.113.7"
OPERATOR = "198.51.100.9"


@contextmanager
def start(
    redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str
) -> Iterator[Bridge]:
    # The web runs as `bridge web` does, with uvicorn's proxy_headers off: the app sees the
    # connection's own address and BRIDGE_TRUSTED_PROXIES alone decides whom to believe.
    monkeypatch.delenv("DYNO", raising=False)
    with running_bridge(redis_url, key_prefix, tmp_path, BRIDGE_ADMIN_TOKEN=TOKEN, **env) as b:
        b.start_web()
        yield b


@pytest.fixture
def bridge(
    redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bridge]:
    """A bridge behind a proxy on loopback: the test plays the proxy and names the client."""
    proxy = {"BRIDGE_TRUSTED_PROXIES": "127.0.0.1/32"}
    with start(redis_url, key_prefix, tmp_path, monkeypatch, **proxy) as b:
        yield b


@pytest.fixture
def direct(
    redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bridge]:
    """A bridge with no trusted proxy (the default): clients connect to it directly."""
    with start(redis_url, key_prefix, tmp_path, monkeypatch) as b:
        yield b


def api(bridge: Bridge, token: str, address: str) -> httpx.Response:
    # The test server trusts its loopback peer as a proxy (BRIDGE_TRUSTED_PROXIES): the
    # last X-Forwarded-For entry is the client.
    headers = {"authorization": f"Bearer {token}", "x-forwarded-for": address}
    return httpx.get(f"{bridge.web_url}/api/rules", headers=headers, timeout=10)


def from_loopback(last_byte: int) -> httpx.HTTPTransport:
    """Connect from another loopback address (127.0.0.x): another client to the server."""
    return httpx.HTTPTransport(local_address=f"127.0.0.{last_byte}")


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
    caplog.set_level(logging.INFO, logger="bridge.web.throttle")
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

    messages = [r.getMessage() for r in caplog.records if r.name == "bridge.web.throttle"]
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
    caplog.set_level(logging.INFO, logger="bridge.web.throttle")
    with httpx.Client(base_url=bridge.web_url, timeout=10) as client:
        statuses = [
            client.get(
                "/api/rules",
                headers={"authorization": f"Bearer {WRONG}-{n}", "x-forwarded-for": ATTACKER},
            ).status_code
            for n in range(300)
        ]

    assert statuses == [401] * LOGIN_FAILURES + [429] * (300 - LOGIN_FAILURES)
    lines = [r.getMessage() for r in caplog.records if r.name == "bridge.web.throttle"]
    # Ten wrong tokens, then the 1st, 100th and 200th of the 290 refusals.
    assert len(lines) == LOGIN_FAILURES + 3
    assert [line.split(" from ")[0] for line in lines[LOGIN_FAILURES:]] == [
        "refused admin API bearer token"
    ] * 3
    assert not any(WRONG in line for line in lines)


def test_concurrent_wrong_tokens_get_exactly_the_allowance(direct: Bridge) -> None:
    # Each try is booked in one Lua script before its token is compared: 200 wrong tokens
    # at once from one address are 10 checked (401) and 190 refused (429), never more 401s.
    async def attack() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=direct.web_url, timeout=30, limits=limits) as c:
            answers = await asyncio.gather(
                *(
                    c.get("/api/rules", headers={"authorization": f"Bearer {WRONG}-{n}"})
                    for n in range(200)
                )
            )
        return [a.status_code for a in answers]

    statuses = Counter(asyncio.run(attack()))
    assert statuses == {401: LOGIN_FAILURES, 429: 200 - LOGIN_FAILURES}

    # Another address is not held back, and the right token was never counted.
    with httpx.Client(base_url=direct.web_url, transport=from_loopback(2), timeout=10) as other:
        for _ in range(3):
            assert other.get("/api/rules", headers=bearer(TOKEN)).status_code == 200
        assert other.get("/api/rules", headers=bearer(WRONG)).status_code == 401
    failures = direct.redis.get(f"{direct.settings.key_prefix}auth:failures:127.0.0.2")
    assert failures == b"1"


def test_right_tokens_are_not_counted(bridge: Bridge) -> None:
    for _ in range(LOGIN_FAILURES - 1):
        assert api(bridge, WRONG, ATTACKER).status_code == 401
    for _ in range(5):
        assert api(bridge, TOKEN, ATTACKER).status_code == 200
    assert api(bridge, WRONG, ATTACKER).status_code == 401
    assert api(bridge, TOKEN, ATTACKER).status_code == 429


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", **headers}


def test_x_forwarded_for_is_ignored_without_a_trusted_proxy(direct: Bridge) -> None:
    # A client on the LAN, behind Docker's proxy or on loopback cannot pick its address.
    with httpx.Client(base_url=direct.web_url, timeout=10) as client:
        statuses = [
            client.get(
                "/api/rules", headers=bearer(WRONG, **{"x-forwarded-for": f"203.0.113.{i}"})
            ).status_code
            for i in range(40)
        ]
        assert statuses == [401] * LOGIN_FAILURES + [429] * (40 - LOGIN_FAILURES)
        # Nor can it lock out another client by naming that client's address.
        assert direct.redis.exists(f"{direct.settings.key_prefix}auth:failures:203.0.113.0") == 0
    with httpx.Client(base_url=direct.web_url, transport=from_loopback(3), timeout=10) as other:
        assert other.get("/api/rules", headers=bearer(TOKEN)).status_code == 200


def test_a_trusted_proxy_names_the_client_in_the_last_entry(bridge: Bridge) -> None:
    for i in range(LOGIN_FAILURES):
        # Whatever a client writes in front of the proxy's entry, in one line or several.
        prefix = f"192.0.2.{i}, 198.51.100.{i}"
        assert api(bridge, WRONG, f"{prefix}, {ATTACKER}").status_code == 401
    headers = [
        ("authorization", f"Bearer {TOKEN}"),
        ("x-forwarded-for", OPERATOR),
        ("x-forwarded-for", f"192.0.2.77, {ATTACKER}"),
    ]
    refused = httpx.get(f"{bridge.web_url}/api/rules", headers=headers, timeout=10)
    assert refused.status_code == 429
    # The header's last entry across its lines is the client: here the operator's.
    headers.reverse()
    ok = httpx.get(f"{bridge.web_url}/api/rules", headers=headers, timeout=10)
    assert ok.status_code == 200
    # A connection not from the trusted proxy is judged by its own address.
    with httpx.Client(base_url=bridge.web_url, transport=from_loopback(4), timeout=10) as other:
        spoof = {"x-forwarded-for": OPERATOR}
        for _ in range(LOGIN_FAILURES):
            assert other.get("/api/rules", headers=bearer(WRONG, **spoof)).status_code == 401
        assert other.get("/api/rules", headers=bearer(TOKEN, **spoof)).status_code == 429
    assert api(bridge, TOKEN, OPERATOR).status_code == 200


def test_on_heroku_the_router_is_trusted_by_default(
    redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Heroku sets DYNO; every request comes through its router, whose entry is the last.
    with start(redis_url, key_prefix, tmp_path, monkeypatch, DYNO="web.1") as heroku:
        for _ in range(LOGIN_FAILURES):
            assert api(heroku, WRONG, f"{OPERATOR}, {ATTACKER}").status_code == 401
        assert api(heroku, TOKEN, ATTACKER).status_code == 429
        assert api(heroku, TOKEN, f"{ATTACKER}, {OPERATOR}").status_code == 200


def test_trusted_proxies_are_networks_or_a_config_error() -> None:
    settings = Settings.from_env({"BRIDGE_TRUSTED_PROXIES": " 10.0.0.0/8, 192.0.2.7,fd00::/8 "})
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "192.0.2.7/32", "fd00::/8"]
    assert not settings.on_heroku
    assert Settings.from_env({}).trusted_proxies == ()
    assert Settings.from_env({"DYNO": "web.1"}).on_heroku
    with pytest.raises(
        ConfigError, match=re.escape("BRIDGE_TRUSTED_PROXIES has value '10.0.0.0/33'")
    ):
        Settings.from_env({"BRIDGE_TRUSTED_PROXIES": "10.0.0.0/33"})
