"""Verify inbound webhook signatures over the raw body (Standard Webhooks, GitHub style,
Slack's v0)."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import time
from collections.abc import Mapping

from slack_sdk.signature import Clock, SignatureVerifier

from bridge.webhook_secrets import standard_secret_key


class SignatureError(Exception):
    """The signature is missing, malformed, stale or does not match (HTTP 401)."""


@functools.lru_cache(maxsize=64)
def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (bridge.settings.standard_secret_key),
    decoded once per secret, not once per request."""
    return standard_secret_key(secret)


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for a message (used by senders and tests)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.digest(standard_key(secret), signed, "sha256")
    return "v1," + base64.b64encode(digest).decode()


def sign_github(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` header value for a body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_standard(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = 300,
    now: float | None = None,
) -> str:
    """Check a Standard Webhooks signature; return the `webhook-id`, or raise SignatureError."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    header = headers.get("webhook-signature")
    missing = [
        name
        for name, value in (
            ("webhook-id", msg_id),
            ("webhook-timestamp", stamp),
            ("webhook-signature", header),
        )
        if not value
    ]
    if missing or msg_id is None or stamp is None or header is None:
        raise SignatureError("missing header " + ", ".join(missing))
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureError("webhook-timestamp is not a whole number of seconds") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError(
            f"webhook-timestamp is {int(current - timestamp)} s off; at most {tolerance} s allowed"
        )
    expected = sign_standard(secret, msg_id, timestamp, body).encode()
    for candidate in header.split():
        if hmac.compare_digest(candidate.encode(), expected):
            return msg_id
    raise SignatureError("webhook-signature does not match the body")


def verify_github(secret: str, headers: Mapping[str, str], body: bytes) -> str | None:
    """Check an `X-Hub-Signature-256` signature; return the delivery id (if any)."""
    header = headers.get("x-hub-signature-256")
    if not header:
        raise SignatureError("missing header X-Hub-Signature-256")
    if not header.startswith("sha256="):
        raise SignatureError("X-Hub-Signature-256 must start with sha256=")
    if not hmac.compare_digest(header.encode(), sign_github(secret, body).encode()):
        raise SignatureError("X-Hub-Signature-256 does not match the body")
    return headers.get("x-github-delivery") or headers.get("webhook-id")


SLACK_TOLERANCE = 300  # Slack: refuse requests more than five minutes off


class _FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def sign_slack(secret: str, timestamp: int | str, body: bytes) -> str:
    """The `X-Slack-Signature` of a body: `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}`."""
    signed = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify_slack(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> None:
    """Check Slack's request signature (`X-Slack-Signature`, `X-Slack-Request-Timestamp`)
    with slack_sdk's verifier; raise SignatureError saying what is wrong.

    The verifier answers only True or False and raises on malformed input (a timestamp
    that is not a number, a body that is not UTF-8, a signature that is not ASCII), so the
    headers are checked here first, each with its own message."""
    stamp = headers.get("x-slack-request-timestamp")
    signature = headers.get("x-slack-signature")
    missing = [
        name
        for name, value in (
            ("X-Slack-Request-Timestamp", stamp),
            ("X-Slack-Signature", signature),
        )
        if not value
    ]
    if missing or stamp is None or signature is None:
        raise SignatureError("missing header " + ", ".join(missing))
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise SignatureError("X-Slack-Request-Timestamp is not a whole number of seconds")
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > SLACK_TOLERANCE:
        raise SignatureError(
            f"X-Slack-Request-Timestamp is {int(current - int(stamp))} s off; "
            f"at most {SLACK_TOLERANCE} s allowed"
        )
    if not signature.startswith("v0=") or not signature.isascii():
        raise SignatureError("X-Slack-Signature must be v0= followed by a hex digest")
    try:
        valid = SignatureVerifier(secret, clock=_FixedClock(current)).is_valid(
            body, stamp, signature
        )
    except (UnicodeDecodeError, ValueError, TypeError):
        valid = False  # a body that is not UTF-8 is nothing Slack signed
    if not valid:
        raise SignatureError("X-Slack-Signature does not match the body")
