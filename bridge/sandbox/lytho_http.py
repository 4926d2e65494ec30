"""How both Lytho sandboxes answer: error bodies, pages in a dialect's shape, OPTIONS (sandbox)."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.sandbox._common import ApiError, Handler, trace_id
from bridge.sandbox.lytho_dialect import Pages

_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def lytho_error(status: int, message: str) -> dict[str, Any]:
    """An error body as Lytho answers it."""
    return {"status": status, "message": message, "traceId": trace_id()}


def page_params(request: Request, pages: Pages, default_size: int) -> tuple[int, int]:
    """The page number and size a request asks for, checked as the dialect's API would."""
    name, size_name = pages.page_param, pages.size_param
    try:
        page = int(request.query_params.get(name, pages.first_page))
        size = int(request.query_params.get(size_name, default_size))
    except ValueError:
        raise ApiError(400, f"{name} and {size_name} must be whole numbers") from None
    if page < pages.first_page:
        raise ApiError(400, f"{name} must be at least {pages.first_page}")
    if pages.sizes and size not in pages.sizes:
        allowed = ", ".join(str(s) for s in pages.sizes)
        raise ApiError(400, f"{size_name} must be one of {allowed}")
    if not 1 <= size <= pages.max_size:
        raise ApiError(400, f"{size_name} must be between 1 and {pages.max_size}")
    return page, size


def page_body(
    items: list[dict[str, Any]],
    page: int,
    size: int,
    pages: Pages,
    extra: dict[str, Any] | None = None,
) -> Any:
    """One page of `items` in the dialect's shape: a bare list, or an object whose items,
    total, page count and last flag sit under the dialect's keys ("" leaves one out);
    `extra` adds an API's own keys (the dialect's win)."""
    index = page - pages.first_page
    content = copy.deepcopy(items[index * size : (index + 1) * size])
    if pages.items == "list":
        return content
    count = math.ceil(len(items) / size)
    body: dict[str, Any] = dict(extra or {})
    body[pages.items] = content
    for key, value in (
        (pages.total, len(items)),
        (pages.total_pages, count),
        (pages.last, index + 1 >= count),
    ):
        if key:
            body[key] = value
    return body


def allow_header(methods: Iterable[str]) -> str:
    """`GET,HEAD,PUT,OPTIONS`: the methods of one path, as Spring MVC lists them."""
    have = set(methods) | {"OPTIONS"}
    if "GET" in have:
        have.add("HEAD")
    return ",".join(m for m in _ORDER if m in have)


def path_routes(table: Iterable[tuple[str, str, Handler]]) -> list[Route]:
    """One route per path for (path, method, endpoint) rows; each answers OPTIONS with 204
    and `Allow` (no key needed, no rate limit booked). Paths with fewer placeholders come
    first, so `assets/getUploadLink` is not taken for `assets/{asset_id}`."""
    by_path: dict[str, dict[str, Handler]] = {}
    for path, method, handler in table:
        by_path.setdefault(path, {})[method] = handler
    ordered = sorted(by_path.items(), key=lambda row: row[0].count("{"))
    return [
        Route(path, _dispatch(handlers), methods=[*handlers, "OPTIONS"])
        for path, handlers in ordered
    ]


def _dispatch(handlers: dict[str, Handler]) -> Handler:
    allow = allow_header(handlers)

    async def endpoint(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={"Allow": allow})
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return endpoint
