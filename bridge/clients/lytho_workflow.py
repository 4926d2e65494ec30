"""Client of the Lytho Workflow Open API: work requests, tasks, proofs, projects (clients)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal, get_args
from urllib.parse import quote

import httpx

from bridge.clients.base import ApiClient, RetryPolicy, Sleep
from bridge.clients.ratelimit import Limiter
from bridge.errors import ClientError
from bridge.settings import Secret

Id = str | int
Kind = Literal["workrequest", "task", "proof", "project", "campaign"]
KINDS: Final[tuple[str, ...]] = get_args(Kind)
PAGE_SIZES: Final = (10, 20, 30)
JSON_PATCH: Final = "application/json-patch+json"

# Lists (`GET /{kind}?ids=…` and `GET /{kind}/search?…`) are pages counted from 1 with
# `pageSize` 10, 20 or 30. Their shape is not documented publicly; ours, shared with the
# sandbox, is {"items": [...], "page", "pageSize", "totalCount", "totalPages"}.


class LythoWorkflowClient(ApiClient):
    """The Lytho Workflow Open API, with an OAuth 2 client-credentials bearer token.

    The token is fetched on first use, kept until shortly before it expires, and fetched
    again once when the API answers 401. Updates are JSON Patch documents.
    """

    api = "Lytho Workflow"
    limiter_key = "lytho_workflow"
    credential_hint = "check LYTHO_CLIENT_ID and LYTHO_CLIENT_SECRET"

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        token_url: str,
        client_id: str,
        client_secret: Secret,
        limiter: Limiter | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout | None = None,
        sleep: Sleep | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(http, base_url, limiter=limiter, retry=retry, timeout=timeout, sleep=sleep)
        self.token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._token_lock = asyncio.Lock()
        self.tokens_fetched = 0

    # Authentication.

    def _secrets(self) -> Iterable[str]:
        return tuple(s for s in (self._client_secret.get(), self._token) if s)

    async def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.access_token()}"}

    async def _refresh_auth(self) -> bool:
        self._token = None
        return True

    async def access_token(self) -> str:
        """A valid bearer token: the cached one, or a new one from the token URL."""
        async with self._token_lock:
            if self._token is not None and self._clock() < self._expires_at:
                return self._token
            basic = base64.b64encode(
                f"{self._client_id}:{self._client_secret.get()}".encode()
            ).decode("ascii")
            body = await self.request_json(
                "POST",
                self.token_url,
                data={"grant_type": "client_credentials"},
                headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
                authenticate=False,
                limited=False,
            )
            token = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise ClientError(
                    f"POST {httpx.URL(self.token_url).path} answered without an access_token; "
                    "is LYTHO_TOKEN_URL the tenant's token URL?"
                )
            expires_in = body.get("expires_in", 3600)
            lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
            # Renew a little before the server would refuse the token.
            self._expires_at = self._clock() + lifetime - min(60.0, lifetime * 0.1)
            self._token = token
            self.tokens_fetched += 1
            return token

    # Reading.

    async def get(self, kind: Kind, item_id: Id) -> dict[str, Any]:
        """One work request, task, proof, project or campaign by id."""
        return await self._object("GET", f"{_kind(kind)}/{_seg(item_id)}")

    async def get_many(
        self, kind: Kind, ids: Iterable[Id], *, page_size: int = 30
    ) -> list[dict[str, Any]]:
        """The objects with these ids (missing ones left out), `page_size` ids per call."""
        _check_page_size(page_size)
        wanted = [str(i) for i in ids]
        found: list[dict[str, Any]] = []
        for start in range(0, len(wanted), page_size):
            chunk = wanted[start : start + page_size]
            params = [("ids", i) for i in chunk] + [("page", "1"), ("pageSize", str(page_size))]
            body = await self._object("GET", _kind(kind), params=params)
            found.extend(_items(body))
        return found

    async def search(
        self,
        kind: Kind,
        criteria: Mapping[str, Any] | None = None,
        *,
        page_size: int = 30,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every object matching `criteria` (query parameters), page by page."""
        _check_page_size(page_size)
        page = 1
        while True:
            params = {**(criteria or {}), "page": page, "pageSize": page_size}
            body = await self._object("GET", f"{_kind(kind)}/search", params=params)
            items = _items(body)
            for item in items:
                yield item
            total_pages = body.get("totalPages")
            if (
                not items
                or len(items) < page_size
                or (isinstance(total_pages, int) and page >= total_pages)
            ):
                return
            page += 1

    async def users(self, kind: Kind, item_id: Id) -> list[dict[str, Any]]:
        """The users involved in one object (assignees, reviewers, requesters)."""
        return await self._list("GET", f"{_kind(kind)}/{_seg(item_id)}/users")

    async def file_urls(self, kind: Kind, item_id: Id) -> list[dict[str, Any]]:
        """Download URLs of one object's files."""
        return await self._list("GET", f"{_kind(kind)}/{_seg(item_id)}/files/urls")

    # Writing.

    async def patch(
        self, kind: Kind, item_id: Id, operations: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Apply a JSON Patch (RFC 6902); a failed `test` op raises PermanentError(409)."""
        return await self._object(
            "PATCH",
            f"{_kind(kind)}/{_seg(item_id)}",
            content=json.dumps(list(operations)).encode(),
            headers={"Content-Type": JSON_PATCH},
        )

    async def update(
        self,
        kind: Kind,
        item_id: Id,
        changes: Mapping[str, Any],
        *,
        expect: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Replace top-level fields; with `expect`, only while those fields hold those values."""
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": f"/{_pointer(k)}", "value": v} for k, v in (expect or {}).items()
        ]
        ops += [
            {"op": "replace", "path": f"/{_pointer(k)}", "value": v} for k, v in changes.items()
        ]
        return await self.patch(kind, item_id, ops)

    # Helpers.

    async def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = await self.request_json(method, path, **kwargs)
        if not isinstance(body, dict):
            raise ClientError(f"{method} {path}: expected a JSON object, got {body!r:.100}")
        return body

    async def _list(self, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        body = await self.request_json(method, path, **kwargs)
        if isinstance(body, dict):
            body = _items(body)
        if not isinstance(body, list):
            raise ClientError(f"{method} {path}: expected a JSON list, got {body!r:.100}")
        return body


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(
            f"unknown Lytho Workflow type {kind!r}; expected one of {', '.join(KINDS)}"
        )
    return kind


def _seg(value: Id) -> str:
    return quote(str(value), safe="")


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _check_page_size(size: int) -> None:
    if size not in PAGE_SIZES:
        raise ValueError(f"pageSize must be one of 10, 20, 30, not {size}")


def _items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = body.get("items")
    if not isinstance(items, list):
        raise ClientError(f"expected a page with 'items', got {dict(body)!r:.100}")
    return items
