"""The outbound-address guard: http.post reaches public HTTPS endpoints, nothing private.

Every request — the first and each redirect — is resolved here, every address the name
resolves to is checked, and the connection is pinned to a checked address (with the
original name kept for TLS and `Host`), so a DNS answer cannot change between the check
and the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable

import httpx

from bridge.clients.netstream import http_transport
from bridge.errors import ConfigError, PermanentError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Cloud metadata services that are globally routable addresses (the others, such as
# 169.254.169.254 and fd00:ec2::254, are link-local or private and refused anyway).
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("168.63.129.16"), ipaddress.ip_address("100.100.100.200")}
)
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata", "instance-data"})

# IPv6 prefixes whose last 32 bits are an IPv4 address the packet ends up at: NAT64's
# well-known prefix (RFC 6052), IPv4-compatible (RFC 4291, deprecated) and
# IPv4-translated (RFC 2765) addresses. Such an address is as public as its IPv4 one.
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
IPV4_IN_LAST_32_BITS = (
    NAT64_WELL_KNOWN,
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
)
# Never public whatever they embed: NAT64 for local use (RFC 8215, each operator places
# the IPv4 address where it likes) and the deprecated site-local fec0::/10.
LOCAL_IPV6 = (ipaddress.IPv6Network("64:ff9b:1::/48"), ipaddress.IPv6Network("fec0::/10"))


class BlockedAddress(PermanentError):
    """The destination is private, loopback, link-local or a metadata service."""


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, through the system resolver."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PermanentError(f"cannot resolve {host}: {exc.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _parse_allow(entries: Iterable[str]) -> tuple[list[Network], set[str]]:
    networks: list[Network] = []
    names: set[str] = set()
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            if not entry or "/" in entry or " " in entry:
                raise ConfigError(
                    f"BRIDGE_HTTP_ALLOW entry {entry!r} is neither a CIDR nor a host name"
                ) from None
            names.add(entry.lower().rstrip("."))
    return networks, names


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: 6to4, Teredo, NAT64 and the ::/96 forms."""
    found: list[ipaddress.IPv4Address] = []
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)  # the Teredo server and the client (de-obfuscated)
    if _carries_last_32_bits(ip):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _carries_last_32_bits(ip: ipaddress.IPv6Address) -> bool:
    # :: and ::1 are the unspecified and loopback addresses, not IPv4-compatible ones.
    return int(ip) > 1 and any(ip in prefix for prefix in IPV4_IN_LAST_32_BITS)


def _public(ip: IPAddress) -> bool:
    """Globally routable and not a metadata service, judged on this address alone."""
    if isinstance(ip, ipaddress.IPv6Address) and any(ip in net for net in LOCAL_IPV6):
        return False
    return ip.is_global and ip not in METADATA_ADDRESSES and not ip.is_multicast


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class AddressGuard:
    """Decides whether an outbound request may go to a host, and to which address."""

    def __init__(self, allow: Iterable[str] = (), resolver: Resolver | None = None) -> None:
        self.networks, self.names = _parse_allow(allow)
        self.resolver = resolver or system_resolver

    def address_allowed(self, ip: IPAddress) -> bool:
        """Whether a connection to `ip` is allowed: public, or listed in BRIDGE_HTTP_ALLOW.

        An IPv6 address that carries an IPv4 one (6to4, Teredo, NAT64, IPv4-compatible
        or -translated) is public only when that IPv4 address is too.
        """
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # the very same socket address
        if any(ip in network for network in self.networks):
            return True
        if isinstance(ip, ipaddress.IPv4Address):
            return _public(ip)
        inner = embedded_ipv4(ip)
        # The last-32-bits prefixes are "reserved" as IPv6 addresses; only what they
        # carry decides. Every other address must be public itself, and so must its IPv4.
        if not _carries_last_32_bits(ip) and not _public(ip):
            return False
        return all(_public(v4) for v4 in inner)

    def name_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    async def vet(self, url: httpx.URL) -> str:
        """The address to connect to for `url`; raises BlockedAddress when it is refused."""
        host = url.host
        allowed_name = self.name_allowed(host)
        literal = _literal(host)
        explicitly = allowed_name or (
            literal is not None and any(literal in n for n in self.networks)
        )
        if not allowed_name and host.lower().rstrip(".") in METADATA_NAMES:
            raise BlockedAddress(f"refused {host}: a cloud metadata service")
        if literal is not None:
            addresses = [str(literal)]
        else:
            if url.scheme != "https" and not explicitly:  # refused before any DNS query
                raise BlockedAddress(self._scheme_refused(url))
            port = url.port or (443 if url.scheme == "https" else 80)
            addresses = await self.resolver(host, port)
            if not addresses:
                raise PermanentError(f"cannot resolve {host}: no addresses")
        if not allowed_name:
            for address in addresses:
                ip = ipaddress.ip_address(address)
                if not self.address_allowed(ip):
                    notes = [] if literal is not None else [f"{host} resolves to it"]
                    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
                        inner = [str(v4) for v4 in embedded_ipv4(ip) if not _public(v4)]
                        notes += [f"it carries the IPv4 address {v4}" for v4 in inner[-1:]]
                    shown = f" ({'; '.join(notes)})" if notes else ""
                    raise BlockedAddress(
                        f"refused {address}{shown}: a private, loopback, link-local or metadata "
                        "address; list it in BRIDGE_HTTP_ALLOW to allow it"
                    )
        if url.scheme != "https" and not explicitly:
            raise BlockedAddress(self._scheme_refused(url))
        return addresses[0]

    @staticmethod
    def _scheme_refused(url: httpx.URL) -> str:
        return (
            f"refused {url.scheme}://{url.host}: only https:// is allowed, unless the host is "
            "listed in BRIDGE_HTTP_ALLOW"
        )


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that vets every request (redirects included) before connecting."""

    def __init__(self, guard: AddressGuard, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.guard = guard
        self.inner = inner or http_transport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        address = await self.guard.vet(request.url)
        if address != host.strip("[]"):
            # Connect to the vetted address; TLS and Host still name the original host.
            request.extensions = {**request.extensions, "sni_hostname": host}
            request.url = request.url.copy_with(host=address)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def guarded_client(
    allow: Iterable[str] = (),
    *,
    resolver: Resolver | None = None,
    inner: httpx.AsyncBaseTransport | None = None,
    timeout: httpx.Timeout | None = None,
) -> httpx.AsyncClient:
    """An httpx client for user-given URLs: guarded, following at most 5 redirects."""
    return httpx.AsyncClient(
        transport=GuardedTransport(AddressGuard(allow, resolver), inner),
        follow_redirects=True,
        max_redirects=5,
        timeout=timeout or httpx.Timeout(10.0, connect=5.0),
        trust_env=False,
    )
