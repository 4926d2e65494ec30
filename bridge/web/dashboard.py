"""The dashboard: server-rendered pages to watch and operate the bridge (GET / and below).

Login with BRIDGE_ADMIN_TOKEN, then: an overview with hourly charts, the rules with their
24-hour numbers, recent events (refreshed live), one event's trace, the dead letters with
retry and drop buttons, and the pollers with their last run, lag and budget. Every POST
carries the session's CSRF token; every page is rendered from redacted data, so no secret
reaches the browser.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlencode

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from bridge.errors import EventError
from bridge.operate import admin, metrics
from bridge.operate.context import Context
from bridge.operate.queries import (
    OUTCOMES,
    BadQuery,
    EventQuery,
    dead_letter_list,
    event_detail,
    pollers,
    recent_events,
    rules_overview,
)
from bridge.web import prometheus
from bridge.web.auth import (
    LOGIN_COOKIE,
    admin_token,
    authorize,
    check_login,
    clear_session,
    csrf_ok,
    end_session,
    login_csrf_ok,
    new_login_csrf,
    read_form,
    safe_next,
    set_login_csrf,
    set_session,
    start_session,
)
from bridge.web.html import HERE, bar_chart, off_page, render
from bridge.web.throttle import Refusal

Handler = Callable[[Request], Awaitable[Response]]


def _bridge(request: Request) -> Context:
    bridge: Context = request.app.state.bridge
    return bridge


def page(handler: Handler) -> Handler:
    """Guard a page: off without the token (404), login first, CSRF on POST, 503 without Redis."""

    async def guarded(request: Request) -> Response:
        if admin_token(request) is None:
            return off_page()
        auth = await authorize(request)
        if isinstance(auth, Refusal):
            refused = render(
                request, "message.html", auth.status, title="Refused", message=auth.sentence()
            )
            refused.headers.update(auth.headers())
            return refused
        if auth is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        request.state.auth = auth
        if request.method == "POST":
            form = await read_form(request)
            if not csrf_ok(auth, form.get("csrf")):
                return render(
                    request,
                    "message.html",
                    403,
                    title="Form expired",
                    message="The form's security token did not match; reload the page and "
                    "try again.",
                )
        try:
            return await handler(request)
        except BadQuery as exc:
            return render(request, "message.html", 400, title="Bad filter", message=str(exc))
        except (RedisError, OSError):
            return render(
                request,
                "message.html",
                503,
                title="Redis unreachable",
                message="Redis cannot be reached right now; check REDIS_URL and retry.",
            )

    return guarded


# --- login ------------------------------------------------------------------------------


async def login_form(request: Request, message: str = "", status: int = 200) -> Response:
    if admin_token(request) is None:
        return off_page()
    csrf = request.cookies.get(LOGIN_COOKIE) or new_login_csrf()
    nxt = safe_next(request.query_params.get("next"))
    response = render(request, "login.html", status, login_csrf=csrf, next=nxt, message=message)
    set_login_csrf(response, request, csrf)
    return response


async def login(request: Request) -> Response:
    if admin_token(request) is None:
        return off_page()
    form = await read_form(request)
    if not login_csrf_ok(request, form.get("csrf")):
        return await login_form(request, "The form expired; try again.", 403)
    verdict = await check_login(request, form.get("token", ""))
    if isinstance(verdict, Refusal):
        refused = await login_form(request, verdict.sentence(), verdict.status)
        refused.headers.update(verdict.headers())
        return refused
    if not verdict:
        return await login_form(request, "That token is not BRIDGE_ADMIN_TOKEN.", 401)
    cookie = await start_session(request)
    response = RedirectResponse(safe_next(form.get("next")), status_code=303)
    set_session(response, request, cookie)
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@page
async def logout(request: Request) -> Response:
    await end_session(request)
    response = RedirectResponse("/login", status_code=303)
    clear_session(response)
    return response


# --- pages ------------------------------------------------------------------------------


@page
async def overview(request: Request) -> Response:
    bridge = _bridge(request)
    hours = await metrics.hourly_stats(bridge.metrics, 24)
    rules = await rules_overview(bridge)
    events, _ = await recent_events(bridge, EventQuery(limit=10))
    failed, _ = await recent_events(bridge, EventQuery(outcome="failed", limit=5))
    dead = await dead_letter_list(bridge, 1)
    gauges = await prometheus.gauges(bridge)
    day = {
        name: sum(fields.get(name, 0) for _, fields in hours)
        for name in ("events", "failed", "dead")
    }
    day["matches"] = sum(rule["matches_24h"] for rule in rules["rules"])
    return render(
        request,
        "overview.html",
        nav="overview",
        rule_set=rules["rule_set"],
        rule_count=len(rules["rules"]),
        day=day,
        dead_letters=dead["count"],
        queue=int(gauges["lytbridge_queue_jobs"]),
        worker_up=bool(gauges["lytbridge_worker_up"]),
        events=events,
        failed=failed,
        events_chart=bar_chart(hours, [("events", "events", "bar-events")]),
        failures_chart=bar_chart(
            hours,
            [("failed", "failed attempts", "bar-failed"), ("dead", "dead letters", "bar-dead")],
        ),
    )


@page
async def rules_page(request: Request) -> Response:
    overview_ = await rules_overview(_bridge(request))
    return render(
        request, "rules.html", nav="rules", rule_set=overview_["rule_set"], rules=overview_["rules"]
    )


@page
async def events_page(request: Request) -> Response:
    query = EventQuery.from_params(request.query_params)
    events, next_offset = await recent_events(_bridge(request), query)
    filters = {k: v for k, v in (("type", query.type), ("source", query.source)) if v}
    if query.outcome:
        filters["outcome"] = query.outcome
    if query.limit != 50:
        filters["limit"] = str(query.limit)
    older = None
    if next_offset is not None and len(events) >= query.limit:
        older = "/events?" + urlencode(filters | {"offset": str(next_offset)})
    return render(
        request,
        "events.html",
        nav="events",
        events=events,
        query={"type": query.type, "source": query.source, "outcome": query.outcome},
        outcomes=OUTCOMES,
        live_src="/api/events?" + urlencode(filters),
        live=query.offset == 0,
        older=older,
    )


@page
async def event_page(request: Request) -> Response:
    event_id = request.path_params["event_id"]
    detail = await event_detail(_bridge(request), event_id)
    if detail is None:
        return render(
            request,
            "message.html",
            404,
            title="No such event",
            message=f"No event {event_id!r} is stored (unknown, or older than BRIDGE_TRACE_TTL).",
        )
    trace = detail["trace"]
    return render(
        request,
        "event.html",
        nav="events",
        detail=detail,
        event=detail["event"],
        evaluations=[e for e in trace if e.get("kind") == "evaluated"],
        attempts=[e for e in trace if e.get("kind") == "step"],
        runs=[e for e in trace if e.get("kind") == "run"],
        others=[e for e in trace if e.get("kind") not in ("evaluated", "step", "run")],
    )


@page
async def replay_event(request: Request) -> Response:
    event_id = request.path_params["event_id"]
    try:
        run = await admin.replay(_bridge(request), event_id)
    except EventError as exc:
        return render(request, "message.html", 409, title="Cannot replay", message=str(exc))
    if run is None:
        return _back("/events", "missing", id=event_id)
    return _back(f"/events/{quote(event_id, safe='')}", "replayed", run=run)


@page
async def dead_letters_page(request: Request) -> Response:
    letters = await dead_letter_list(_bridge(request), 200)
    return render(
        request,
        "dead_letters.html",
        nav="dead-letters",
        letters=letters["dead_letters"],
        count=letters["count"],
    )


@page
async def pollers_page(request: Request) -> Response:
    every = await pollers(_bridge(request))
    return render(request, "pollers.html", nav="pollers", pollers=every)


@page
async def retry_letter(request: Request) -> Response:
    letter_id = request.path_params["letter_id"]
    letter = await admin.retry_dead_letter(_bridge(request), letter_id)
    return _back("/dead-letters", "retried" if letter else "missing", id=letter_id)


@page
async def drop_letter(request: Request) -> Response:
    letter_id = request.path_params["letter_id"]
    dropped = await admin.drop_dead_letter(_bridge(request), letter_id)
    return _back("/dead-letters", "dropped" if dropped else "missing", id=letter_id)


def _back(path: str, flash: str, **params: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?{urlencode({'flash': flash, **params})}", status_code=303)


class _GuardedStatic:
    """Static files that exist only while the admin surface is on."""

    def __init__(self) -> None:
        self.files = StaticFiles(directory=HERE / "static")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = scope.get("app")
        settings = app.state.bridge.settings if app is not None else None
        if settings is None or settings.admin_token is None:
            await off_page()(scope, receive, send)
            return
        await self.files(scope, receive, send)


def routes() -> list[BaseRoute]:
    return [
        Route("/", overview, methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/rules", rules_page, methods=["GET"]),
        Route("/events", events_page, methods=["GET"]),
        Route("/events/{event_id:text}/replay", replay_event, methods=["POST"]),
        Route("/events/{event_id:text}", event_page, methods=["GET"]),
        Route("/dead-letters", dead_letters_page, methods=["GET"]),
        Route("/dead-letters/{letter_id}/retry", retry_letter, methods=["POST"]),
        Route("/dead-letters/{letter_id}/drop", drop_letter, methods=["POST"]),
        Route("/pollers", pollers_page, methods=["GET"]),
        Mount("/static", app=_GuardedStatic(), name="static"),
    ]
