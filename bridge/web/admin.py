"""The admin JSON API under /api/: events and their traces, replays, rules, dead letters, pollers.

The queries here (recent events with their outcome, one event in full, the rules with
their 24-hour numbers) also feed the dashboard. Every body goes through `redact`, so no
configured secret is ever sent back.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge import admin, metrics
from bridge.context import Context
from bridge.errors import BridgeError
from bridge.events import Event
from bridge.ingress.pollers.schedule import poller_status
from bridge.rules import event_context, should_run
from bridge.store import loads
from bridge.traces import redact
from bridge.web.auth import UNSAFE_METHODS, admin_token, authenticate, csrf_ok, error

OUTCOMES = ("pending", "unmatched", "suppressed", "running", "succeeded", "failed")
MAX_LIMIT = 500
# One listing reads at most this many index entries, however selective its filters.
MAX_SCAN = 5000
SCAN_PAGE = 200

Handler = Callable[[Request], Awaitable[Response]]


class BadQuery(ValueError):
    """A query parameter the caller must fix (400)."""


def public(bridge: Context, value: Any) -> Any:
    """`value` with every configured secret masked, ready to leave the process."""
    return redact(value, bridge.settings.secrets())


# --- traces: what became of an event ---------------------------------------------------


def runs_of(entries: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(rule, run) of every rule run the event's evaluations started, in order.

    A matched rule that dedupe or throttle held back (`suppressed`) started no run.
    """
    found: dict[tuple[str, str], None] = {}
    for entry in entries:
        if entry.get("kind") == "evaluated":
            held = entry.get("suppressed") or {}
            for rule_id in entry.get("matched") or ():
                if rule_id not in held:
                    found[(str(rule_id), str(entry.get("run", "")))] = None
    return list(found)


def event_outcome(entries: Sequence[Mapping[str, Any]]) -> str:
    """pending (not matched yet), unmatched, running, succeeded, or failed (a dead letter).

    An event whose matched rules were all held back by dedupe or throttle is `suppressed`.
    """
    evaluations = [entry for entry in entries if entry.get("kind") == "evaluated"]
    if not evaluations:
        return "pending"
    expected = runs_of(entries)
    if not expected:
        return "suppressed" if any(e.get("matched") for e in evaluations) else "unmatched"
    final: dict[tuple[str, str], str] = {}
    for entry in entries:
        if entry.get("kind") == "run":
            final[(str(entry.get("rule")), str(entry.get("run", "")))] = str(entry.get("status"))
    statuses = [final.get(run) for run in expected]
    if "dead_lettered" in statuses:
        return "failed"
    if None in statuses:
        return "running"
    return "succeeded"


