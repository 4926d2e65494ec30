"""The dashboard's HTML: its page environment and filters, bar charts, and security headers."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from bridge.operate.context import Context
from bridge.operate.queries import displayable, public
from bridge.rules.waits import wait_text
from bridge.web.auth import Auth

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
ENV.filters["wait_text"] = wait_text  # a `for:` wait trace entry (bridge/rules/waits.py)


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


def off_page() -> HTMLResponse:
    """The plain 404 every dashboard path answers while the admin surface is off."""
    return HTMLResponse(
        "<!doctype html><title>Not found</title><p>Not found.</p>",
        status_code=404,
        headers=SECURITY_HEADERS,
    )
