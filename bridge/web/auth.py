"""Who may operate the bridge: the admin bearer token, the dashboard's signed session, CSRF.

The admin surface (dashboard and /api/) exists only when BRIDGE_ADMIN_TOKEN is set. The
API takes `Authorization: Bearer <token>`; the dashboard's login takes the same token and
answers with a session cookie signed by HMAC-SHA256 under a key derived from the token
(changing the token ends every session). A session also lives in Redis from login to
logout, so logging out ends it for good. Every session carries a CSRF token that each
POST form (or the `X-CSRF-Token` header of an API call made with the cookie) must repeat.
Wrong tokens are throttled per client address (bridge/web/throttle.py): each try is booked
before its token is compared here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.settings import Settings
from bridge.web.throttle import (
    Refusal,
    book_try,
    give_back,
    log_wrong_token,
)

if TYPE_CHECKING:
    from bridge.operate.context import Context

SESSION_COOKIE = "lytbridge_session"
LOGIN_COOKIE = "lytbridge_login"
SESSION_SECONDS = 12 * 3600
MAX_FORM_BYTES = 64 * 1024
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


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
