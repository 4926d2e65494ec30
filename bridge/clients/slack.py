"""Slack Web API calls through slack-sdk, with errors mapped to the bridge's error tree."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bridge.clients.base import parse_retry_after
from bridge.clients.ratelimit import RateLimiter
from bridge.errors import ClientError, PermanentError, RateLimited

# Slack error codes worth another try; every other `ok: false` error is permanent.
TRANSIENT_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"}
)
HINTS = {
    "invalid_auth": "check SLACK_BOT_TOKEN",
    "not_authed": "set SLACK_BOT_TOKEN",
    "account_inactive": "check SLACK_BOT_TOKEN",
    "token_revoked": "check SLACK_BOT_TOKEN",
    "channel_not_found": "check the channel name, and that the bot is in the channel",
    "not_in_channel": "invite the bot to the channel",
    "is_archived": "the channel is archived",
    "invalid_blocks": "check the Block Kit JSON of the template",
    "msg_too_long": "shorten the message",
    "cant_update_message": "the message was not posted by this bot, so it may not edit it",
    "edit_window_closed": "the workspace no longer allows editing this message",
}
# What Slack answers for a thread reply or an edit whose message is gone (deleted).
GONE_ERRORS = frozenset({"thread_not_found", "message_not_found"})
DEFAULT_RETRY_AFTER = 1.0
# The rate limiter's name of Slack messages; each channel is a scope of its own.
SLACK_API = "slack"
# A message waits in process for its channel's slot at most this long (two messages'
# worth); a later slot is booked and the step re-queued until then, freeing the worker.
PACING_MAX_WAIT = 2.0
_PLAIN_CHANNEL = re.compile(r"[A-Za-z0-9._-]{1,80}")


def channel_scope(channel: str) -> str:
    """The pacing schedule of a channel: `#Creative`, `creative` → `creative`; ids as given.

    A channel named in one rule by `#name` and in another by its `C…` id gets two
    schedules; Slack's own 429 and Retry-After still hold the line then.
    """
    bare = channel.strip()
    if bare.startswith("#"):
        bare = bare[1:].lower()
    if _PLAIN_CHANNEL.fullmatch(bare):
        return bare
    return "h" + hashlib.sha256(bare.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def retry_after_seconds(headers: Mapping[str, Any]) -> float:
    """Seconds to wait from a `Retry-After` header (any case; seconds or HTTP date)."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if isinstance(value, list):
        value = value[0] if value else None
    found = parse_retry_after(None if value is None else str(value))
    return DEFAULT_RETRY_AFTER if found is None else found


async def pace(limiter: RateLimiter, channel: str, ticket: str | None = None) -> float:
    """Wait for the channel's next message slot, shared by every process; the seconds waited.

    A slot more than a moment away raises RateLimited, so the caller's job is re-queued
    until then; with a `ticket` (the step's identity) that slot stays booked for it.
    """
    scope = channel_scope(channel)
    max_wait = min(PACING_MAX_WAIT, limiter.max_wait)
    try:
        return await limiter.acquire(SLACK_API, scope=scope, max_wait=max_wait, ticket=ticket)
    except RateLimited as exc:
        raise RateLimited(
            f"Slack chat.postMessage paced: {channel[:80]} takes about one message a second; "
            f"the step waits {exc.retry_after:.1f} s in the queue for its turn",
            retry_after=exc.retry_after,
            status=None,
        ) from None


class MessageGone(PermanentError):
    """The message a reply or an edit names no longer exists (Slack's `thread_not_found`,
    `message_not_found`): the caller may post a new one instead."""


def api_error(method: str, exc: SlackApiError) -> ClientError:
    """A Slack error answer as the bridge's error (429s are handled by the caller)."""
    status = exc.response.status_code
    data = exc.response.data if isinstance(exc.response.data, dict) else {}
    error = str(data.get("error") or f"HTTP {status}")
    hint = HINTS.get(error)
    message = f"{method} → {error}" + (f"; {hint}" if hint else "")
    if error in GONE_ERRORS:
        return MessageGone(message, status=status)
    if status >= 500 or error in TRANSIENT_ERRORS:
        return ClientError(message, status=status)
    return PermanentError(message, status=status)


def is_rate_limited(exc: SlackApiError) -> bool:
    data = exc.response.data if isinstance(exc.response.data, dict) else {}
    return exc.response.status_code == 429 or data.get("error") == "ratelimited"


async def _call(
    method: str,
    call: Awaitable[Any],
    rate_limited: Callable[[float], Awaitable[None]] | None = None,
) -> Any:
    """One Web API call, its failures as the bridge's errors: a 429 is RateLimited (after
    `rate_limited` is told how long to hold back), `ok: false` as `api_error` says, a
    timeout or a broken connection a ClientError."""
    try:
        return await call
    except SlackApiError as exc:
        if is_rate_limited(exc):
            wait = retry_after_seconds(exc.response.headers)
            if rate_limited is not None:
                await rate_limited(wait)
            raise RateLimited(
                f"{method} → 429 ratelimited; retry after {wait:.0f} s", retry_after=wait
            ) from None
        raise api_error(method, exc) from None
    except (TimeoutError, aiohttp.ClientError, SlackClientError) as exc:
        raise ClientError(f"{method} failed: {type(exc).__name__}") from None


async def update_message(
    client: AsyncWebClient, *, channel: str, ts: str, **params: Any
) -> dict[str, Any]:
    """chat.update of the message (channel id, ts); returns {channel, ts}.

    Raises MessageGone for a deleted message, RateLimited, PermanentError, ClientError.
    Edits are not paced like new messages (Slack's chat.update is Tier 3, about 50 a
    minute); a 429 waits its Retry-After in the queue.
    """
    call = client.chat_update(channel=channel, ts=ts, **params)
    response = await _call("Slack chat.update", call)
    return {"channel": response.get("channel"), "ts": response.get("ts")}


async def get_permalink(client: AsyncWebClient, *, channel: str, ts: str) -> str:
    """chat.getPermalink: the link to a message. Raises like update_message."""
    call = client.chat_getPermalink(channel=channel, message_ts=ts)
    response = await _call("Slack chat.getPermalink", call)
    return str(response.get("permalink") or "")


async def post_message(
    client: AsyncWebClient,
    *,
    limiter: RateLimiter | None = None,
    ticket: str | None = None,
    paced: bool = False,
    **params: Any,
) -> dict[str, Any]:
    """chat.postMessage; returns {channel, ts}. Raises RateLimited, PermanentError, ClientError
    (MessageGone for a reply whose thread's parent is gone).

    With a `limiter`, messages are paced per channel (`pace`; `paced`: the caller has
    already taken its slot), and a 429's Retry-After holds the channel back in every process.
    """
    channel = str(params.get("channel") or "")
    if limiter is not None and not paced:
        await pace(limiter, channel, ticket)

    async def hold(wait: float) -> None:
        if limiter is not None:
            await limiter.hold(SLACK_API, wait, scope=channel_scope(channel))

    response = await _call("Slack chat.postMessage", client.chat_postMessage(**params), hold)
    return {"channel": response.get("channel"), "ts": response.get("ts")}
