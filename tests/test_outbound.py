"""The outbound-address guard of http.post.

Decisions are checked with an inner transport that fails the test if it is ever asked to
connect, and a fake resolver, so no packet goes to a private, link-local or metadata
address. End to end runs only over loopback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bridge.clients.outbound import AddressGuard, BlockedAddress, guarded_client
from bridge.errors import ConfigError, PermanentError
from bridge.sandbox.server import ThreadedServer
from tests.helpers import running_bridge, wait_for


class MustNotConnect(httpx.AsyncBaseTransport):
    """Fails the test if the guard lets a request through."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pytest.fail(f"the guard let a request through to {request.url}")


class Recorder(httpx.AsyncBaseTransport):
    """Answers 200 without connecting, and remembers where it was asked to go."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return httpx.Response(200, json={"ok": True})


def fake_resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        return table[host]

    return resolve


DNS = {
    "hooks.example.com": ["93.184.216.34"],
    "internal.example.com": ["10.1.2.3"],
    "sneaky.example.com": ["93.184.216.34", "127.0.0.1"],
    "rebind.example.com": ["169.254.169.254"],
    "v6.example.com": ["::1"],
}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://127.0.0.1/x", "refused 127.0.0.1: a private, loopback"),
        ("https://localhost.localdomain./x", None),
        ("https://10.0.0.5/", "refused 10.0.0.5: a private"),
        ("https://172.16.4.4/", "refused 172.16.4.4: a private"),
        ("https://192.168.1.10/", "refused 192.168.1.10: a private"),
        ("https://169.254.169.254/latest/meta-data/", "refused 169.254.169.254: a private"),
        ("https://[::1]/", "refused ::1: a private"),
        ("https://[fd00:ec2::254]/", "refused fd00:ec2::254: a private"),
        ("https://[::ffff:127.0.0.1]/", "refused ::ffff:7f00:1: a private"),
        ("https://100.100.100.200/", "refused 100.100.100.200: a private"),
        ("https://168.63.129.16/", "refused 168.63.129.16: a private"),
        ("https://0.0.0.0/", "refused 0.0.0.0: a private"),
        (
            "https://metadata.google.internal/computeMetadata/v1/",
            "refused metadata.google.internal: a cloud metadata service",
        ),
        ("https://internal.example.com/", "refused 10.1.2.3 (internal.example.com resolves to it)"),
        ("https://sneaky.example.com/", "refused 127.0.0.1 (sneaky.example.com resolves to it)"),
        ("https://rebind.example.com/", "refused 169.254.169.254 (rebind.example.com resolves"),
        ("https://v6.example.com/", "refused ::1 (v6.example.com resolves to it)"),
        ("http://hooks.example.com/", "refused http://hooks.example.com: only https:// is allowed"),
    ],
)
async def test_private_destinations_are_refused_without_connecting(
    url: str, message: str | None
) -> None:
    table = DNS | {"localhost.localdomain.": ["127.0.0.1"]}
    async with guarded_client(resolver=fake_resolver(table), inner=MustNotConnect()) as client:
        with pytest.raises(BlockedAddress) as info:
            await client.post(url, json={})
    if message is not None:
        assert str(info.value).startswith(message)


WRAPPED = "a private, loopback, link-local or metadata address; list it in BRIDGE_HTTP_ALLOW"


@pytest.mark.parametrize(
    ("host", "message"),
    [
        (
            "[64:ff9b::a9fe:a9fe]",
            f"refused 64:ff9b::a9fe:a9fe (it carries the IPv4 address 169.254.169.254): {WRAPPED}",
        ),
        (
            "[64:ff9b::a00:1]",
            f"refused 64:ff9b::a00:1 (it carries the IPv4 address 10.0.0.1): {WRAPPED}",
        ),
        (
            "[2002:a9fe:a9fe::]",
            f"refused 2002:a9fe:a9fe:: (it carries the IPv4 address 169.254.169.254): {WRAPPED}",
        ),
        ("[::7f00:1]", f"refused ::7f00:1 (it carries the IPv4 address 127.0.0.1): {WRAPPED}"),
        (
            "[::ffff:0:7f00:1]",
            f"refused ::ffff:0:7f00:1 (it carries the IPv4 address 127.0.0.1): {WRAPPED}",
        ),
        (
            "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
            "refused 2001:0:4136:e378:8000:63bf:3fff:fdd2 "
            f"(it carries the IPv4 address 192.0.2.45): {WRAPPED}",
        ),
        ("[64:ff9b:1::a00:1]", f"refused 64:ff9b:1::a00:1: {WRAPPED}"),
        (
            "dns64.example.com",
            "refused 64:ff9b::a9fe:a9fe (dns64.example.com resolves to it; "
            f"it carries the IPv4 address 169.254.169.254): {WRAPPED}",
        ),
    ],
)
async def test_ipv6_forms_that_carry_an_internal_ipv4_are_refused(host: str, message: str) -> None:
    table = {"dns64.example.com": ["64:ff9b::a9fe:a9fe"]}
    async with guarded_client(resolver=fake_resolver(table), inner=MustNotConnect()) as client:
        with pytest.raises(BlockedAddress) as info:
            await client.post(f"https://{host}/latest/meta-data/", json={})
    assert str(info.value) == message + " to allow it"


async def test_ipv6_forms_that_carry_a_public_ipv4_still_go_through() -> None:
    # An IPv6-only host behind DNS64 sees public names as 64:ff9b::/96 addresses.
    table = {"hooks.example.com": ["64:ff9b::5db8:d822"], "six.example.com": ["2002:5db8:d822::1"]}
    recorder = Recorder()
    async with guarded_client(resolver=fake_resolver(table), inner=recorder) as client:
        for url in ("https://hooks.example.com/in", "https://six.example.com/in"):
            assert (await client.post(url, json={})).status_code == 200
    assert [r.url.host for r in recorder.seen] == ["64:ff9b::5db8:d822", "2002:5db8:d822::1"]
    # And an internal NAT64 range is reachable once listed, as any other address.
    guard = AddressGuard(["64:ff9b::a00:0/120"], fake_resolver({}))
    assert await guard.vet(httpx.URL("https://[64:ff9b::a00:1]/")) == "64:ff9b::a00:1"


async def test_public_https_goes_to_the_vetted_address_with_the_original_name() -> None:
    recorder = Recorder()
    async with guarded_client(resolver=fake_resolver(DNS), inner=recorder) as client:
        response = await client.post("https://hooks.example.com/in?x=1", json={"a": 1})
    assert response.status_code == 200
    [sent] = recorder.seen
    assert sent.url.host == "93.184.216.34"
    assert sent.url.path == "/in" and sent.url.query == b"x=1"
    assert sent.headers["host"] == "hooks.example.com"
    assert sent.extensions["sni_hostname"] == "hooks.example.com"


async def test_allow_list_admits_cidrs_and_names() -> None:
    guard = AddressGuard(["10.1.0.0/16", "internal.example.com"], fake_resolver(DNS))
    assert await guard.vet(httpx.URL("https://10.1.9.9/")) == "10.1.9.9"
    assert await guard.vet(httpx.URL("http://internal.example.com/")) == "10.1.2.3"
    with pytest.raises(BlockedAddress):
        await guard.vet(httpx.URL("https://10.2.0.1/"))
    with pytest.raises(ConfigError, match="BRIDGE_HTTP_ALLOW entry 'not a host'"):
        AddressGuard(["not a host"])


async def test_an_http_url_is_refused_for_its_scheme_before_any_dns_query() -> None:
    """`http://` to a host not allowed: the scheme is refused first, with no DNS query (and
    so no 'cannot resolve' when DNS is down), even when BRIDGE_HTTP_ALLOW lists others."""
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        raise PermanentError(f"cannot resolve {host}: Name or service not known")

    guard = AddressGuard(["127.0.0.1"], resolver)
    with pytest.raises(BlockedAddress) as info:
        await guard.vet(httpx.URL("http://example.com/"))
    assert str(info.value) == (
        "refused http://example.com: only https:// is allowed, unless the host is listed in "
        "BRIDGE_HTTP_ALLOW"
    )
    assert asked == []


# End to end over loopback only: 127.0.0.1 is allowed explicitly, as a user would.


def sink_app(received: list[dict[str, object]]) -> Starlette:
    async def sink(request: Request) -> Response:
        received.append({"json": await request.json(), "token": request.headers.get("x-token")})
        return JSONResponse({"stored": len(received)})

    async def to_metadata(request: Request) -> Response:
        return RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=307)

    async def to_sink(request: Request) -> Response:
        return RedirectResponse("/sink", status_code=307)

    return Starlette(
        routes=[
            Route("/sink", sink, methods=["POST"]),
            Route("/redirect-metadata", to_metadata, methods=["POST"]),
            Route("/redirect-sink", to_sink, methods=["POST"]),
        ]
    )


@pytest.fixture
def sink() -> Iterator[tuple[str, list[dict[str, object]]]]:
    received: list[dict[str, object]] = []
    server = ThreadedServer(sink_app(received))
    server.start()
    yield server.url, received
    server.stop()


class LoopbackOnly(httpx.AsyncBaseTransport):
    """A real transport that fails the test if asked to connect anywhere but loopback."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != "127.0.0.1":
            pytest.fail(f"asked to connect to {request.url.host}")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_redirects_are_vetted_too(sink: tuple[str, list[dict[str, object]]]) -> None:
    url, received = sink
    async with guarded_client(["127.0.0.1"], inner=LoopbackOnly()) as client:
        response = await client.post(f"{url}/redirect-sink", json={"n": 1})
        assert response.json() == {"stored": 1}
        with pytest.raises(BlockedAddress, match=r"refused 169\.254\.169\.254"):
            await client.post(f"{url}/redirect-metadata", json={"n": 2})
    assert [r["json"] for r in received] == [{"n": 1}]


