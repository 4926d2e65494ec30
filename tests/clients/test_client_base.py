"""The shared client base, unit-tested on httpx.MockTransport."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from clients_support import FakeSleep

from bridge.clients import ApiClient, RetryPolicy, parse_retry_after
from bridge.clients.base import shown_path
from bridge.errors import ClientError, PermanentError, RateLimited


class Demo(ApiClient):
    api = "Demo"
    credential_hint = "check DEMO_TOKEN"

    async def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": "demo-secret-value"}

    def _secrets(self):
        return ("demo-secret-value",)


def scripted(*answers: httpx.Response | Exception):
    """A transport answering with `answers` in order; records the requests."""
    queue = list(answers)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handler), seen


def demo(transport, sleep, **policy) -> Demo:
    http = httpx.AsyncClient(transport=transport)
    return Demo(http, "https://demo.example/v1/", retry=RetryPolicy(**policy), sleep=sleep)


def test_parse_retry_after_seconds_and_dates():
    now = time.time()
    date = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=30), usegmt=True)
    past = format_datetime(datetime.fromtimestamp(now, UTC) - timedelta(seconds=30), usegmt=True)

    assert parse_retry_after("7") == 7
    assert parse_retry_after(" 1.5 ") == 1.5
    assert 29 <= parse_retry_after(date, now=now) <= 30
    assert parse_retry_after(past, now=now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None


def test_shown_path_drops_credentials():
    url = httpx.URL("https://x.example/api/collect?stream=a&key=SECRET&access_token=T")
    assert shown_path(url) == "/api/collect?stream=a"


async def test_429_retry_after_is_honoured_then_the_call_succeeds(fake_sleep: FakeSleep):
    transport, seen = scripted(
        httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200, json={"ok": 1})
    )
    client = demo(transport, fake_sleep)

    assert await client.request_json("GET", "things") == {"ok": 1}
    assert fake_sleep.delays == [3.0]
    assert len(seen) == 2


async def test_429_over_the_budget_raises_rate_limited_with_retry_after(fake_sleep: FakeSleep):
    date = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    transport, _ = scripted(httpx.Response(429, headers={"Retry-After": date}))
    client = demo(transport, fake_sleep, rate_limit_wait=5)

    with pytest.raises(RateLimited) as caught:
        await client.request("POST", "things", params={"key": "demo-secret-value"})

    assert 85 <= caught.value.retry_after <= 90
    assert str(caught.value).startswith("POST /v1/things → 429 Too Many Requests; retry after")
    assert "demo-secret-value" not in str(caught.value)
    assert fake_sleep.delays == []


async def test_429_without_header_backs_off_doubling(fake_sleep: FakeSleep):
    transport, _ = scripted(*[httpx.Response(429)] * 3, httpx.Response(204))
    client = demo(transport, fake_sleep, rate_limit_wait=60, rate_limit_backoff=2)

    response = await client.request("GET", "things")

    assert response.status_code == 204
    low_high = [(1, 2), (2, 4), (4, 8)]
    assert [lo <= d <= hi for d, (lo, hi) in zip(fake_sleep.delays, low_high, strict=True)] == [
        True
    ] * 3


async def test_5xx_and_timeouts_are_retried_with_full_jitter(fake_sleep: FakeSleep):
    transport, seen = scripted(
        httpx.Response(502),
        httpx.ReadTimeout("slow"),
        httpx.Response(200, json=[]),
    )
    client = demo(transport, fake_sleep, backoff=1, max_backoff=1.5)

    assert await client.request_json("GET", "things") == []
    assert len(seen) == 3
    assert 0 <= fake_sleep.delays[0] <= 1 and 0 <= fake_sleep.delays[1] <= 1.5


async def test_retries_stop_at_the_attempt_limit(fake_sleep: FakeSleep):
    transport, seen = scripted(*[httpx.Response(503, json={"message": "maintenance"})] * 5)
    client = demo(transport, fake_sleep, attempts=2)

    with pytest.raises(ClientError) as caught:
        await client.request("GET", "things")

    assert type(caught.value) is ClientError
    assert str(caught.value) == (
        "GET /v1/things → 503 Service Unavailable: maintenance; Demo failed 2 times"
    )
    assert len(seen) == 2


async def test_retries_stop_at_the_time_budget(fake_sleep: FakeSleep):
    transport, seen = scripted(*[httpx.Response(500)] * 5)
    client = demo(transport, fake_sleep, attempts=5, backoff=10, max_backoff=10, total=0.001)

    with pytest.raises(ClientError):
        await client.request("GET", "things")
    assert len(seen) <= 2


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (400, "the request was refused; fix it before retrying"),
        (401, "check DEMO_TOKEN"),
        (404, "no such resource; check the id or the path"),
        (409, "conflict with the current state; read it again before writing"),
        (422, "the request was refused; fix it before retrying"),
    ],
)
async def test_other_4xx_are_permanent_with_a_hint(fake_sleep: FakeSleep, status, hint):
    transport, seen = scripted(httpx.Response(status, json={"message": "nope"}))
    client = demo(transport, fake_sleep)

    with pytest.raises(PermanentError) as caught:
        await client.request("DELETE", "things/1")

    assert caught.value.status == status
    assert str(caught.value).startswith(f"DELETE /v1/things/1 → {status} ")
    assert str(caught.value).endswith(f"; {hint}")
    assert len(seen) == 1 and fake_sleep.delays == []


async def test_a_server_echoing_the_secret_is_redacted(fake_sleep: FakeSleep):
    transport, _ = scripted(
        httpx.Response(400, json={"message": "bad header demo-secret-value given"})
    )
    client = demo(transport, fake_sleep)

    with pytest.raises(PermanentError) as caught:
        await client.request("GET", "things")

    assert "demo-secret-value" not in str(caught.value)
    assert "bad header ********** given" in str(caught.value)


async def test_requests_carry_explicit_timeouts(fake_sleep: FakeSleep):
    transport, seen = scripted(httpx.Response(200))
    client = demo(transport, fake_sleep)

    await client.request("GET", "things")

    assert seen[0].extensions["timeout"] == {
        "connect": 5.0,
        "read": 10.0,
        "write": 10.0,
        "pool": 10.0,
    }


async def test_a_url_that_is_not_http_is_permanent(fake_sleep: FakeSleep):
    async with httpx.AsyncClient() as http:
        client = Demo(http, "ftp://demo.example/", sleep=fake_sleep)
        with pytest.raises(PermanentError, match=r"ftp://demo\.example/ is not an http"):
            await client.request("GET", "things")
    assert fake_sleep.delays == []
