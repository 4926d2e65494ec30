"""Slack Web API calls through slack-sdk, with errors mapped to the bridge's error tree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bridge.clients.base import parse_retry_after
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
}
DEFAULT_RETRY_AFTER = 1.0


def retry_after_seconds(headers: Mapping[str, Any]) -> float:
    """Seconds to wait from a `Retry-After` header (any case; seconds or HTTP date)."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if isinstance(value, list):
        value = value[0] if value else None
    found = parse_retry_after(None if value is None else str(value))
    return DEFAULT_RETRY_AFTER if found is None else found


async def post_message(client: AsyncWebClient, **params: Any) -> dict[str, Any]:
    """chat.postMessage; returns {channel, ts}. Raises RateLimited, PermanentError, ClientError."""
    method = "Slack chat.postMessage"
    try:
        response = await client.chat_postMessage(**params)
    except SlackApiError as exc:
        status = exc.response.status_code
        data = exc.response.data if isinstance(exc.response.data, dict) else {}
        error = str(data.get("error") or f"HTTP {status}")
        if status == 429 or error == "ratelimited":
            wait = retry_after_seconds(exc.response.headers)
            raise RateLimited(
                f"{method} → 429 ratelimited; retry after {wait:.0f} s", retry_after=wait
            ) from None
        hint = HINTS.get(error)
        message = f"{method} → {error}" + (f"; {hint}" if hint else "")
        if status >= 500 or error in TRANSIENT_ERRORS:
            raise ClientError(message, status=status) from None
        raise PermanentError(message, status=status) from None
    except (TimeoutError, aiohttp.ClientError, SlackClientError) as exc:
        raise ClientError(f"{method} failed: {type(exc).__name__}") from None
    return {"channel": response.get("channel"), "ts": response.get("ts")}
