"""http.post never reaches loopback, private or metadata addresses: directly, by name, by redirect.

Decisions are checked with an inner transport that fails the test if asked to connect, and
a resolver that answers from a table (numeric spellings go to the system resolver, which
parses them without a lookup). End to end runs only over loopback.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bridge.clients.outbound import BlockedAddress, guarded_client, system_resolver
from bridge.errors import PermanentError
from bridge.sandbox.server import ThreadedServer
from tests.helpers import running_bridge, wait_for
from tests.reliability.conftest import Figures

DNS = {
    "hooks.example.com": ["93.184.216.34"],
    "internal.example.com": ["10.1.2.3"],
    "cgnat.example.com": ["100.64.0.7"],
    "sneaky.example.com": ["93.184.216.34", "127.0.0.1"],
    "rebind.example.com": ["169.254.169.254"],
    "v6-loopback.example.com": ["::1"],
    "v6-mapped.example.com": ["::ffff:169.254.169.254"],
    "v6-ula.example.com": ["fd12:3456::1"],
    "v6-linklocal.example.com": ["fe80::1"],
    "localhost": ["127.0.0.1", "::1"],
    "aws.example.com": ["169.254.169.254"],
    "azure.example.com": ["168.63.129.16"],
    "alibaba.example.com": ["100.100.100.200"],
    # DNS64 answers and other IPv6 forms that carry an internal IPv4 address.
    "dns64-metadata.example.com": ["64:ff9b::a9fe:a9fe"],
    "dns64-private.example.com": ["64:ff9b::a00:1"],
    "sixtofour.example.com": ["2002:a9fe:a9fe::"],
}


NUMERIC_HOST = re.compile(r"^[0-9][0-9a-fx.]*$")


async def resolve(host: str, port: int) -> list[str]:
    name = host.lower().rstrip(".")
    if name in DNS:
        return DNS[name]
    if NUMERIC_HOST.match(host):
        # 2130706433, 0x7f000001, 127.1: inet_aton spellings the system parses without a lookup.
        return await system_resolver(host, port)
    raise PermanentError(f"cannot resolve {host!r}: not in the test's table")


FORBIDDEN = [
    "https://127.0.0.1/",
    "https://127.0.0.53:8443/",
    "https://127.1/",
    "https://2130706433/",
    "https://0x7f000001/",
    "https://0177.0.0.1/",
    "https://0.0.0.0/",
    "https://0/",
    "https://localhost/",
    "https://LOCALHOST./",
    "https://[::1]/",
    "https://[::]/",
    "https://[0:0:0:0:0:ffff:7f00:1]/",
    "https://[::ffff:169.254.169.254]/",
    "https://[fe80::1]/",
    "https://[fd00:ec2::254]/",
    # IPv6 forms that embed an IPv4 address: NAT64 (well-known and local-use prefixes),
    # 6to4, IPv4-compatible, IPv4-translated, Teredo, and the deprecated site-local range.
    "https://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
    "https://[64:ff9b::a00:1]/",
    "https://[64:ff9b::7f00:1]/",
    "https://[64:ff9b:1::a00:1]/",
    "https://[64:ff9b:1:5db8:d8:2200::]/",
    "https://[2002:a9fe:a9fe::]/",
    "https://[2002:7f00:1::1]/",
    "https://[::7f00:1]/",
    "https://[::a9fe:a9fe]/",
    "https://[::ffff:0:7f00:1]/",
    "https://[::ffff:0:a9fe:a9fe]/",
    "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
    "https://[2001:0:5db8:d822::5601:5601]/",
    "https://[fec0::1]/",
    "https://10.0.0.1/",
    "https://172.31.255.255/",
    "https://192.168.0.1/",
    "https://100.64.0.1/",
    "https://198.18.0.1/",
    "https://224.0.0.1/",
    "https://255.255.255.255/",
    "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "https://169.254.170.2/v2/credentials",
    "https://168.63.129.16/metadata/instance",
    "https://100.100.100.200/latest/meta-data/",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://METADATA.GOOGLE.INTERNAL./computeMetadata/v1/",
    "https://metadata/computeMetadata/v1/",
    "https://instance-data/latest/",
    "https://internal.example.com/",
    "https://cgnat.example.com/",
    "https://sneaky.example.com/",
    "https://rebind.example.com/",
    "https://v6-loopback.example.com/",
    "https://v6-mapped.example.com/",
    "https://v6-ula.example.com/",
    "https://v6-linklocal.example.com/",
    "https://aws.example.com/",
    "https://azure.example.com/",
    "https://alibaba.example.com/",
    "https://dns64-metadata.example.com/",
    "https://dns64-private.example.com/",
    "https://sixtofour.example.com/",
    "https://user:pass@127.0.0.1/",
    "https://hooks.example.com@127.0.0.1/",
    "http://hooks.example.com/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
]


# Refused before the guard is asked: not an address httpx accepts, or not http(s) at all.
# (`file:///etc/passwd` is the guard's: a scheme other than https is refused before any
# DNS query, host or none.)
NOT_HTTP = {
    "https://0177.0.0.1/": "InvalidURL",
}


class MustNotConnect(httpx.AsyncBaseTransport):
    """Fails the test if the guard lets a request through."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pytest.fail(f"the guard let a request through to {request.url}")


