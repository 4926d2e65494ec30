"""What every API sandbox shares: request log, injected failures, rate limits, controls."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ErrorBody = Callable[[int, str], dict[str, Any]]
Handler = Callable[[Request], Awaitable[Response]]


class ApiError(Exception):
    """An error answer of the sandboxed API, rendered in that API's error shape."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def trace_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Failure:
    """Answers to inject: `count` matching requests get `status` (after `delay` seconds)."""

    status: int | None
    count: int = 1
    path: str = ""  # prefix of the request path to match; empty for any
    method: str = ""  # empty for any
    retry_after: str | None = None  # "3" (seconds), "date:3" (an HTTP date 3 s ahead)
    delay: float = 0.0
    message: str = "injected failure"

    def matches(self, method: str, path: str) -> bool:
        return (not self.method or self.method.upper() == method) and path.startswith(self.path)


class Gcra:
    """An in-memory GCRA limiter: several (interval, tolerance) limits on one key."""

    def __init__(
        self, limits: list[tuple[float, float]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._tat: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> float:
        """0 and the request booked, or the seconds until it would be allowed."""
        with self._lock:
            now = self._clock()
            tats = [max(self._tat.get((key, i), now), now) for i in range(len(self.limits))]
            wait = max(
                tat - tolerance - now for tat, (_, tolerance) in zip(tats, self.limits, strict=True)
            )
            if wait > 0:
                return wait
            for i, (tat, (interval, _)) in enumerate(zip(tats, self.limits, strict=True)):
                self._tat[(key, i)] = tat + interval
            return 0.0

    def reset(self) -> None:
        with self._lock:
            self._tat.clear()


def rate_limits(
    per_minute: float | None, burst: int, per_day: int | None
) -> list[tuple[float, float]]:
    """GCRA (interval, tolerance) pairs for a per-minute limit of `burst` and a daily quota."""
    limits: list[tuple[float, float]] = []
    if per_minute:
        interval = 60.0 / per_minute
        limits.append((interval, interval * (max(1, burst) - 1)))
    if per_day:
        interval = 86_400.0 / per_day
        limits.append((interval, interval * (per_day - 1)))
    return limits


class SandboxCore:
    """State every sandbox keeps: the request log and the failures to inject."""

    def __init__(self, error_body: ErrorBody) -> None:
        self.lock = threading.RLock()
        self.error_body = error_body
        self.requests: list[dict[str, Any]] = []
        self.failures: list[Failure] = []

    def log(self, method: str, path: str, query: str, status: int) -> None:
        with self.lock:
            self.requests.append(
                {
                    "method": method,
                    "path": path,
                    "query": query,
                    "status": status,
                    "time": time.time(),
                }
            )

    def take_failure(self, method: str, path: str) -> Failure | None:
        with self.lock:
            for failure in self.failures:
                if failure.matches(method, path):
                    failure.count -= 1
                    if failure.count <= 0:
                        self.failures.remove(failure)
                    return failure
        return None

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return JSONResponse(self.error_body(status, message), status_code=status, headers=headers)


def retry_after_value(spec: str) -> str:
    """The header for an injected failure: seconds as given, or `date:N` as an HTTP date."""
    if spec.startswith("date:"):
        when = datetime.now(UTC) + timedelta(seconds=float(spec[5:]))
        return format_datetime(when, usegmt=True)
    return spec


class SandboxMiddleware:
    """Logs API requests (not `/_sandbox/` ones) and answers injected failures."""

    def __init__(self, app: ASGIApp, core: SandboxCore) -> None:
        self.app = app
        self.core = core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox/"):
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        failure = self.core.take_failure(method, path)
        if failure is not None:
            if failure.delay:
                await asyncio.sleep(failure.delay)
            if failure.status is not None:
                headers = {}
                if failure.retry_after is not None:
                    headers["Retry-After"] = retry_after_value(failure.retry_after)
                response = self.core.error(failure.status, failure.message, headers)
                self.core.log(method, path, query, failure.status)
                await response(scope, receive, send)
                return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.core.log(method, path, query, status)


async def read_json(request: Request) -> Any:
    """The JSON body of a request, or a 400."""
    raw = await request.body()
    if not raw:
        raise ApiError(400, "a JSON body is required")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None


def wrap(
    core: SandboxCore, handler: Handler, guard: Callable[[Request], None] | None = None
) -> Handler:
    """An endpoint that runs `guard` (auth, rate limits) and renders ApiError."""

    async def endpoint(request: Request) -> Response:
        try:
            if guard is not None:
                guard(request)
            return await handler(request)
        except ApiError as exc:
            return core.error(exc.status, exc.message, exc.headers)

    return endpoint


def http_exception_handler(
    core: SandboxCore,
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """Router errors (unknown path 404, wrong method 405) in the API's error shape."""

    async def handle(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, HTTPException):
            return core.error(500, "internal error")
        # A 405 keeps its Allow header, as Spring's does: it says which methods the path has.
        return core.error(exc.status_code, exc.detail, dict(exc.headers or {}) or None)

    return handle


def control_routes(core: SandboxCore, reset: Callable[[], None]) -> list[Route]:
    """`/_sandbox/` endpoints every sandbox has: requests log, failure injection, reset."""

    async def get_requests(request: Request) -> Response:
        with core.lock:
            return JSONResponse({"requests": list(core.requests)})

    async def clear_requests(request: Request) -> Response:
        with core.lock:
            core.requests.clear()
        return Response(status_code=204)

    async def fail(request: Request) -> Response:
        try:
            body = await read_json(request)
            failure = Failure(
                status=body.get("status"),
                count=int(body.get("count", 1)),
                path=str(body.get("path", "")),
                method=str(body.get("method", "")),
                retry_after=None if body.get("retry_after") is None else str(body["retry_after"]),
                delay=float(body.get("delay", 0)),
                message=str(body.get("message", "injected failure")),
            )
        except (ApiError, AttributeError, TypeError, ValueError) as exc:
            return JSONResponse({"error": f"bad failure spec: {exc}"}, status_code=400)
        with core.lock:
            core.failures.append(failure)
        return JSONResponse({"queued": len(core.failures)}, status_code=201)

    async def do_reset(request: Request) -> Response:
        with core.lock:
            core.requests.clear()
            core.failures.clear()
            reset()
        return Response(status_code=204)

    return [
        Route("/_sandbox/requests", get_requests, methods=["GET"]),
        Route("/_sandbox/requests", clear_requests, methods=["DELETE"]),
        Route("/_sandbox/fail", fail, methods=["POST"]),
        Route("/_sandbox/reset", do_reset, methods=["POST"]),
    ]


def page_params(
    request: Request, *, first: int, size_name: str, default_size: int
) -> tuple[int, int]:
    """`page` and the page size from the query string, or a 400."""
    try:
        page = int(request.query_params.get("page", first))
        size = int(request.query_params.get(size_name, default_size))
    except ValueError:
        raise ApiError(400, f"page and {size_name} must be whole numbers") from None
    if page < first:
        raise ApiError(400, f"page must be at least {first}")
    return page, size


# JSON Patch (RFC 6902), for sandboxes whose API updates that way.


def _resolve(doc: Any, pointer: str) -> tuple[Any, str]:
    """The container of a JSON Pointer's target and the last token."""
    if not pointer.startswith("/"):
        raise ApiError(400, f"bad JSON Pointer {pointer!r}")
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]
    for token in tokens[:-1]:
        try:
            doc = doc[int(token)] if isinstance(doc, list) else doc[token]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ApiError(400, f"path {pointer} does not exist") from None
    return doc, tokens[-1]


def _get(doc: Any, pointer: str) -> Any:
    if pointer == "":
        return doc
    parent, key = _resolve(doc, pointer)
    try:
        return parent[int(key)] if isinstance(parent, list) else parent[key]
    except (KeyError, IndexError, ValueError, TypeError):
        raise ApiError(400, f"path {pointer} does not exist") from None


def _remove(doc: Any, pointer: str) -> Any:
    parent, key = _resolve(doc, pointer)
    try:
        return parent.pop(int(key)) if isinstance(parent, list) else parent.pop(key)
    except (KeyError, IndexError, ValueError, TypeError):
        raise ApiError(400, f"path {pointer} does not exist") from None


def _add(doc: Any, pointer: str, value: Any, *, replace: bool = False) -> None:
    parent, key = _resolve(doc, pointer)
    if isinstance(parent, list):
        if key == "-" and not replace:
            parent.append(value)
            return
        try:
            index = int(key)
        except ValueError:
            raise ApiError(400, f"bad array index in {pointer}") from None
        if not 0 <= index <= len(parent) - (1 if replace else 0):
            raise ApiError(400, f"index out of range in {pointer}")
        if replace:
            parent[index] = value
        else:
            parent.insert(index, value)
    elif isinstance(parent, dict):
        if replace and key not in parent:
            raise ApiError(400, f"path {pointer} does not exist")
        parent[key] = value
    else:
        raise ApiError(400, f"path {pointer} does not exist")


def apply_patch(document: dict[str, Any], ops: list[Any]) -> dict[str, Any]:
    """RFC 6902 on a copy; a failing `test` is a 409, anything malformed a 400."""
    doc = copy.deepcopy(document)
    for op in ops:
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise ApiError(400, "each operation needs an op and a path")
        kind, path = op.get("op"), op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise ApiError(400, f"{kind} needs a value")
        if path == "":
            raise ApiError(400, "the whole document cannot be patched")
        if kind == "add":
            _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "replace":
            _add(doc, path, copy.deepcopy(op["value"]), replace=True)
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise ApiError(409, f"test failed: {path} is not {op['value']!r}")
        elif kind in ("move", "copy"):
            source = op.get("from")
            if not isinstance(source, str):
                raise ApiError(400, f"{kind} needs a from")
            value = _remove(doc, source) if kind == "move" else copy.deepcopy(_get(doc, source))
            _add(doc, path, value)
        else:
            raise ApiError(400, f"unknown op {kind!r}")
    return doc


def sandbox_app(routes: Sequence[BaseRoute], core: SandboxCore, sandbox: Any) -> Starlette:
    """A sandbox's Starlette app: its routes, the request log and failure middleware, and
    error bodies in the API's own shape; `app.state.sandbox` is its state."""
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SandboxMiddleware, core=core)],
        exception_handlers={HTTPException: http_exception_handler(core)},
    )
    app.state.sandbox = sandbox
    return app
