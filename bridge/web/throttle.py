"""The throttle of wrong admin tokens: who is asking, and how many wrong tries they have left.

Dashboard logins and bearer tokens share one allowance per client address, kept in Redis
so every web process counts together. Each try is booked (one Lua script) before the
token is compared, so concurrent guesses get no more than the allowance; a right token's
try is given back. The client address is the connection's, or, from a trusted proxy
(BRIDGE_TRUSTED_PROXIES, Heroku's router), the last address in X-Forwarded-For it added.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse

from bridge.lua import FastScript
from bridge.settings import Settings

if TYPE_CHECKING:
    from bridge.operate.context import Context

logger = logging.getLogger(__name__)

# Wrong admin tokens (dashboard logins and bearer tokens) allowed per client address in
# a window; past them, every try from that address is refused until the window ends.
LOGIN_FAILURES = 10
LOGIN_WINDOW = 15 * 60
# Of the refusals of one address in one window, the first is logged, then every 100th.
REFUSALS_LOGGED_EVERY = 100

# Book one try of an address: KEYS failures, refused; ARGV limit, window (ms). At the limit,
# refuse: {0, count, ms left, refusals so far}; else count it: {1, count, 0, 0}. The window
# starts at the first try counted (a key a right token left at 0 starts a new one).
_BOOK = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= tonumber(ARGV[1]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then
    ttl = tonumber(ARGV[2])
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
  local times = redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], math.max(ttl, 1000))
  return {0, count, ttl, times}
end
count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {1, count, 0, 0}
"""

# Give back a try booked for a right token: KEYS failures. Never below 0, never a new key.
_GIVE_BACK = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
  return redis.call('DECR', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Refusal:
    """A request refused before its credentials were judged: throttled (429) or no Redis."""

    status: int
    code: str
    message: str
    retry_after: int | None = None

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def json(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.code, "message": self.message},
            status_code=self.status,
            headers=self.headers(),
        )

    def sentence(self) -> str:
        """The message as a sentence, for a page."""
        return self.message[:1].upper() + self.message[1:] + "."


def _context(request: Request) -> Context:
    bridge: Context = request.app.state.bridge
    return bridge


IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_address(request: Request) -> str:
    """Who is asking, for the throttle: the client's address, a whole /64 for IPv6.

    It is the connection's address, unless the connection comes from a trusted proxy: one
    in BRIDGE_TRUSTED_PROXIES or, on Heroku, the router (every request comes through it).
    Then X-Forwarded-For names the client: its entries, across all its lines, are read
    from the last while they are trusted proxies too; the first that is not is the client.
    Entries a client wrote itself come before its proxy's and are never reached.
    """
    settings: Settings = request.app.state.bridge.settings
    peer = _ip(request.client.host if request.client else "")
    if peer is not None and (settings.on_heroku or _is_trusted(peer, settings)):
        entries = [
            entry.strip()
            for line in request.headers.getlist("x-forwarded-for")
            for entry in line.split(",")
        ]
        for entry in reversed([entry for entry in entries if entry]):
            named = _ip(entry)
            if named is None:
                break  # not an address: the proxy that passed it on is the client we know
            peer = named
            if not _is_trusted(peer, settings):
                break
    if peer is None:
        return "unknown"
    if isinstance(peer, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((peer, 64), strict=False))
    return str(peer)


def _is_trusted(address: IP, settings: Settings) -> bool:
    return any(
        address.version == network.version and address in network
        for network in settings.trusted_proxies
    )


def _ip(text: str) -> IP | None:
    """An address (IPv4-mapped IPv6 as IPv4); a port after it (`1.2.3.4:80`, `[::1]:80`)
    is dropped."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class Booking:
    """A try booked against a client address's allowance of wrong tokens."""

    address: str
    failures: str
    count: int


async def book_try(request: Request, what: str) -> Booking | Refusal:
    """Book one try of this client's address before its token is compared; a 429 Refusal
    (logged at a bounded rate) when the address has used up its wrong tokens."""
    address = client_address(request)
    context = _context(request)
    failures, refused = context.keys.auth_failures(address), context.keys.auth_refused(address)
    book = FastScript(context.redis, _BOOK)
    booked, count, ttl_ms, times = (
        int(n) for n in await book([failures, refused], [LOGIN_FAILURES, LOGIN_WINDOW * 1000])
    )
    if booked:
        return Booking(address, failures, count)
    wait = max(1, math.ceil(ttl_ms / 1000))
    if times == 1 or times % REFUSALS_LOGGED_EVERY == 0:
        logger.warning(
            "refused %s from %s: %d wrong admin tokens in %d s; %d refused so far, "
            "refusing for another %d s",
            what,
            address,
            count,
            LOGIN_WINDOW,
            times,
            wait,
        )
    return Refusal(
        429,
        "too_many_attempts",
        f"too many wrong admin tokens from this address; try again in {wait} s",
        wait,
    )


async def give_back(request: Request, booking: Booking) -> None:
    """The token was right: its try does not count against the address."""
    await FastScript(_context(request).redis, _GIVE_BACK)([booking.failures], [])


def log_wrong_token(booking: Booking, what: str) -> None:
    """Log a wrong token (never the token itself); its try stays counted."""
    logger.warning(
        "wrong admin token (%s) from %s: %d of %d allowed in %d s",
        what,
        booking.address,
        booking.count,
        LOGIN_FAILURES,
        LOGIN_WINDOW,
    )
