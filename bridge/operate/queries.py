"""What the admin API, the dashboard and the CLI read: events with their outcome, rules, letters.

The queries behind the admin surface: recent events with their outcome, one event in full,
the rules with their 24-hour numbers, the dead letters and the pollers. `public` makes any
value ready to leave the process: no configured secret (in a value or a key), and whatever a
stored record holds (lone surrogates, infinite numbers, deep nesting) becomes something
shown. Nothing here renders a rule's templates: an event shows the parameters its steps
recorded when they ran.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import fields as fields_of
from typing import Any

from bridge.events import Event
from bridge.jobs.schedule import poller_status
from bridge.jobs.ticks import next_ticks
from bridge.jobs.traces import decode_entry
from bridge.operate import admin, metrics
from bridge.operate.context import Context
from bridge.redaction import displayable as displayable

OUTCOMES = (
    "pending",
    "unmatched",
    "suppressed",
    "digested",
    "running",
    "succeeded",
    "succeeded_with_errors",
    "failed",
)
NOT_RECORDED = "not recorded: this step ran before lytbridge stored the parameters it sent"
NOT_RENDERED = (
    "not recorded: the step failed before its parameters were rendered (or ran before "
    "lytbridge stored them)"
)
MAX_LIMIT = 500
# One listing reads at most this many index entries, however selective its filters.
MAX_SCAN = 5000
SCAN_PAGE = 200


class BadQuery(ValueError):
    """A query parameter the caller must fix (400)."""


def public(bridge: Context, value: Any) -> Any:
    """`value` with every configured secret masked, ready to leave the process (any stored
    value: lone surrogates, infinite numbers and deep nesting become something shown)."""
    return displayable(value, bridge.settings.secrets())


def _names(value: Any) -> list[str]:
    """A trace field that should list names (matched rules, failed steps), as strings."""
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    return []


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# --- traces: what became of an event ---------------------------------------------------


def runs_of(entries: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(rule, run) of every rule run the event's evaluations started, in order.

    A matched rule that dedupe or throttle held back (`suppressed`) started no run, nor
    did a `for:` wait that another match's wait kept, was cancelled or no longer held, nor
    a match that joined a digest (the digest's run is its own, under its `dg_…` id).
    """
    found: dict[tuple[str, str], None] = {}
    unrun = ("already_waiting", "cancelled", "not_run")
    waited = {
        e.get("rule") for e in entries if e.get("kind") == "wait" and e.get("status") in unrun
    }
    for entry in entries:
        if entry.get("kind") == "evaluated":
            held = {**_mapping(entry.get("suppressed")), **_mapping(entry.get("digests"))}
            for rule_id in _names(entry.get("matched")):
                if rule_id not in held and (rule_id not in waited or entry.get("run")):
                    found[(rule_id, str(entry.get("run", "")))] = None
    return list(found)


def run_statuses(entries: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """The latest status of each (rule, run) that has ended.

    A run that succeeded while a step failed under `continue_on_error` is
    `succeeded_with_errors`, also in traces written before runs said so themselves.
    """
    final: dict[tuple[str, str], str] = {}
    continued: set[tuple[str, str]] = set()
    for entry in entries:
        who = (str(entry.get("rule")), str(entry.get("run", "")))
        if entry.get("kind") == "step" and entry.get("continued"):
            continued.add(who)
        elif entry.get("kind") == "run":
            final[who] = str(entry.get("status"))
    for who in continued:
        if final.get(who) == "succeeded":
            final[who] = "succeeded_with_errors"
    return final


def event_outcome(entries: Sequence[Mapping[str, Any]]) -> str:
    """pending (not matched yet), unmatched, running, succeeded, succeeded_with_errors (a
    step failed under `continue_on_error`), or failed (a dead letter).

    An event whose matched rules were all held back by dedupe or throttle is `suppressed`;
    one whose matches joined digests (and started no run of their own) is `digested`.
    """
    evaluations = [entry for entry in entries if entry.get("kind") == "evaluated"]
    if not evaluations:
        return "pending"
    expected = runs_of(entries)
    if not expected:
        if any(e.get("digests") for e in evaluations):
            return "digested"
        return "suppressed" if any(e.get("matched") for e in evaluations) else "unmatched"
    final = run_statuses(entries)
    statuses = [final.get(run) for run in expected]
    if "dead_lettered" in statuses:
        return "failed"
    if None in statuses:
        return "running"
    if "succeeded_with_errors" in statuses:
        return "succeeded_with_errors"
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
            {r for e in entries if e.get("kind") == "evaluated" for r in _names(e.get("matched"))}
        ),
    }