class RedirectsOnce(httpx.AsyncBaseTransport):
    """The public host answers with a redirect; any second connection fails the test."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.sent: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(str(request.url))
        if len(self.sent) > 1:
            pytest.fail(f"the guard followed a redirect to {request.url}")
        assert ipaddress.ip_address(request.url.host).is_global
        return httpx.Response(307, headers={"location": self.location})


async def test_forbidden_destinations_are_refused_without_connecting(figures: Figures) -> None:
    reasons: dict[str, int] = {}
    others: dict[str, str] = {}  # URL → what refused it, when not the guard
    async with guarded_client(resolver=resolve, inner=MustNotConnect()) as client:
        for url in FORBIDDEN:
            with pytest.raises(
                (BlockedAddress, httpx.UnsupportedProtocol, httpx.InvalidURL, PermanentError)
            ) as info:
                await client.post(url, json={})
            kind = type(info.value).__name__
            reasons[kind] = reasons.get(kind, 0) + 1
            if kind != "BlockedAddress":
                others[url] = kind
    # Everything but a scheme httpx does not speak is refused by the guard itself.
    figures(urls=len(FORBIDDEN), connections=0, refusals=reasons)
    assert others == NOT_HTTP, others


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "https://169.254.169.254/latest/meta-data/",
        "https://127.0.0.1:6379/",
        "https://[::1]/",
        "https://2130706433/",
        "https://localhost/admin",
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://rebind.example.com/",
        "http://hooks.example.com/downgraded",
    ],
)
async def test_a_public_host_cannot_redirect_inside(location: str) -> None:
    transport = RedirectsOnce(location)
    async with guarded_client(resolver=resolve, inner=transport) as client:
        with pytest.raises(BlockedAddress):
            await client.post("https://hooks.example.com/hook", json={})
    assert transport.sent == ["https://93.184.216.34/hook"]


# End to end over loopback only: 127.0.0.1 is allowed explicitly, as a user would.


def trap_app(received: list[str]) -> Starlette:
    async def sink(request: Request) -> Response:
        received.append(request.url.path)
        return JSONResponse({"ok": True})

    def redirect_to(target: str):  # type: ignore[no-untyped-def]
        async def endpoint(request: Request) -> Response:
            return RedirectResponse(target, status_code=307)

        return endpoint

    routes = [Route("/sink", sink, methods=["POST"])]
    for name, target in TARGETS.items():
        routes.append(Route(f"/to-{name}", redirect_to(target), methods=["POST"]))
    return Starlette(routes=routes)


TARGETS = {
    "metadata": "http://169.254.169.254/latest/meta-data/",
    "metadata-name": "http://metadata.google.internal/computeMetadata/v1/",
    "ipv6-loopback": "http://[::1]/",
    "private": "http://10.0.0.1/",
}

RULE = """
id: {name}
on: shop.order.paid
actions:
  - id: forward
    uses: http.post
    with: {{url: "{url}", json: {{order: "{{{{ event.id }}}}"}}}}
"""


@pytest.fixture
def trap() -> Iterator[tuple[str, list[str]]]:
    received: list[str] = []
    server = ThreadedServer(trap_app(received))
    server.start()
    yield server.url, received
    server.stop()


@pytest.mark.timeout(60)
def test_http_post_end_to_end_refuses_redirects_inside(
    redis_url: str, key_prefix: str, tmp_path: Path, trap: tuple[str, list[str]], figures: Figures
) -> None:
    url, received = trap
    with running_bridge(redis_url, key_prefix, tmp_path, BRIDGE_HTTP_ALLOW="127.0.0.1") as bridge:
        bridge.write_rule("ok.yaml", RULE.format(name="ok", url=f"{url}/sink"))
        for name in TARGETS:
            bridge.write_rule(f"{name}.yaml", RULE.format(name=name, url=f"{url}/to-{name}"))
        # Not allowed even though the sink is: a different loopback spelling, not listed.
        bridge.write_rule("v6.yaml", RULE.format(name="v6", url="http://[::1]:9/"))
        bridge.start_web()
        bridge.start_worker()
        body = {"id": "s-1", "type": "shop.order.paid", "data": {}}
        assert bridge.post(body, source="shop").status_code == 202
        letters = wait_for(
            lambda: (found := bridge.dead_letters()) and len(found) == len(TARGETS) + 1 and found,
            timeout=30,
            what="every forbidden forward to be refused",
        )
        wait_for(lambda: bridge.trace_has("s-1", "run", rule="ok", status="succeeded"))
        errors = {letter["rule_id"]: letter["error"] for letter in letters}
        figures(
            forwards=len(TARGETS) + 2,
            delivered=len(received),
            refused=len(errors),
            retried_before_refusal=max(letter["attempts"] for letter in letters),
        )
        assert received == ["/sink"]
        for name, error in errors.items():
            assert error.startswith("refused "), (name, error)
        assert errors["metadata"].startswith("refused 169.254.169.254")
        assert errors["metadata-name"].startswith("refused metadata.google.internal")
        # A refusal is permanent: one try, straight to the dead letters.
        assert {letter["attempts"] for letter in letters} == {1}