RULE = """
id: forward
on: shop.order.paid
actions:
  - id: forward
    uses: http.post
    with:
      url: "URL"
      json: {order: "{{ data.id }}", total: "{{ data.total }}"}
      headers: {x-token: "abc"}
"""


def test_http_post_end_to_end_over_loopback(
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
    sink: tuple[str, list[dict[str, object]]],
) -> None:
    url, received = sink
    with running_bridge(redis_url, key_prefix, tmp_path, BRIDGE_HTTP_ALLOW="127.0.0.1") as bridge:
        bridge.write_rule("forward.yaml", RULE.replace("URL", f"{url}/sink"))
        bridge.write_rule(
            "metadata.yaml",
            RULE.replace("URL", f"{url}/redirect-metadata").replace(
                "id: forward\non", "id: to-metadata\non"
            ),
        )
        bridge.start_web()
        bridge.start_worker()
        body = {"id": "o-1", "type": "shop.order.paid", "data": {"id": 42, "total": 19.5}}
        assert bridge.post(body, source="shop").status_code == 202
        wait_for(lambda: received, what="the forwarded order")
        assert received == [{"json": {"order": 42, "total": 19.5}, "token": "abc"}]
        step = wait_for(lambda: bridge.trace_has("o-1", "step", rule="forward", status="succeeded"))
        assert step["result"] == {"status": 200, "body": {"stored": 1}}
        [letter] = wait_for(bridge.dead_letters, what="the refused redirect")
        assert letter["rule_id"] == "to-metadata"
        assert letter["error"].startswith("refused 169.254.169.254: a private, loopback")
        assert json.dumps(received).count("o-1") == 0
