"""A local Lytics API that answers as lytics-openapi.yaml describes (sandbox)."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.sandbox._common import (
    ApiError,
    Gcra,
    SandboxCore,
    control_routes,
    now_iso,
    rate_limits,
    read_json,
    sandbox_app,
    wrap,
)
from bridge.sandbox.lytics_data import (
    IN_SEGMENT,
    JOB_STATUSES,
    MAX_SCAN_LIMIT,
    connection_request,
    decode_cursor,
    encode_cursor,
    lytics_error,
    ok,
    sandbox_id,
    seed,
    slugs_of,
)


class LyticsSandbox:
    """The state and endpoints of one Lytics sandbox."""

    def __init__(self, token: str, rate_limit_per_minute: float | None, burst: int) -> None:
        self.token = token
        self.core = SandboxCore(lytics_error)
        self.limiter = Gcra(rate_limits(rate_limit_per_minute, burst, None))
        self.reset()

    def reset(self) -> None:
        with self.core.lock:
            seeded = seed()
            self.accounts: dict[str, dict[str, Any]] = seeded["accounts"]
            self.profiles: dict[str, dict[str, Any]] = seeded["profiles"]
            self.segments: dict[str, dict[str, Any]] = seeded["segments"]
            self.connections: dict[str, dict[str, Any]] = seeded["connections"]
            self.jobs: dict[str, dict[str, Any]] = seeded["jobs"]
            self.datamodels: dict[str, dict[str, Any]] = seeded["datamodels"]
            self.collected: dict[str, list[dict[str, Any]]] = {}
            self.work: dict[str, dict[str, Any]] = {}
            self.counter = 1000
            self.limiter.reset()

    def guard(self, request: Request) -> None:
        # The spec allows the token in the header or as `?key=`.
        given = request.headers.get("authorization") or request.query_params.get("key")
        if given != self.token:
            raise ApiError(401, "Not authorized")
        if self.limiter.limits and self.limiter.check("all") > 0:
            # Lytics sends no Retry-After and no rate-limit headers.
            raise ApiError(429, "Too many requests")

    def _new_id(self) -> str:
        self.counter += 1
        return sandbox_id(self.counter)

    def _segment(self, slug_or_id: str) -> dict[str, Any] | None:
        if slug_or_id in self.segments:
            return self.segments[slug_or_id]
        return next((s for s in self.segments.values() if s["id"] == slug_or_id), None)

    def _segment_view(self, segment: dict[str, Any]) -> dict[str, Any]:
        slug = segment["slug_name"]
        size = sum(1 for p in self.profiles.values() if slug in slugs_of(p))
        return {**copy.deepcopy(segment), "size": size}

    # Accounts.

    async def list_accounts(self, request: Request) -> Response:
        with self.core.lock:
            return ok(copy.deepcopy(list(self.accounts.values())))

    async def get_account(self, request: Request) -> Response:
        with self.core.lock:
            found = self.accounts.get(request.path_params["aid"])
            if found is None:
                raise ApiError(404, "account not found")
            return ok(copy.deepcopy(found))

    # Segments.

    async def list_segments(self, request: Request) -> Response:
        with self.core.lock:
            return ok([self._segment_view(s) for s in self.segments.values()])

    async def get_segment(self, request: Request) -> Response:
        with self.core.lock:
            found = self._segment(request.path_params["slug_or_id"])
            if found is None:
                raise ApiError(404, "segment not found")
            return ok(self._segment_view(found))

    async def scan(self, request: Request) -> Response:
        try:
            limit = int(request.query_params.get("limit", MAX_SCAN_LIMIT))
        except ValueError:
            raise ApiError(400, "limit must be a whole number") from None
        if not 1 <= limit <= MAX_SCAN_LIMIT:
            raise ApiError(400, f"limit must be between 1 and {MAX_SCAN_LIMIT}")
        body = await read_json(request)
        if not isinstance(body, dict) or ("filter" in body) == ("id" in body):
            raise ApiError(400, "send exactly one of filter or id")
        offset = decode_cursor(request.query_params.get("next", ""))
        with self.core.lock:
            if "id" in body:
                segment = self._segment(str(body["id"]))
                if segment is None:
                    raise ApiError(400, f"unknown segment {body['id']}")
                slug = segment["slug_name"]
            else:
                match = IN_SEGMENT.match(str(body["filter"]))
                if match is None or self._segment(match.group(1)) is None:
                    raise ApiError(400, 'the sandbox understands only in_segment("slug")')
                slug = match.group(1)
            members = [p for p in self.profiles.values() if slug in slugs_of(p)]
            page = copy.deepcopy(members[offset : offset + limit])
            more = offset + limit < len(members)
            return ok(page, total=len(members), _next=encode_cursor(offset + limit) if more else "")

    # Entities.

    async def entity(self, request: Request) -> Response:
        # Split the raw path: a value may hold an escaped "/" (%2F), which the decoded
        # path would turn into a fourth segment.
        raw = request.scope.get("raw_path") or request.url.path.encode()
        parts = raw.decode("latin-1").split("/api/entity/", 1)[-1].split("/")
        if len(parts) != 3 or not all(parts):
            raise ApiError(404, "not found")
        table, field, value = (unquote(part) for part in parts)
        fields = [f for f in request.query_params.get("fields", "").split(",") if f]
        with self.core.lock:
            found = None
            if table == "user":
                found = next(
                    (p for p in self.profiles.values() if field in p and str(p[field]) == value),
                    None,
                )
            if found is None:
                raise ApiError(404, f"no {table} entity with {field} = {value}")
            profile = copy.deepcopy(found)
        if fields:
            profile = {k: v for k, v in profile.items() if k in fields}
        return ok(profile)

    # Data models.

    async def list_datamodels(self, request: Request) -> Response:
        with self.core.lock:
            return ok(copy.deepcopy(list(self.datamodels.values())))

    async def get_datamodel(self, request: Request) -> Response:
        with self.core.lock:
            found = self.datamodels.get(request.path_params["name"])
            if found is None:
                raise ApiError(404, "data model not found")
            return ok(copy.deepcopy(found))

    # Connections.

    async def list_connections(self, request: Request) -> Response:
        with self.core.lock:
            return ok(copy.deepcopy(list(self.connections.values())))

    def _connection(self, request: Request) -> dict[str, Any]:
        found = self.connections.get(request.path_params["id"])
        if found is None:
            raise ApiError(404, "connection not found")
        return found

    async def get_connection(self, request: Request) -> Response:
        with self.core.lock:
            return ok(copy.deepcopy(self._connection(request)))

    async def create_connection(self, request: Request) -> Response:
        fields = connection_request(await read_json(request))
        with self.core.lock:
            stamp = now_iso()
            conn = {"id": self._new_id(), **fields, "created": stamp, "modified": stamp}
            self.connections[conn["id"]] = conn
            return ok(copy.deepcopy(conn))

    async def update_connection(self, request: Request) -> Response:
        fields = connection_request(await read_json(request))
        with self.core.lock:
            conn = self._connection(request)
            # A PUT is the whole connection: optional fields not sent are dropped.
            for key in ("auth_id", "config"):
                conn.pop(key, None)
            conn.update(fields, modified=now_iso())
            return ok(copy.deepcopy(conn))

    async def delete_connection(self, request: Request) -> Response:
        with self.core.lock:
            self._connection(request)
            del self.connections[request.path_params["id"]]
            return ok()

    # Jobs and work.

    async def list_jobs(self, request: Request) -> Response:
        with self.core.lock:
            return ok(copy.deepcopy(list(self.jobs.values())))

    def _job(self, request: Request) -> dict[str, Any]:
        found = self.jobs.get(request.path_params["id"])
        if found is None:
            raise ApiError(404, "job not found")
        return found

    async def get_job(self, request: Request) -> Response:
        with self.core.lock:
            return ok(copy.deepcopy(self._job(request)))

    async def create_job(self, request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        for key in ("type", "connection_id"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise ApiError(400, f"{key} is required")
        config = body.get("config", {})
        if not isinstance(config, dict):
            raise ApiError(400, "config must be an object")
        with self.core.lock:
            if body["connection_id"] not in self.connections:
                raise ApiError(400, f"unknown connection {body['connection_id']}")
            stamp = now_iso()
            job = {
                "id": self._new_id(),
                "type": body["type"],
                "status": "pending",
                "connection_id": body["connection_id"],
                "config": config,
                "created": stamp,
                "modified": stamp,
            }
            self.jobs[job["id"]] = job
            return ok(copy.deepcopy(job))

    async def cancel_job(self, request: Request) -> Response:
        with self.core.lock:
            job = self._job(request)
            job.update(status="cancelled", modified=now_iso())
            return ok()

    async def create_work(self, request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("workflow_id"), str):
            raise ApiError(400, "workflow_id is required")
        if not isinstance(body.get("config", {}), dict) or not isinstance(
            body.get("verbose_logging", False), bool
        ):
            raise ApiError(400, "config must be an object and verbose_logging a boolean")
        with self.core.lock:
            work_id = self._new_id()
            self.work[work_id] = copy.deepcopy(body)
            return ok({"id": work_id})

    # Collect.

    async def collect(self, request: Request) -> Response:
        body = await read_json(request)
        # One event is an object (the spec's CollectRequest); several come as an array of
        # them in one request, as Lytics' JSON collect takes them.
        events = body if isinstance(body, list) else [body]
        if not all(isinstance(event, dict) for event in events):
            raise ApiError(400, "the body must be a JSON object or an array of objects")
        stream = request.query_params.get("stream") or "default"
        # An event with no fields at all identifies nobody: Lytics drops it.
        kept = [copy.deepcopy(event) for event in events if event]
        with self.core.lock:
            if kept:
                self.collected.setdefault(stream, []).extend(kept)
        return ok({"message_count": len(events), "rejected_count": len(events) - len(kept)})

    # Controls.

    async def control_job(self, request: Request) -> Response:
        """Change a job's status (and error), as Lytics would while running it."""
        body = await read_json(request)
        if not isinstance(body, dict) or body.get("status") not in JOB_STATUSES:
            raise ApiError(400, f"status must be one of {', '.join(sorted(JOB_STATUSES))}")
        with self.core.lock:
            job = self._job(request)
            job.update({k: v for k, v in body.items() if k in ("status", "error")})
            job["modified"] = now_iso()
            return JSONResponse(copy.deepcopy(job))

    async def control_members(self, request: Request) -> Response:
        """Move profiles into (`add`) or out of (`remove`) a segment by `_uid`."""
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "send {add: [uid…], remove: [uid…]}")
        with self.core.lock:
            segment = self._segment(request.path_params["slug"])
            if segment is None:
                raise ApiError(404, "segment not found")
            slug = segment["slug_name"]
            for uid in body.get("add", []):
                profile = self.profiles.setdefault(
                    uid, {"_uid": uid, "segments": ["all_users"], "created": now_iso()}
                )
                if slug not in slugs_of(profile):
                    profile["segments"] = [*slugs_of(profile), slug]
            for uid in body.get("remove", []):
                member = self.profiles.get(uid)
                if member and slug in slugs_of(member):
                    member["segments"].remove(slug)
            return JSONResponse(self._segment_view(segment))

    async def control_profile(self, request: Request) -> Response:
        """Add or replace a profile by its `_uid` (in segment all_users unless it says)."""
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("_uid"), str):
            raise ApiError(400, "send a profile object with a string _uid")
        profile = {"segments": ["all_users"], "created": now_iso(), **copy.deepcopy(body)}
        with self.core.lock:
            self.profiles[profile["_uid"]] = profile
        return JSONResponse(copy.deepcopy(profile))

    async def control_collected(self, request: Request) -> Response:
        stream = request.query_params.get("stream")
        with self.core.lock:
            if stream:
                return JSONResponse({stream: copy.deepcopy(self.collected.get(stream, []))})
            return JSONResponse(copy.deepcopy(self.collected))