def summary(
    event: Event, received_at: float, entries: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """One line of the event list."""
    return {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "subject": event.subject,
        "time": event.time,
        "received_at": received_at,
        "outcome": event_outcome(entries),
        "matched": sorted(
            {
                str(r)
                for e in entries
                if e.get("kind") == "evaluated"
                for r in e.get("matched") or ()
            }
        ),
    }


@dataclass(frozen=True)
class EventQuery:
    """Filters of the event list; `type` may be a glob (lytho.proof.*)."""

    type: str = ""
    source: str = ""
    outcome: str = ""
    limit: int = 50
    offset: int = 0

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> EventQuery:
        outcome = params.get("outcome", "").strip()
        if outcome and outcome not in OUTCOMES:
            raise BadQuery(
                f"outcome {outcome!r} is not known; expected one of {', '.join(OUTCOMES)}"
            )
        return cls(
            type=params.get("type", "").strip(),
            source=params.get("source", "").strip(),
            outcome=outcome,
            limit=_whole(params, "limit", 50, 1, MAX_LIMIT),
            offset=_whole(params, "offset", 0, 0, 10**9),
        )

    def accepts(self, item: Mapping[str, Any]) -> bool:
        if self.source and item["source"] != self.source:
            return False
        if self.outcome and item["outcome"] != self.outcome:
            return False
        if self.type:
            if any(c in self.type for c in "*?["):
                return fnmatch.fnmatchcase(item["type"], self.type)
            return bool(item["type"] == self.type)
        return True


def _whole(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"{name} has value {raw!r}; expected a whole number") from None
    if not low <= value <= high:
        raise BadQuery(f"{name} has value {value}; expected {low} to {high}")
    return value


async def recent_events(
    bridge: Context, query: EventQuery
) -> tuple[list[dict[str, Any]], int | None]:
    """The newest stored events that pass the filters, and the offset to read on from."""
    redis, keys = bridge.redis, bridge.keys
    found: list[dict[str, Any]] = []
    offset = query.offset
    scanned = 0
    while scanned < MAX_SCAN:
        page = await redis.zrevrange(keys.events, offset, offset + SCAN_PAGE - 1, withscores=True)
        if not page:
            return found, None
        async with redis.pipeline(transaction=False) as pipe:
            for raw_id, _ in page:
                event_id = raw_id.decode()
                pipe.get(keys.event(event_id))
                pipe.lrange(keys.trace(event_id), 0, -1)
            replies = await pipe.execute()
        for index, (_, score) in enumerate(page):
            offset += 1
            raw_event, raw_trace = replies[2 * index], replies[2 * index + 1]
            if raw_event is None:
                continue  # expired between the index and the event
            entries = [loads(item) for item in raw_trace]
            item = summary(Event.from_dict(loads(raw_event)), score / 1000, entries)
            if query.accepts(item):
                found.append(item)
                if len(found) >= query.limit:
                    return found, offset
        scanned += len(page)
    return found, offset


async def rendered_actions(
    bridge: Context, event: Event, entries: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Each step of each run, its parameters rendered now (current rules, stored results)."""
    rules = bridge.rules.current
    templates = bridge.rules.templates
    out: list[dict[str, Any]] = []
    for rule_id, run in runs_of(entries):
        who = {"rule": rule_id, "run": run}
        rule = rules.get(rule_id) if rules is not None else None
        if rule is None:
            out.append(who | {"step": "", "uses": "", "error": "the rule is no longer loaded"})
            continue
        stored = await bridge.redis.hgetall(bridge.keys.steps(event.id, rule_id, run))  # type: ignore[misc]
        results = {k.decode(): loads(v) for k, v in stored.items()}
        context = event_context(event, rule, results)
        for step in rule.actions:
            item: dict[str, Any] = who | {"step": step.key, "uses": step.uses}
            try:
                if not should_run(step, context, templates):
                    item["skipped"] = True
                else:
                    item["with"] = templates.render_value(dict(step.with_), context)
            except BridgeError as exc:
                item["error"] = str(exc)
            if step.key in results:
                item["result"] = results[step.key]
            out.append(item)
    return out


async def event_detail(bridge: Context, event_id: str) -> dict[str, Any] | None:
    """An event, its outcome, its whole trace and its rendered actions; None if unknown."""
    found = await admin.event_with_trace(bridge, event_id)
    if found is None:
        return None
    event, entries = found
    score = await bridge.redis.zscore(bridge.keys.events, event_id)
    return {
        "event": event.to_dict(),
        "received_at": None if score is None else score / 1000,
        "outcome": event_outcome(entries),
        "trace": entries,
        "actions": await rendered_actions(bridge, event, entries),
    }


async def rules_overview(bridge: Context) -> dict[str, Any]:
    """The rule set's state and each rule with its last match and 24-hour numbers."""
    live = bridge.rules
    # The web process has no reloader of its own: look at the files when asked.
    await asyncio.to_thread(live.reload_if_changed)
    hours = await metrics.hourly_stats(bridge, 24)
    fired = await metrics.last_fired(bridge)
    totals: dict[str, int] = {}
    for _, fields in hours:
        for name, count in fields.items():
            totals[name] = totals.get(name, 0) + count
    state = "invalid" if live.current is None else ("stale" if live.problems else "ok")
    rules = []
    for rule in live.current.rules if live.current is not None else ():
        rules.append(
            {
                "id": rule.id,
                "description": rule.description,
                "enabled": rule.enabled,
                "priority": rule.priority,
                "on": list(rule.on),
                "file": rule.file,
                "line": rule.line,
                "actions": [step.uses for step in rule.actions],
                "last_fired": fired.get(rule.id),
                "matches_24h": totals.get(f"matches:{rule.id}", 0),
                "failures_24h": totals.get(f"dead:{rule.id}", 0),
                "failed_attempts_24h": totals.get(f"failed:{rule.id}", 0),
            }
        )
    return {
        "rule_set": {
            "valid": state == "ok",
            "state": state,
            "loaded_at": live.loaded_at,
            "problems": list(live.problems),
        },
        "rules": rules,
    }


async def dead_letter_list(bridge: Context, limit: int = 100) -> dict[str, Any]:
    letters = await admin.dead_letters(bridge, limit)
    count = int(await bridge.redis.zcard(bridge.keys.dead_letter_index))
    return {"dead_letters": [letter.to_dict() for letter in letters], "count": count}


# --- the API ----------------------------------------------------------------------------


def api(handler: Handler) -> Handler:
    """Guard an API endpoint: off without the token (404), 401 without proof, CSRF, 503."""

    async def guarded(request: Request) -> Response:
        if admin_token(request) is None:
            return error(404, "not_found", "the admin API is off; set BRIDGE_ADMIN_TOKEN")
        auth = authenticate(request)
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
    run = await admin.replay(_bridge(request), event_id)
    if run is None:
        return _no_event(event_id)
    return ok(request, {"event_id": event_id, "run": run}, 202)


async def list_rules(request: Request) -> Response:
    return ok(request, await rules_overview(_bridge(request)))


async def list_dead_letters(request: Request) -> Response:
    limit = _whole(request.query_params, "limit", 100, 1, MAX_LIMIT)
    return ok(request, await dead_letter_list(_bridge(request), limit))


async def list_pollers(request: Request) -> Response:
    return ok(request, {"pollers": await poller_status(_bridge(request))})


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
        Route("/api/events/{event_id:path}/replay", api(replay_event), methods=["POST"]),
        Route("/api/events/{event_id:path}", api(get_event), methods=["GET"]),
        Route("/api/rules", api(list_rules), methods=["GET"]),
        Route("/api/dead-letters", api(list_dead_letters), methods=["GET"]),
        Route("/api/pollers", api(list_pollers), methods=["GET"]),
        Route("/api/dead-letters/{letter_id}/retry", api(retry_dead_letter), methods=["POST"]),
        Route("/api/dead-letters/{letter_id}", api(drop_dead_letter), methods=["DELETE"]),
        Route("/api/{rest:path}", api(unknown), methods=every),
        Route("/api", api(unknown), methods=every),
    ]
