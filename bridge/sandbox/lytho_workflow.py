"""A local Lytho Workflow Open API with its OAuth 2 token endpoint (sandbox)."""

from __future__ import annotations

import base64
import binascii
import copy
import math
import secrets
import time
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.sandbox._common import (
    ApiError,
    Gcra,
    SandboxCore,
    apply_patch,
    control_routes,
    now_iso,
    page_params,
    rate_limits,
    read_json,
    sandbox_app,
    trace_id,
    wrap,
)

KINDS = ("workrequest", "task", "proof", "project", "campaign")
PAGE_SIZES = (10, 20, 30)
STATUSES = {
    "workrequest": {"submitted", "accepted", "rejected", "completed"},
    "task": {"todo", "in_progress", "blocked", "done"},
    "proof": {"in_review", "changes_requested", "approved", "rejected"},
    "project": {"planned", "in_progress", "on_hold", "completed"},
    "campaign": {"planned", "active", "completed"},
}
_READ_ONLY = ("id", "createdAt")


def workflow_error(status: int, message: str) -> dict[str, Any]:
    return {"status": status, "message": message, "traceId": trace_id()}


def _seed() -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, dict[str, Any]]]:
    t0 = "2026-10-01T08:00:00Z"
    users = {
        "u1": {"id": 11, "firstName": "Dana", "lastName": "Reyes", "email": "dana@example.com"},
        "u2": {"id": 12, "firstName": "Sam", "lastName": "Okafor", "email": "sam@example.com"},
        "u3": {"id": 13, "firstName": "Lee", "lastName": "Chen", "email": "lee@example.com"},
    }
    objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
    objects["campaign"]["1"] = {
        "id": 1,
        "name": "Spring 2026 launch",
        "status": "active",
        "startDate": "2026-03-01",
        "endDate": "2026-05-31",
        "projectIds": [10],
        "createdAt": t0,
        "modifiedAt": t0,
    }
    objects["project"]["10"] = {
        "id": 10,
        "name": "Spring hero visuals",
        "status": "in_progress",
        "campaignId": 1,
        "ownerId": 11,
        "dueDate": "2026-02-20",
        "priority": "high",
        "createdAt": t0,
        "modifiedAt": t0,
    }
    task_names = [
        "Brief the agency",
        "Shoot hero photo",
        "Retouch hero",
        "Social cut-downs",
        "Copy review",
        "Legal check",
        "Print files",
        "Translate copy",
        "Upload to DAM",
        "Schedule posts",
        "Brief store teams",
        "Wrap-up report",
    ]
    for n, name in enumerate(task_names):
        task_id = 100 + n
        objects["task"][str(task_id)] = {
            "id": task_id,
            "projectId": 10,
            "name": name,
            "status": "done" if n < 3 else ("in_progress" if n < 6 else "todo"),
            "assigneeId": 11 + n % 3,
            "dueDate": f"2026-02-{n + 1:02d}",
            "createdAt": t0,
            "modifiedAt": t0,
        }
    for n, (name, status) in enumerate(
        [
            ("Hero visual v3", "in_review"),
            ("Story video v1", "changes_requested"),
            ("Flyer A5 v2", "approved"),
            ("Banner set v1", "in_review"),
        ]
    ):
        proof_id = 7 + n
        objects["proof"][str(proof_id)] = {
            "id": proof_id,
            "projectId": 10,
            "taskId": 102 + n,
            "name": name,
            "status": status,
            "version": 1,
            "assetId": 1001 + n,
            "reviewerIds": [12, 13],
            "createdAt": t0,
            "modifiedAt": t0,
        }
    objects["workrequest"]["300"] = {
        "id": 300,
        "title": "Summer teaser visuals",
        "status": "submitted",
        "requesterId": 12,
        "projectId": None,
        "createdAt": t0,
        "modifiedAt": t0,
    }
    objects["workrequest"]["301"] = {
        "id": 301,
        "title": "Spring hero visuals",
        "status": "accepted",
        "requesterId": 13,
        "projectId": 10,
        "createdAt": t0,
        "modifiedAt": t0,
    }
    return objects, users