def create_lytics_app(
    token: str = "sandbox-lytics-token",  # noqa: S107 - a sandbox's demo credential
    *,
    rate_limit_per_minute: float | None = None,
    rate_limit_burst: int = 10,
) -> Starlette:
    """A Lytics sandbox whose answers follow lytics-openapi.yaml.

    Seeded with an account, 24 profiles in three segments, a connection, three jobs
    and a data model. Past `rate_limit_per_minute` it answers 429 without Retry-After,
    as Lytics does. `app.state.sandbox` is the state.
    """
    sandbox = LyticsSandbox(token, rate_limit_per_minute, rate_limit_burst)
    core = sandbox.core

    def api(path: str, handler: Any, method: str = "GET") -> Route:
        return Route("/api/" + path, wrap(core, handler, sandbox.guard), methods=[method])

    def control(path: str, handler: Any, method: str) -> Route:
        return Route("/_sandbox/" + path, wrap(core, handler), methods=[method])

    routes = [
        api("account", sandbox.list_accounts),
        api("account/{aid}", sandbox.get_account),
        api("segment", sandbox.list_segments),
        api("segment/scan", sandbox.scan, "POST"),
        api("segment/{slug_or_id}", sandbox.get_segment),
        api("entity/{rest:path}", sandbox.entity),
        api("datamodel", sandbox.list_datamodels),
        api("datamodel/{name}", sandbox.get_datamodel),
        api("connection", sandbox.list_connections),
        api("connection", sandbox.create_connection, "POST"),
        api("connection/{id}", sandbox.get_connection),
        api("connection/{id}", sandbox.update_connection, "PUT"),
        api("connection/{id}", sandbox.delete_connection, "DELETE"),
        api("job", sandbox.list_jobs),
        api("job", sandbox.create_job, "POST"),
        api("job/{id}", sandbox.get_job),
        api("job/{id}", sandbox.cancel_job, "DELETE"),
        api("work", sandbox.create_work, "POST"),
        api("collect", sandbox.collect, "POST"),
        control("jobs/{id}", sandbox.control_job, "POST"),
        control("segments/{slug}/members", sandbox.control_members, "POST"),
        control("collected", sandbox.control_collected, "GET"),
        control("profiles", sandbox.control_profile, "POST"),
        *control_routes(core, sandbox.reset),
    ]
    return sandbox_app(routes, core, sandbox)