def event_id_of(raw: bytes) -> str:
    """An event id read from the index (not UTF-8 only when written by something else)."""
    return raw.decode("utf-8", "replace")


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
            limit=whole_number(params, "limit", 50, 1, MAX_LIMIT),
            offset=whole_number(params, "offset", 0, 0, 10**9),
        )

    def accepts(self, item: Mapping[str, Any]) -> bool:
        if self.source and str(item["source"]) != self.source:
            return False
        if self.outcome and item["outcome"] != self.outcome:
            return False
        if self.type:
            if any(c in self.type for c in "*?["):
                return fnmatch.fnmatchcase(str(item["type"]), self.type)
            return str(item["type"]) == self.type
        return True


def whole_number(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
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
                event_id = event_id_of(raw_id)
                pipe.get(keys.event(event_id))
                pipe.lrange(keys.trace(event_id), 0, -1)
            replies = await pipe.execute()
        for index, (raw_id, score) in enumerate(page):
            offset += 1
            raw_event, raw_trace = replies[2 * index], replies[2 * index + 1]
            if raw_event is None:
                continue  # expired between the index and the event
            entries = [decode_entry(raw) for raw in raw_trace]
            item = summary(
                admin.decode_event(event_id_of(raw_id), raw_event), score / 1000, entries
            )
            if query.accepts(item):
                found.append(item)
                if len(found) >= query.limit:
                    return found, offset
        scanned += len(page)
    return found, offset


def stored_actions(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each step of each run as its trace recorded it: the parameters it sent, its last
    status, result or error. Nothing is rendered: what is shown is what ran.

    A step without recorded parameters (a trace written before they were stored, or a
    step that never rendered them) says so rather than guessing.
    """
    steps: dict[tuple[str, str, str], dict[str, Any]] = {}
    for entry in entries:
        if entry.get("kind") != "step":
            continue
        who = (str(entry.get("rule")), str(entry.get("run", "")), str(entry.get("step")))
        item = steps.setdefault(
            who,
            {"rule": who[0], "run": who[1], "step": who[2], "uses": str(entry.get("uses"))},
        )
        item["status"] = str(entry.get("status"))
        item["attempts"] = item.get("attempts", 0) + 1
        if entry.get("continued"):
            item["continued"] = True
        for name in ("result", "error"):
            item.pop(name, None)
            if name in entry:
                item[name] = entry[name]
        if isinstance(entry.get("params"), Mapping):
            item["with"] = entry["params"]
    for item in steps.values():
        if item["status"] == "skipped":
            item["skipped"] = True
        elif "with" not in item:
            item["with"] = None
            item["not_recorded"] = NOT_RENDERED if item["status"] == "failed" else NOT_RECORDED
    return list(steps.values())


async def event_detail(bridge: Context, event_id: str) -> dict[str, Any] | None:
    """An event, its outcome, its whole trace and its steps as they ran; None if unknown."""
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
        "actions": stored_actions(entries),
    }


async def rules_overview(bridge: Context) -> dict[str, Any]:
    """The rule set's state and each rule with its last match and 24-hour numbers."""
    live = bridge.rules
    # The web process has no reloader of its own: look at the files when asked.
    await asyncio.to_thread(live.reload_if_changed)
    hours = await metrics.hourly_stats(bridge.metrics, 24)
    fired = await metrics.last_fired(bridge.metrics)
    totals: dict[str, int] = {}
    for _, fields in hours:
        for name, count in fields.items():
            totals[name] = totals.get(name, 0) + count
    state = "invalid" if live.current is None else ("stale" if live.problems else "ok")
    rules = []
    upcoming = next_ticks(bridge)  # each time trigger's next tick (bridge/jobs/ticks.py)
    for rule in live.current.rules if live.current is not None else ():
        rules.append(
            {
                "id": rule.id,
                "description": rule.description,
                "enabled": rule.enabled,
                "priority": rule.priority,
                "on": list(rule.on),
                "schedule": None
                if rule.schedule is None
                else {
                    "cron": rule.schedule.expression,
                    "timezone": rule.schedule.timezone,
                    "next_tick": upcoming.get(rule.id),
                },
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
            # What `bridge validate` warns about (an `on:` type no source emits, …).
            "warnings": list(live.warnings),
        },
        "rules": rules,
    }


async def dead_letter_list(bridge: Context, limit: int = 100) -> dict[str, Any]:
    """The newest dead letters and their count; a letter that cannot be read says so."""
    letters = await admin.dead_letters(bridge, limit)
    count = int(await bridge.redis.zcard(bridge.keys.dead_letter_index))
    # Field by field, not asdict(): that copies the stored event recursively.
    shown = [{f.name: getattr(letter, f.name) for f in fields_of(letter)} for letter in letters]
    return {"dead_letters": shown, "count": count}


async def pollers(bridge: Context) -> list[dict[str, Any]]:
    """Each configured poller with its last run, lag and budget."""
    return await poller_status(bridge)