class WorkflowSandbox:
    """The state and endpoints of one Lytho Workflow sandbox."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        token_ttl: int,
        rate_limit_per_minute: float | None,
        rate_limit_burst: int,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.core = SandboxCore(workflow_error)
        self.limiter = Gcra(rate_limits(rate_limit_per_minute, rate_limit_burst, None))
        self.tokens: dict[str, float] = {}  # token → monotonic expiry
        self.tokens_issued = 0
        self.reset()

    def reset(self) -> None:
        with self.core.lock:
            self.objects, self.people = _seed()
            self.tokens.clear()
            self.limiter.reset()

    # Token endpoint.

    async def token(self, request: Request) -> Response:
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
        # Parsed by hand: Starlette's form parser would need python-multipart.
        form = parse_qs((await request.body()).decode("latin-1"))
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

    def _kind(self, request: Request) -> str:
        kind: str = request.path_params["kind"]
        if kind not in KINDS:
            raise ApiError(404, f"Unknown resource type {kind}")
        return kind

    def _object(self, request: Request) -> tuple[str, dict[str, Any]]:
        kind = self._kind(request)
        found = self.objects[kind].get(request.path_params["id"])
        if found is None:
            raise ApiError(404, f"{kind} {request.path_params['id']} not found")
        return kind, found

    def _page(self, request: Request, items: list[dict[str, Any]]) -> Response:
        page, size = page_params(request, first=1, size_name="pageSize", default_size=10)
        if size not in PAGE_SIZES:
            raise ApiError(400, "pageSize must be 10, 20 or 30")
        total = len(items)
        return JSONResponse(
            {
                "items": copy.deepcopy(items[(page - 1) * size : page * size]),
                "page": page,
                "pageSize": size,
                "totalCount": total,
                "totalPages": math.ceil(total / size),
            }
        )

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
        criteria = {k: v for k, v in request.query_params.items() if k not in ("page", "pageSize")}
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
                elif key == "modifiedSince":
                    items = [i for i in items if str(i.get("modifiedAt", "")) >= value]
                elif key in fields:
                    items = [i for i in items if str(i.get(key)) == value]
                else:
                    raise ApiError(400, f"unknown search parameter {key}")
            return self._page(request, items)

    async def users(self, request: Request) -> Response:
        with self.core.lock:
            _, found = self._object(request)
            ids = {found.get(k) for k in ("ownerId", "assigneeId", "requesterId") if found.get(k)}
            ids.update(found.get("reviewerIds") or [])
            users = [
                {**u, "role": _role(found, u["id"])} for u in self.people.values() if u["id"] in ids
            ]
            return JSONResponse(users)

    async def file_urls(self, request: Request) -> Response:
        with self.core.lock:
            kind, found = self._object(request)
            base = str(request.base_url).rstrip("/")
            return JSONResponse(
                [
                    {
                        "fileId": f"{kind}-{found['id']}-1",
                        "fileName": f"{kind}-{found['id']}.pdf",
                        "url": f"{base}/_sandbox/files/{kind}-{found['id']}.pdf?sig={trace_id()}",
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
            for key in _READ_ONLY:
                if patched.get(key) != found.get(key):
                    raise ApiError(400, f"{key} cannot be changed")
            if patched.get("status") not in STATUSES[kind]:
                raise ApiError(400, f"status must be one of {', '.join(sorted(STATUSES[kind]))}")
            patched["modifiedAt"] = now_iso()
            found.clear()
            found.update(patched)
            return JSONResponse(copy.deepcopy(found))

    # Controls.

    async def control_edit(self, request: Request) -> Response:
        """Merge fields into an object, as someone working in Lytho would (approve a proof)."""
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "send the fields to change as an object")
        with self.core.lock:
            _, found = self._object(request)
            found.update({k: v for k, v in body.items() if k not in _READ_ONLY})
            found["modifiedAt"] = now_iso()
            return JSONResponse(copy.deepcopy(found))

    async def control_expire_tokens(self, request: Request) -> Response:
        with self.core.lock:
            self.tokens.clear()
        return Response(status_code=204)


def _role(obj: dict[str, Any], user_id: int) -> str:
    for key, role in (
        ("ownerId", "owner"),
        ("assigneeId", "assignee"),
        ("requesterId", "requester"),
    ):
        if obj.get(key) == user_id:
            return role
    return "reviewer"


def create_lytho_workflow_app(
    client_id: str = "sandbox-client",
    client_secret: str = "sandbox-secret",  # noqa: S107 - a sandbox's demo credential
    *,
    token_ttl: int = 3600,
    rate_limit_per_minute: float | None = None,
    rate_limit_burst: int = 1,
) -> Starlette:
    """A Lytho Workflow sandbox: API under `/v1/`, token endpoint at `/oauth/token`.

    Seeded with a campaign, a project with twelve tasks and four proofs, and two work
    requests. Tokens live `token_ttl` seconds. `app.state.sandbox` is the state.
    """
    sandbox = WorkflowSandbox(
        client_id, client_secret, token_ttl, rate_limit_per_minute, rate_limit_burst
    )
    core = sandbox.core

    def api(path: str, handler: Any, method: str = "GET") -> Route:
        return Route("/v1/" + path, wrap(core, handler, sandbox.guard), methods=[method])

    routes = [
        Route("/oauth/token", sandbox.token, methods=["POST"]),
        api("{kind}/search", sandbox.search),
        api("{kind}/{id}/users", sandbox.users),
        api("{kind}/{id}/files/urls", sandbox.file_urls),
        api("{kind}/{id}", sandbox.get_one),
        api("{kind}/{id}", sandbox.patch, "PATCH"),
        api("{kind}", sandbox.get_many),
        Route("/_sandbox/{kind}/{id}", wrap(core, sandbox.control_edit), methods=["PATCH"]),
        Route("/_sandbox/expire-tokens", sandbox.control_expire_tokens, methods=["POST"]),
        *control_routes(core, sandbox.reset),
    ]
    return sandbox_app(routes, core, sandbox)
