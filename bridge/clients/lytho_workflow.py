"""Client of the Lytho Workflow Open API: work requests, tasks, proofs, projects, campaigns."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal, get_args

import httpx

from bridge.clients.base import ApiClient, RetryPolicy, Sleep
from bridge.clients.lytho_profile import LythoProfile, PageStyle, default_profile
from bridge.clients.pages import Page, Walk, read_page
from bridge.clients.ratelimit import Limiter
from bridge.errors import ClientError, PermanentError
from bridge.settings import Secret

logger = logging.getLogger(__name__)

Id = str | int
Kind = Literal["workrequest", "task", "proof", "project", "campaign"]
KINDS: Final[tuple[str, ...]] = get_args(Kind)
JSON_PATCH: Final = "application/json-patch+json"

# Paths, page parameters, page sizes and the page shape come from the Lytho profile
# (workflow.* keys, bridge/clients/lytho_profile.yaml; BRIDGE_LYTHO_PROFILE overrides):
# no public document gives them. Pages are read tolerantly (bridge/clients/pages.py):
# items under the profile's key or a common one, or a bare list; `page_shape` says which
# was met, and a shape other than the profile's is logged once with the fix.


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
        profile: LythoProfile | None = None,
    ) -> None:
        super().__init__(http, base_url, limiter=limiter, retry=retry, timeout=timeout, sleep=sleep)
        self.token_url = token_url
        self.profile = profile if profile is not None else default_profile()
        self.pages: PageStyle = self.profile.workflow_pages
        self.auth_style = str(self.profile.value("workflow.auth.token_auth"))
        # The key a page's items were last found under ("list": a bare list); None before
        # the first page.
        self.page_shape: str | None = None
        self._shape_warned: set[str] = set()
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
            form = {"grant_type": "client_credentials"}
            headers = {"Accept": "application/json"}
            if self.auth_style == "body":
                # workflow.auth.token_auth: body — the credentials as form fields.
                form.update(client_id=self._client_id, client_secret=self._client_secret.get())
            else:
                basic = base64.b64encode(
                    f"{self._client_id}:{self._client_secret.get()}".encode()
                ).decode("ascii")
                headers["Authorization"] = f"Basic {basic}"
            try:
                body = await self.request_json(
                    "POST",
                    self.token_url,
                    data=form,
                    headers=headers,
                    authenticate=False,
                    limited=False,
                )
            except PermanentError as exc:
                if exc.status != 401:
                    raise
                # Right credentials sent the wrong way are refused alike: name that too.
                raise PermanentError(
                    f"{exc}, and how they are sent (workflow.auth.token_auth: {self.auth_style})",
                    status=exc.status,
                ) from None
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

    def path(self, name: str, kind: str, item_id: Id | None = None) -> str:
        """The profile's path `workflow.paths.<name>` for one kind (and object id)."""
        if item_id is None:
            return self.profile.workflow_path(name, kind=_kind(kind))
        return self.profile.workflow_path(name, kind=_kind(kind), id=str(item_id))

    async def get(self, kind: Kind, item_id: Id) -> dict[str, Any]:
        """One work request, task, proof, project or campaign by id."""
        return await self._object("GET", self.path("get", kind, item_id))

    async def get_many(
        self, kind: Kind, ids: Iterable[Id], *, page_size: int | None = None
    ) -> list[dict[str, Any]]:
        """The objects with these ids (missing ones left out), `page_size` ids per call."""
        size = self._check_page_size(page_size)
        wanted = [str(i) for i in ids]
        path = self.path("many", kind)
        found: list[dict[str, Any]] = []
        for start in range(0, len(wanted), size):
            chunk = wanted[start : start + size]
            params = [("ids", i) for i in chunk] + [
                (self.pages.page_param, str(self.pages.first_page)),
                (self.pages.size_param, str(size)),
            ]
            found.extend((await self._page(path, params)).items)
        return found

    async def search_page(
        self,
        kind: Kind | str,
        page: int,
        criteria: Mapping[str, Any] | None = None,
        *,
        page_size: int | None = None,
    ) -> Page:
        """One page of `GET {kind}/search` (page numbers as the API counts them)."""
        size = self._check_page_size(page_size)
        params = {
            **(criteria or {}),
            self.pages.page_param: page,
            self.pages.size_param: size,
        }
        return await self._page(self.path("search", kind), params)

    async def search(
        self,
        kind: Kind,
        criteria: Mapping[str, Any] | None = None,
        *,
        page_size: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every object matching `criteria` (query parameters), page by page."""
        size = self._check_page_size(page_size)
        page = self.pages.first_page
        walk = Walk(f"GET {self.path('search', kind)}", "workflow", self.pages, size)
        while True:
            found = await self.search_page(kind, page, criteria, page_size=size)
            last = walk.last(page, found)  # before the items: a repeat yields nothing twice
            for item in found.items:
                yield item
            if last:
                return
            page += 1

    async def users(self, kind: Kind, item_id: Id) -> list[dict[str, Any]]:
        """The users involved in one object (assignees, reviewers, requesters)."""
        return await self._list(self.path("users", kind, item_id))

    async def file_urls(self, kind: Kind, item_id: Id) -> list[dict[str, Any]]:
        """Download URLs of one object's files (a work request's deliverable files)."""
        name = "deliverable_files" if kind == "workrequest" else "files"
        return await self._list(self.path(name, kind, item_id))

    # Writing.

    async def patch(
        self, kind: Kind, item_id: Id, operations: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Apply a JSON Patch (RFC 6902); a failed `test` op raises PermanentError(409)."""
        return await self._object(
            "PATCH",
            self.path("get", kind, item_id),
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

    def _check_page_size(self, size: int | None) -> int:
        if size is None:
            return self.pages.size
        if size not in self.pages.sizes:
            allowed = ", ".join(str(s) for s in self.pages.sizes)
            raise ValueError(f"{self.pages.size_param} must be one of {allowed}, not {size}")
        return size

    async def _page(self, path: str, params: Any) -> Page:
        body = await self.request_json("GET", path, params=params)
        found = read_page(body, self.pages, path)
        self._met(found.shape)
        return found

    def _met(self, shape: str) -> None:
        """Remember the page shape met; say once how to fix a profile that expects another."""
        self.page_shape = shape
        if shape != self.pages.items and shape not in self._shape_warned:
            self._shape_warned.add(shape)
            expected = "a bare list" if self.pages.items == "list" else repr(self.pages.items)
            met = "a bare list" if shape == "list" else f"{shape!r}"
            logger.warning(
                "Lytho Workflow pages hold their items under %s, not %s as the profile says; "
                "read anyway. Set workflow.pages.items: %s in BRIDGE_LYTHO_PROFILE.",
                met,
                expected,
                shape,
            )

    async def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = await self.request_json(method, path, **kwargs)
        if not isinstance(body, dict):
            raise ClientError(f"{method} {path}: expected a JSON object, got {body!r:.100}")
        return body

    async def _list(self, path: str) -> list[dict[str, Any]]:
        body = await self.request_json("GET", path)
        if isinstance(body, list):
            return [i for i in body if isinstance(i, dict)]
        return read_page(body, self.pages, path).items


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(
            f"unknown Lytho Workflow type {kind!r}; expected one of {', '.join(KINDS)}"
        )
    return kind


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
