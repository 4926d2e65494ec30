"""The admin JSON API under /api/: events and their traces, replays, rules, dead letters, pollers.

Routes only: what they answer comes from `bridge.operate.queries` (shared with the
dashboard and the CLI), and every body goes through `public`, so no configured secret is
ever sent back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.errors import EventError
from bridge.operate import admin
from bridge.operate.context import Context
from bridge.operate.queries import (
    MAX_LIMIT,
    BadQuery,
    EventQuery,
    dead_letter_list,
    event_detail,
    pollers,
    public,
    recent_events,
    rules_overview,
    whole_number,
)
from bridge.web.auth import UNSAFE_METHODS, admin_token, authorize, csrf_ok, error
from bridge.web.throttle import Refusal

Handler = Callable[[Request], Awaitable[Response]]


class AnyText(PathConvertor):
    """A path parameter that takes every character, newlines included (`{id:text}`): an
    event stored with a control character in its id can still be opened."""

    regex = "(?s:.*)"


register_url_convertor("text", AnyText())


def api(handler: Handler) -> Handler:
    """Guard an API endpoint: off without the token (404), 401 without proof, CSRF, 503."""

    async def guarded(request: Request) -> Response:
        if admin_token(request) is None:
            return error(404, "not_found", "the admin API is off; set BRIDGE_ADMIN_TOKEN")
        auth = await authorize(request)
        if isinstance(auth, Refusal):
            return auth.json()
        if auth is None:
            return error(
                401,
                "unauthorized",
                "send Authorization: Bearer <BRIDGE_ADMIN_TOKEN>",
                **{"WWW-Authenticate": 'Bearer realm="lytbridge"'},
            )
        if request.method in UNSAFE_METHODS and not csrf_ok(
            auth, request.headers.get("x-csrf-token")
        ):
            return error(403, "csrf", "a call made with the dashboard's session needs X-CSRF-Token")
        try:
            response = await handler(request)
        except BadQuery as exc:
            return error(400, "bad_request", str(exc))
        except (RedisError, OSError):
            return error(503, "store_unavailable", "Redis cannot be reached right now; retry later")
        response.headers["Cache-Control"] = "no-store"
        return response

    return guarded


def _bridge(request: Request) -> Context:
    bridge: Context = request.app.state.bridge
    return bridge


def ok(request: Request, body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(public(_bridge(request), body), status_code=status)


async def list_events(request: Request) -> Response:
    query = EventQuery.from_params(request.query_params)
    events, next_offset = await recent_events(_bridge(request), query)
    return ok(request, {"events": events, "next_offset": next_offset})


async def get_event(request: Request) -> Response:
    event_id = request.path_params["event_id"]
    detail = await event_detail(_bridge(request), event_id)
    if detail is None:
        return _no_event(event_id)
    return ok(request, detail)


def _no_event(event_id: str) -> JSONResponse:
    return error(
        404,
        "not_found",
        f"no event {event_id!r} is stored (unknown, or older than BRIDGE_TRACE_TTL)",
    )


async def replay_event(request: Request) -> Response:
    event_id = request.path_params["event_id"]
    try:
        run = await admin.replay(_bridge(request), event_id)
    except EventError as exc:
        return error(409, "unreadable", str(public(_bridge(request), str(exc))))
    if run is None:
        return _no_event(event_id)
    return ok(request, {"event_id": event_id, "run": run}, 202)


async def list_rules(request: Request) -> Response:
    return ok(request, await rules_overview(_bridge(request)))


async def list_dead_letters(request: Request) -> Response:
    limit = whole_number(request.query_params, "limit", 100, 1, MAX_LIMIT)
    return ok(request, await dead_letter_list(_bridge(request), limit))


async def list_pollers(request: Request) -> Response:
    return ok(request, {"pollers": await pollers(_bridge(request))})


async def retry_dead_letter(request: Request) -> Response:
    letter_id = request.path_params["letter_id"]
    letter = await admin.retry_dead_letter(_bridge(request), letter_id)
    if letter is None:
        return error(404, "not_found", f"no dead letter {letter_id!r}")
    body = {
        "retrying": letter.id,
        "event_id": letter.event_id,
        "rule_id": letter.rule_id,
        "step": letter.step,
    }
    return ok(request, body, 202)


async def drop_dead_letter(request: Request) -> Response:
    letter_id = request.path_params["letter_id"]
    if not await admin.drop_dead_letter(_bridge(request), letter_id):
        return error(404, "not_found", f"no dead letter {letter_id!r}")
    return ok(request, {"dropped": letter_id})


async def unknown(request: Request) -> Response:
    return error(404, "not_found", f"no such endpoint: {request.method} {request.url.path}")


def routes() -> list[Route]:
    every = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return [
        Route("/api/events", api(list_events), methods=["GET"]),
        Route("/api/events/{event_id:text}/replay", api(replay_event), methods=["POST"]),
        Route("/api/events/{event_id:text}", api(get_event), methods=["GET"]),
        Route("/api/rules", api(list_rules), methods=["GET"]),
        Route("/api/dead-letters", api(list_dead_letters), methods=["GET"]),
        Route("/api/pollers", api(list_pollers), methods=["GET"]),
        Route("/api/dead-letters/{letter_id}/retry", api(retry_dead_letter), methods=["POST"]),
        Route("/api/dead-letters/{letter_id}", api(drop_dead_letter), methods=["DELETE"]),
        Route("/api/{rest:path}", api(unknown), methods=every),
        Route("/api", api(unknown), methods=every),
    ]
