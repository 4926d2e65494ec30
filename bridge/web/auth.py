"""Who may operate the bridge: the admin bearer token, the dashboard's signed session, CSRF.

The admin surface (dashboard and /api/) exists only when BRIDGE_ADMIN_TOKEN is set. The
API takes `Authorization: Bearer <token>`; the dashboard's login takes the same token and
answers with a session cookie signed by HMAC-SHA256 under a key derived from the token
(changing the token ends every session). A session also lives in Redis from login to
logout, so logging out ends it for good. Every session carries a CSRF token that each
POST form (or the `X-CSRF-Token` header of an API call made with the cookie) must repeat.
Wrong tokens are counted per client address in Redis, shared by every web process: past
`LOGIN_FAILURES` in `LOGIN_WINDOW` seconds, that address gets 429 until the window ends.
Each try is booked (one Lua script) before its token is compared, and a right token's
booking is given back, so concurrent wrong tokens get no more than the allowance. The
client address is the connection's, or what a trusted proxy (BRIDGE_TRUSTED_PROXIES;
Heroku's router) says in X-Forwarded-For.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.lua import FastScript
from bridge.settings import Settings

if TYPE_CHECKING:
    from bridge.operate.context import Context

logger = logging.getLogger(__name__)

SESSION_COOKIE = "lytbridge_session"
LOGIN_COOKIE = "lytbridge_login"
SESSION_SECONDS = 12 * 3600
MAX_FORM_BYTES = 64 * 1024
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
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


def error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    """A JSON error body like the webhook endpoint's: a stable code and a message."""
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def admin_token(request: Request) -> str | None:
    settings: Settings = request.app.state.bridge.settings
    return settings.admin_token.get() if settings.admin_token else None


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _session_key(token: str) -> bytes:
    return hmac.new(token.encode(), b"lytbridge dashboard session v1", hashlib.sha256).digest()


def _sign(token: str, payload: str) -> str:
    return _b64(hmac.new(_session_key(token), payload.encode(), hashlib.sha256).digest())


@dataclass(frozen=True)
class Auth:
    """How a request proved itself: by `bearer` token or dashboard `session` (with its CSRF)."""

    kind: str
    csrf: str = ""
    session_id: str = ""


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
        return error(self.status, self.code, self.message, **self.headers())

    def sentence(self) -> str:
        """The message as a sentence, for a page."""
        return self.message[:1].upper() + self.message[1:] + "."


def new_session_cookie(token: str, now: float | None = None) -> tuple[str, Auth]:
    """A signed session cookie value and the session it stands for."""
    csrf = secrets.token_urlsafe(24)
    sid = secrets.token_urlsafe(24)
    issued = int(time.time() if now is None else now)
    body = {"iat": issued, "csrf": csrf, "sid": sid}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{payload}.{_sign(token, payload)}", Auth("session", csrf, sid)


def read_session(token: str, cookie: str | None, now: float | None = None) -> Auth | None:
    """The session of a cookie, or None when it is missing, forged, malformed or expired."""
    if not cookie or "." not in cookie:
        return None
    payload, signature = cookie.rsplit(".", 1)
    if not _equal(signature, _sign(token, payload)):
        return None
    try:
        data = json.loads(_unb64(payload))
        issued, csrf, sid = int(data["iat"]), str(data["csrf"]), str(data["sid"])
    except (ValueError, KeyError, TypeError):
        return None
    current = time.time() if now is None else now
    if not 0 <= current - issued <= SESSION_SECONDS or not csrf or not sid:
        return None
    return Auth("session", csrf, sid)


def bearer(request: Request) -> str | None:
    """The bearer token of the Authorization header, if one is sent."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


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


def _live_session_key(request: Request, session_id: str) -> str:
    digest = hashlib.sha256(session_id.encode()).hexdigest()
    return _context(request).keys.auth_session(digest)


async def authorize(request: Request) -> Auth | Refusal | None:
    """The request's proof of being an operator; a Refusal when it may not try now; or None.

    A bearer token is throttled per client address; a session must be live in Redis
    (logged in, not yet logged out).
    """
    token = admin_token(request)
    if token is None:
        return None
    try:
        sent = bearer(request)
        if sent is not None:
            booking = await book_try(request, "admin API bearer token")
            if isinstance(booking, Refusal):
                return booking
            if _equal(sent, token):
                await give_back(request, booking)
                return Auth("bearer")
            log_wrong_token(booking, f"bearer token on {request.url.path}")
            return None
        auth = read_session(token, request.cookies.get(SESSION_COOKIE))
        if auth is None or not await _context(request).redis.exists(
            _live_session_key(request, auth.session_id)
        ):
            return None
        return auth
    except (RedisError, OSError):
        return Refusal(503, "store_unavailable", "Redis cannot be reached right now; retry later")


async def check_login(request: Request, sent: str) -> bool | Refusal:
    """Whether a dashboard login's token is right; a Refusal while this address is throttled."""
    try:
        booking = await book_try(request, "dashboard login")
        if isinstance(booking, Refusal):
            return booking
        if token_ok(request, sent):
            await give_back(request, booking)
            return True
        log_wrong_token(booking, "dashboard login")
        return False
    except (RedisError, OSError):
        return Refusal(503, "store_unavailable", "Redis cannot be reached right now; retry later")


async def start_session(request: Request) -> str:
    """A new session (live in Redis until logout or expiry); the cookie value to set."""
    token = admin_token(request)
    if token is None:
        raise RuntimeError("no session without BRIDGE_ADMIN_TOKEN")
    cookie, auth = new_session_cookie(token)
    await _context(request).redis.set(
        _live_session_key(request, auth.session_id), "1", ex=SESSION_SECONDS
    )
    return cookie


async def end_session(request: Request) -> None:
    """End the request's session in Redis, so its cookie stops working everywhere."""
    token = admin_token(request)
    auth = read_session(token, request.cookies.get(SESSION_COOKIE)) if token else None
    if auth is not None:
        await _context(request).redis.delete(_live_session_key(request, auth.session_id))


def csrf_ok(auth: Auth, sent: str | None) -> bool:
    """A bearer call needs no CSRF token (nothing ambient); a session call must repeat it."""
    if auth.kind == "bearer":
        return True
    return bool(sent) and _equal(str(sent), auth.csrf)


def is_secure(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def set_session(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="lax",
        secure=is_secure(request),
        path="/",
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def set_login_csrf(response: Response, request: Request, value: str) -> None:
    """The login form's double-submit CSRF token (there is no session yet to hold one)."""
    response.set_cookie(
        LOGIN_COOKIE,
        value,
        max_age=3600,
        httponly=True,
        samesite="lax",
        secure=is_secure(request),
        path="/login",
    )


def login_csrf_ok(request: Request, sent: str | None) -> bool:
    expected = request.cookies.get(LOGIN_COOKIE)
    return bool(expected) and bool(sent) and _equal(str(sent), str(expected))


def token_ok(request: Request, sent: str) -> bool:
    token = admin_token(request)
    return token is not None and _equal(sent, token)


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body (first value of each field); {} for anything else or too big."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {key: values[0] for key, values in parsed.items() if values}


def safe_next(target: str | None) -> str:
    """A local path to return to after login; never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
