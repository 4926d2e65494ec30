"""The second leg of a Lytho upload: the file's bytes to the link getUploadLink gave (clients).

The link is not Lytho's API: it may be another host (a storage service), so it gets no API
key, does not count against Lytho's rate limit, and is reached through the client the
caller gives (the guarded outbound client, which refuses private addresses unless
BRIDGE_HTTP_ALLOW lists them). Its query is often a signature and is never shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from bridge.clients.base import ApiClient, RetryPolicy
from bridge.errors import ClientError, RateLimited


@dataclass(frozen=True)
class UploadLink:
    """Where an upload's bytes go, and the id that finalizes it."""

    url: str
    upload_id: Any


class _UploadTarget(ApiClient):
    """The upload link: no credentials, the shared retries and messages, and never its query
    (a signature, whatever its encoding) in a message or a log line."""

    api = "the upload link"

    def __init__(self, http: httpx.AsyncClient, link: str, **kwargs: Any) -> None:
        super().__init__(http, shown_link(link), **kwargs)
        # The query as written and as httpx sends it, its pairs and their values decoded:
        # masked (longest first) should a server's message echo any of them.
        found: set[str] = set()
        try:
            sent = httpx.URL(link).query.decode("ascii", "replace")
        except httpx.InvalidURL:  # the request says so; nothing is sent
            sent = ""
        for query in (urlsplit(link).query, sent):
            pairs = parse_qsl(query, keep_blank_values=True)
            found.update([query, *query.split("&"), *(v for pair in pairs for v in pair)])
        self._hidden = tuple(sorted((v for v in found if len(v) >= 4), key=len, reverse=True))

    def _shown(self, url: httpx.URL) -> str:
        return url.path

    def _secrets(self) -> tuple[str, ...]:
        return self._hidden

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
        text = f"uploading to {shown_link(link.url)}: {exc}"
        if isinstance(exc, RateLimited):
            raise RateLimited(text, retry_after=exc.retry_after) from None
        raise type(exc)(text, status=exc.status) from None


def shown_link(url: str) -> str:
    """The link as messages show it: scheme://host/path, no query, fragment or credentials."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the upload link"
    host = f"[{host}]" if ":" in host else host
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))
