"""Who may operate the bridge: the admin bearer token, the dashboard's signed session, CSRF.

The admin surface (dashboard and /api/) exists only when BRIDGE_ADMIN_TOKEN is set. The
API takes `Authorization: Bearer <token>`; the dashboard's login takes the same token and
answers with a session cookie signed by HMAC-SHA256 under a key derived from the token
(changing the token ends every session). Every session carries a CSRF token that each
POST form (or the `X-CSRF-Token` header of an API call made with the cookie) must repeat.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.settings import Settings

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


def new_session_cookie(token: str, now: float | None = None) -> tuple[str, Auth]:
    """A signed session cookie value and the session it stands for."""
    csrf = secrets.token_urlsafe(24)
    issued = int(time.time() if now is None else now)
    payload = _b64(json.dumps({"iat": issued, "csrf": csrf}, separators=(",", ":")).encode())
    return f"{payload}.{_sign(token, payload)}", Auth("session", csrf)


def read_session(token: str, cookie: str | None, now: float | None = None) -> Auth | None:
    """The session of a cookie, or None when it is missing, forged, malformed or expired."""
    if not cookie or "." not in cookie:
        return None
    payload, signature = cookie.rsplit(".", 1)
    if not _equal(signature, _sign(token, payload)):
        return None
    try:
        data = json.loads(_unb64(payload))
        issued, csrf = int(data["iat"]), str(data["csrf"])
    except (ValueError, KeyError, TypeError):
        return None
    current = time.time() if now is None else now
    if not 0 <= current - issued <= SESSION_SECONDS or not csrf:
        return None
    return Auth("session", csrf)


def bearer(request: Request) -> str | None:
    """The bearer token of the Authorization header, if one is sent."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def authenticate(request: Request) -> Auth | None:
    """The request's proof of being an operator, or None (the admin token must be set)."""
    token = admin_token(request)
    if token is None:
        return None
    sent = bearer(request)
    if sent is not None:
        return Auth("bearer") if _equal(sent, token) else None
    return read_session(token, request.cookies.get(SESSION_COOKIE))


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
