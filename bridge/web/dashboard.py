"""The dashboard: server-rendered pages to watch and operate the bridge (GET / and below).

Login with BRIDGE_ADMIN_TOKEN, then: an overview with hourly charts, the rules with their
24-hour numbers, recent events (refreshed live), one event's trace, the dead letters with
retry and drop buttons, and the pollers with their last run, lag and budget. Every POST
carries the session's CSRF token; every page is rendered from redacted data, so no secret
reaches the browser.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
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
    displayable,
    event_detail,
    pollers,
    public,
    recent_events,
    rules_overview,
)
from bridge.web import prometheus
from bridge.web.auth import (
    LOGIN_COOKIE,
    Auth,
    Refusal,
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

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
FLASHES = {
    "replayed": "Queued again as run {run}.",
    "retried": "Dead letter {id} is being retried from its failed step.",
    "dropped": "Dead letter {id} was dropped.",
    "missing": "{id} no longer exists.",
}

Handler = Callable[[Request], Awaitable[Response]]


def _show(value: Any, limit: int = 160) -> str:
    text = json.dumps(displayable(value), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pretty(value: Any) -> str:
    value = displayable(value)
    try:
        return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)
    except TypeError:  # keys of several types cannot be sorted
        return json.dumps(value, ensure_ascii=False, indent=2, default=str)


def _instant(at: Any) -> datetime | None:
    """A stored time (seconds since the epoch) as a datetime; None when it is not one."""
    try:
        return datetime.fromtimestamp(float(at), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _utc(at: float | None) -> str:
    if at is None:
        return "never"
    instant = _instant(at)
    return "?" if instant is None else instant.strftime("%Y-%m-%d %H:%M:%S UTC")


def _clock(at: float | None) -> str:
    if at is None:
        return ""
    instant = _instant(at)
    return "?" if instant is None else instant.strftime("%H:%M:%S.%f")[:-3]


def _ago(at: float | None) -> str:
    if at is None:
        return "never"
    instant = _instant(at)
    if instant is None:
        return "?"
    seconds = max(0, int(time.time() - instant.timestamp()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _duration(seconds: float | None) -> str:
    """`42 s`, `3 min 5 s`, `1 min`, `2 h 10 min`, `1 d 4 h`; a dash when unknown."""
    if seconds is None:
        return "—"
    whole = int(seconds)
    units = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))
    for index, (size, unit) in enumerate(units[:-1]):
        if whole >= size:
            small, name = units[index + 1]
            rest = whole % size // small
            return f"{whole // size} {unit}" + (f" {rest} {name}" if rest else "")
    return f"{whole} s"


ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(show=_show, pretty=_pretty, utc=_utc, clock=_clock, ago=_ago, duration=_duration)


def bar_chart(
    hours: Sequence[tuple[int, Mapping[str, int]]],
    series: Sequence[tuple[str, str, str]],
    width: int = 480,
    height: int = 120,
) -> dict[str, Any]:
    """Bars per hour for an inline SVG; `series` is (field, label, css class), drawn in order."""
    top = max([1, *(fields.get(field, 0) for _, fields in hours for field, _, _ in series)])
    slot = width / max(1, len(hours))
    bars = []
    labels = []
    for index, (start, fields) in enumerate(hours):
        hour = datetime.fromtimestamp(start, UTC).strftime("%H:00")
        for field, label, css in series:
            value = fields.get(field, 0)
            h = round(value / top * (height - 4), 1)
            bars.append(
                {
                    "x": round(index * slot + 1, 1),
                    "y": round(height - h, 1),
                    "w": round(max(1.0, slot - 2), 1),
                    "h": h,
                    "css": css,
                    "title": f"{hour} UTC: {value} {label}",
                }
            )
        if index % 6 == 0:
            labels.append({"x": round(index * slot + 1, 1), "text": hour})
    totals = {label: sum(f.get(field, 0) for _, f in hours) for field, label, _ in series}
    return {
        "width": width,
        "height": height,
        "top": top,
        "bars": bars,
        "labels": labels,
        "totals": totals,
    }


def _bridge(request: Request) -> Context:
    bridge: Context = request.app.state.bridge
    return bridge


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page from templates/, its data redacted, with the security headers."""
    bridge = _bridge(request)
    auth: Auth | None = getattr(request.state, "auth", None)
    flash = ""
    code = request.query_params.get("flash", "")
    if code in FLASHES:
        flash = FLASHES[code].format(
            run=request.query_params.get("run", ""), id=request.query_params.get("id", "")
        )
    values = {key: public(bridge, value) for key, value in context.items()}
    html = ENV.get_template(name).render(
        request_path=request.url.path,
        csrf=auth.csrf if auth else "",
        signed_in=auth is not None and auth.kind == "session",
        flash=public(bridge, flash),
        **values,
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _off() -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><title>Not found</title><p>Not found.</p>",
        status_code=404,
        headers=SECURITY_HEADERS,
    )


def page(handler: Handler) -> Handler:
    """Guard a page: off without the token (404), login first, CSRF on POST, 503 without Redis."""

    async def guarded(request: Request) -> Response:
        if admin_token(request) is None:
            return _off()
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
        return _off()
    csrf = request.cookies.get(LOGIN_COOKIE) or new_login_csrf()
    nxt = safe_next(request.query_params.get("next"))
    response = render(request, "login.html", status, login_csrf=csrf, next=nxt, message=message)
    set_login_csrf(response, request, csrf)
    return response


async def login(request: Request) -> Response:
    if admin_token(request) is None:
        return _off()
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
            await _off()(scope, receive, send)
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
