"""The second leg of a Lytho upload: the file's bytes to the link getUploadLink gave (clients).

The link is not Lytho's API: it may be another host (a storage service), so it gets no API
key, does not count against Lytho's rate limit, and is reached through the client the
caller gives (the guarded outbound client, which refuses private addresses unless
BRIDGE_HTTP_ALLOW lists them). Its query is often a signature and is never shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from bridge.clients.base import ApiClient, RetryPolicy
from bridge.errors import ClientError, RateLimited


@dataclass(frozen=True)
class UploadLink:
    """Where an upload's bytes go, and the id that finalizes it."""

    url: str
    upload_id: Any


class _UploadTarget(ApiClient):
    """The upload link: no credentials, the shared retries and messages."""

    api = "the upload link"

    def _hint(self, status: int) -> str:
        if status in (401, 403):
            return "the link refused the file (it may have expired); a replay asks for a new link"
        return super()._hint(status)


async def send_to_link(
    http: httpx.AsyncClient,
    link: UploadLink,
    method: str,
    data: bytes,
    content_type: str,
    *,
    retry: RetryPolicy,
    request_timeout: httpx.Timeout,
) -> None:
    """Send `data` to the link with `method` (PUT or POST); ClientError names no signature."""
    target = _UploadTarget(http, link.url, retry=retry, timeout=request_timeout)
    parts = urlsplit(link.url)
    try:
        await target.request(
            method,
            link.url,
            content=data,
            headers={"Content-Type": content_type},
            authenticate=False,
            limited=False,
        )
    except ClientError as exc:
        text = str(exc).replace("?" + parts.query, "?…") if parts.query else str(exc)
        shown = urlunsplit(parts._replace(query="", fragment=""))
        text = f"uploading to {shown}: {text}"
        if isinstance(exc, RateLimited):
            raise RateLimited(text, retry_after=exc.retry_after) from None
        raise type(exc)(text, status=exc.status) from None
