"""A local Lytho Workflow Open API with its OAuth 2 token endpoint (sandbox)."""

from __future__ import annotations

import base64
import binascii
import copy
import math
import secrets
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.sandbox._common import (
    ApiError,
    Gcra,
    SandboxCore,
    apply_patch,
    control_routes,
    now_iso,
    rate_limits,
    read_json,
    sandbox_app,
    trace_id,
    wrap,
)
from bridge.sandbox.lytho_dialect import LythoDialect
from bridge.sandbox.lytho_http import lytho_error, page_body, page_params, path_routes
from bridge.sandbox.lytho_workflow_data import KINDS, STATUSES, role, seed


class WorkflowSandbox:
    """The state and endpoints of one Lytho Workflow sandbox."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        token_ttl: int,
        rate_limit_per_minute: float | None,
        rate_limit_burst: int,
        dialect: LythoDialect,
        ignores_modified_since: bool,
    ) -> None:
        self.dialect = dialect
        self.fields = dialect.workflow_fields
        self.kinds = {segment: kind for kind, segment in dialect.kinds.items()}
        self.ignores_modified_since = ignores_modified_since
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.core = SandboxCore(lytho_error)
        self.limiter = Gcra(rate_limits(rate_limit_per_minute, rate_limit_burst, None))
        self.tokens: dict[str, float] = {}  # token → monotonic expiry
        self.tokens_issued = 0
        self.reset()

    def reset(self) -> None:
        with self.core.lock:
            self.objects, self.people = seed(self.fields)
            self.tokens.clear()
            self.limiter.reset()

    # Token endpoint.

    async def token(self, request: Request) -> Response:
        """A client-credentials token; the client's id and secret come as HTTP Basic or as
        form fields, as the dialect's `workflow.auth.token_auth` says."""
        # Parsed by hand: Starlette's form parser would need python-multipart.
        form = parse_qs((await request.body()).decode("latin-1"))
        if self.dialect.value("workflow.auth.token_auth") == "body":
            scheme = "basic"
            user = (form.get("client_id") or [""])[0]
            password = (form.get("client_secret") or [""])[0]
        else:
            auth = request.headers.get("authorization", "")
            try:
                scheme, _, encoded = auth.partition(" ")
                user, _, password = base64.b64decode(encoded).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                scheme, user, password = "", "", ""
        if scheme.lower() != "basic" or (user, password) != (self.client_id, self.client_secret):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Client authentication failed"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="token"'},
            )
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return JSONResponse(
                {"error": "invalid_request", "error_description": "send a form body"},
                status_code=400,
            )
        if form.get("grant_type") != ["client_credentials"]:
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "use client_credentials"},
                status_code=400,
            )
        token = secrets.token_urlsafe(24)
        with self.core.lock:
            self.tokens[token] = time.monotonic() + self.token_ttl
            self.tokens_issued += 1
        return JSONResponse(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl}
        )

    # API.

    def guard(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self.core.lock:
            expiry = self.tokens.get(token) if scheme.lower() == "bearer" else None
        if expiry is None or time.monotonic() >= expiry:
            raise ApiError(401, "Unauthorized: invalid or expired access token")
        if self.limiter.limits:
            wait = self.limiter.check("all")
            if wait > 0:
                raise ApiError(429, "Too many requests", {"Retry-After": str(math.ceil(wait))})

    def _kind(self, request: Request, *, control: bool = False) -> str:
        """The kind a path's segment names; controls may use the kind's own name too."""
        segment: str = request.path_params["kind"]
        if segment in self.kinds:
            return self.kinds[segment]
        if control and segment in KINDS:
            return segment
        raise ApiError(404, f"Unknown resource type {segment}")

    def _object(self, request: Request, *, control: bool = False) -> tuple[str, dict[str, Any]]:
        kind = self._kind(request, control=control)
        found = self.objects[kind].get(request.path_params["id"])
        if found is None:
            raise ApiError(404, f"{kind} {request.path_params['id']} not found")
        return kind, found

    def _page(self, request: Request, items: list[dict[str, Any]]) -> Response:
        pages = self.dialect.workflow_pages
        page, size = page_params(request, pages, pages.sizes[0])
        extra = {pages.page_param: page, pages.size_param: size}
        return JSONResponse(page_body(items, page, size, pages, extra))

    async def get_one(self, request: Request) -> Response:
        with self.core.lock:
            _, found = self._object(request)
            return JSONResponse(copy.deepcopy(found))

    async def get_many(self, request: Request) -> Response:
        ids = [i for raw in request.query_params.getlist("ids") for i in raw.split(",") if i]
        if not ids:
            raise ApiError(400, "ids is required: ?ids=1&ids=2")
        with self.core.lock:
            kind = self._kind(request)
            found = [self.objects[kind][i] for i in ids if i in self.objects[kind]]
            return self._page(request, found)

    async def search(self, request: Request) -> Response:
        """Objects of a kind matching every known criterion: `q` (in the name or title), the
        dialect's modified-since parameter, or a field's value; other parameters are ignored,
        as real APIs do."""
        pages = self.dialect.workflow_pages
        skip = (pages.page_param, pages.size_param)
        criteria = {k: v for k, v in request.query_params.items() if k not in skip}
        since_param = self.dialect.value("workflow.search.modified_since")
        modified = self.fields["modifiedAt"]
        with self.core.lock:
            kind = self._kind(request)
            items = list(self.objects[kind].values())
            fields = set().union(*(item.keys() for item in items)) if items else set()
            for key, value in criteria.items():
                if key == "q":
                    needle = value.casefold()
                    items = [
                        i
                        for i in items
                        if needle in str(i.get("name") or i.get("title") or "").casefold()
                    ]
                elif since_param and key == since_param:
                    if not self.ignores_modified_since:
                        since = _moment(value, key)
                        # Objects without a modification time (work requests) pass.
                        items = [
                            i
                            for i in items
                            if modified not in i or _moment(i[modified], key) >= since
                        ]
                elif key in fields:
                    items = [i for i in items if str(i.get(key)) == value]
            return self._page(request, items)

    async def users(self, request: Request) -> Response:
        with self.core.lock:
            _, found = self._object(request)
            ids = {found.get(k) for k in ("ownerId", "assigneeId", "requesterId") if found.get(k)}
            ids.update(found.get("reviewerIds") or [])
            users = [
                {**u, "role": role(found, u["id"])} for u in self.people.values() if u["id"] in ids
            ]
            return JSONResponse(users)

    async def file_urls(self, request: Request) -> Response:
        """Download URLs of a task's, proof's or project's files (the documents list
        "Retrieve … Files" for those; a work request has deliverable files instead)."""
        return self._file_urls(request, deliverables=False)

    async def deliverable_file_urls(self, request: Request) -> Response:
        """Download URLs of a work request's deliverable files."""
        return self._file_urls(request, deliverables=True)

    def _file_urls(self, request: Request, *, deliverables: bool) -> Response:
        with self.core.lock:
            kind, found = self._object(request)
            if (kind == "workrequest") != deliverables:
                what = "deliverable files" if deliverables else "files"
                raise ApiError(404, f"a {kind} has no {what} here")
            ref = f"{kind}-{found[self.fields['id']]}"
            base = str(request.base_url).rstrip("/")
            return JSONResponse(
                [
                    {
                        "fileId": f"{ref}-1",
                        "fileName": f"{ref}.pdf",
                        "url": f"{base}/_sandbox/files/{ref}.pdf?sig={trace_id()}",
                        "expiresAt": now_iso(),
                    }
                ]
            )

    async def patch(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/json-patch+json":
            raise ApiError(415, "send a JSON Patch as application/json-patch+json")
        ops = await read_json(request)
        if not isinstance(ops, list):
            raise ApiError(400, "a JSON Patch is a list of operations")
        with self.core.lock:
            kind, found = self._object(request)
            patched = apply_patch(found, ops)
            for key in (self.fields["id"], "createdAt"):
                if patched.get(key) != found.get(key):
                    raise ApiError(400, f"{key} cannot be changed")
            status, allowed = self.fields["status"], sorted(STATUSES.get(kind, ()))
            if allowed and patched.get(status) not in allowed:
                raise ApiError(400, f"{status} must be one of {', '.join(allowed)}")
            self._modified(patched)
            found.clear()
            found.update(patched)
            return JSONResponse(copy.deepcopy(found))

    def _modified(self, obj: dict[str, Any]) -> None:
        """Stamp a change on an object whose kind keeps a modification time."""
        if self.fields["modifiedAt"] in obj:
            obj[self.fields["modifiedAt"]] = now_iso()

    # Controls.

    async def control_edit(self, request: Request) -> Response:
        """Merge fields into an object, as someone working in Lytho would (approve a proof)."""
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "send the fields to change as an object")
        with self.core.lock:
            _, found = self._object(request, control=True)
            read_only = (self.fields["id"], "createdAt")
            found.update({k: v for k, v in body.items() if k not in read_only})
            self._modified(found)
            return JSONResponse(copy.deepcopy(found))

    async def control_expire_tokens(self, request: Request) -> Response:
        with self.core.lock:
            self.tokens.clear()
        return Response(status_code=204)


def _moment(value: Any, param: str) -> datetime:
    """An ISO 8601 date-time, compared as a moment (`Z` and `+00:00` alike), or a 400."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise ApiError(400, f"{param} must be a date-time like 2026-10-01T08:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def create_lytho_workflow_app(
    client_id: str = "sandbox-client",
    client_secret: str = "sandbox-secret",  # noqa: S107 - a sandbox's demo credential
    *,
    token_ttl: int = 3600,
    rate_limit_per_minute: float | None = None,
    rate_limit_burst: int = 1,
    dialect: LythoDialect | None = None,
    ignores_modified_since: bool = False,
) -> Starlette:
    """A Lytho Workflow sandbox: API under `/v1/`, token endpoint at `/oauth/token`.

    Seeded with three campaigns, a project with twelve tasks and four proofs, and two work
    requests. Tokens live `token_ttl` seconds. `dialect` (default: the documents' reading)
    sets its paths, kinds, pages and field names; `ignores_modified_since` makes search
    ignore the modified-since filter, as some APIs would. Every path answers OPTIONS with
    its methods. `app.state.sandbox` is the state.
    """
    dialect = dialect or LythoDialect()
    sandbox = WorkflowSandbox(
        client_id,
        client_secret,
        token_ttl,
        rate_limit_per_minute,
        rate_limit_burst,
        dialect,
        ignores_modified_since,
    )
    core = sandbox.core

    def api(name: str, handler: Any, method: str = "GET") -> tuple[str, str, Any]:
        path = "/v1/" + dialect.workflow_path(name)
        return path, method, wrap(core, handler, sandbox.guard)

    table = [
        ("/oauth/token", "POST", sandbox.token),
        api("search", sandbox.search),
        api("users", sandbox.users),
        api("files", sandbox.file_urls),
        api("deliverable_files", sandbox.deliverable_file_urls),
        api("get", sandbox.get_one),
        api("get", sandbox.patch, "PATCH"),
        api("many", sandbox.get_many),
        ("/_sandbox/{kind}/{id}", "PATCH", wrap(core, sandbox.control_edit)),
        ("/_sandbox/expire-tokens", "POST", sandbox.control_expire_tokens),
    ]
    routes = [*path_routes(table), *control_routes(core, sandbox.reset)]
    return sandbox_app(routes, core, sandbox)
