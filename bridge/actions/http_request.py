"""http.request: any method to an HTTPS endpoint, through the same address guard as http.post.

The answer is read through a cap (`MAX_RESPONSE_BYTES`): a larger one fails the step
before it fills the worker's memory. Only headers that cannot carry a credential or a
session are kept in the result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import httpx

from bridge.actions.action import Action, ActionDeps, StepCall
from bridge.actions.http import Endpoint, request_headers
from bridge.errors import PermanentError
from bridge.schema import ActionSchema, Param

METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_RESPONSE_BYTES: Final = 1024 * 1024
# Response headers never kept in a result (stored in Redis, shown in traces and templates).
SECRET_HEADERS: Final = frozenset(
    {"set-cookie", "set-cookie2", "authorization", "proxy-authorization", "www-authenticate"}
    | {"proxy-authenticate", "cookie"}
)
SECRET_WORDS: Final = ("token", "secret", "session", "auth", "cookie", "key", "signature")

SCHEMA = ActionSchema(
    name="http.request",
    description="Send a GET, POST, PUT, PATCH or DELETE to an HTTPS endpoint (private "
    "addresses refused unless BRIDGE_HTTP_ALLOW lists them); result {status, headers, json, "
    "text}.",
    params={
        "method": Param("method", ("string",), required=True, choices=METHODS),
        "url": Param("url", ("string",), required=True, description="https://… endpoint"),
        "json": Param("json", ("any",), description="the JSON body"),
        "headers": Param("headers", ("object",), description="extra request headers"),
        "query": Param("query", ("object",), description="query parameters {name: value}"),
    },
    results={"status": "integer", "headers": "object"},
)


class ResponseTooLarge(PermanentError):
    """The answer is larger than MAX_RESPONSE_BYTES."""


class _Capped(httpx.AsyncByteStream):
    """An answer's body, decoded (gzip, deflate, br), refused past `limit` bytes of it: a
    small compressed answer that would unpack to gigabytes is refused as it unpacks."""

    def __init__(self, response: httpx.Response, limit: int, where: str) -> None:
        self.response, self.limit, self.where = response, limit, where

    async def __aiter__(self) -> AsyncIterator[bytes]:
        total = 0
        async for chunk in self.response.aiter_bytes():
            total += len(chunk)
            if total > self.limit:
                raise ResponseTooLarge(
                    f"http.request: the answer of {self.where} is larger than "
                    f"{self.limit // 1024} KiB, the most a step keeps; ask the endpoint for less"
                )
            yield chunk

    async def aclose(self) -> None:
        await self.response.aclose()


class _CappedTransport(httpx.AsyncBaseTransport):
    """Sends through the guarded client (its checks and redirects); caps what comes back."""

    def __init__(self, outbound: httpx.AsyncClient, limit: int) -> None:
        self.outbound, self.limit = outbound, limit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.outbound.send(request, stream=True)
        where = f"{request.method} {request.url.host}{request.url.path}"
        # The body is passed on decoded, so its encoding and length headers no longer hold.
        headers = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in ("content-encoding", "content-length")
        ]
        return httpx.Response(
            response.status_code,
            headers=headers,
            stream=_Capped(response, self.limit, where),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """The guarded client belongs to the worker: it stays open."""


def kept_headers(headers: httpx.Headers) -> dict[str, str]:
    """The response headers a result keeps: none that may carry a credential."""
    kept: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        if low in SECRET_HEADERS or any(word in low for word in SECRET_WORDS):
            continue
        kept[low] = value
    return kept


def _query(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    scalar = (str, int, float, bool)
    if not isinstance(raw, Mapping) or not all(
        isinstance(v, scalar) or (isinstance(v, list) and all(isinstance(i, scalar) for i in v))
        for v in raw.values()
    ):
        raise PermanentError(
            "http.request 'query' must be an object of names to values (or lists of values)"
        )
    return {str(k): v for k, v in raw.items()}


async def run(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
    method = call.params["method"]
    if method not in METHODS:
        raise PermanentError(
            f"http.request 'method' is {method!r}; expected one of {', '.join(METHODS)}"
        )
    url = call.params["url"]
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise PermanentError(
            f"http.request 'url' must be an https:// URL (http:// only to a host "
            f"BRIDGE_HTTP_ALLOW lists), not {str(url).split('?', 1)[0]!r:.80}"
        )
    query = _query(call.params.get("query"))
    headers = request_headers(call.params.get("headers"), "http.request")
    async with httpx.AsyncClient(
        transport=_CappedTransport(deps.outbound, MAX_RESPONSE_BYTES), trust_env=False
    ) as capped:
        endpoint = Endpoint(capped, url, retry=deps.retry, timeout=deps.timeout)
        response = await endpoint.request(
            method,
            url,
            params=query,
            json=call.params.get("json"),
            headers=headers,
        )
    parsed: Any = None
    text: str | None = None
    if response.content:
        try:
            parsed = response.json()
        except ValueError:
            text = response.text
    return {
        "status": response.status_code,
        "headers": kept_headers(response.headers),
        "json": parsed,
        "text": text,
    }


REQUEST = Action(SCHEMA, run)
