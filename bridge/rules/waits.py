"""`for:` on a rule: wait, then check its conditions again on the object's current state (decide).

Home Assistant's `for:` is the model. When a rule with `for: 48h` matches, its actions do
not run; a check is due 48 hours later. Then the rule's `when:` is evaluated again against
the *current* state of the object the event is about, and the actions run only if it still
holds. An event about the same object that arrives in between and for which the
conditions no longer hold cancels the wait; one for which they still hold (a second match
included) keeps the first wait: the conditions must hold the whole time.

The object of an event is its `source` and `subject` (and, for the sources whose one
subject may name objects of several kinds, `lytho_workflow` and `lytics`, the kind in its
type: `lytho.proof.*` and `lytho.task.*` about id 7 are two objects). An event without a
subject is an object of its own: nothing can cancel its wait, and the check sees it as it was.
Lytics' segment membership events (`lytics.segment.entered`/`exited`) have the segment as
subject but are about a profile: their object is the profile in that segment (the segment's
slug and the profile's `data._uid`, else `data.email`; neither: an object of its own), and
the check sees the profile's latest membership event (no snapshot).

The state the conditions are checked against is the matched event with its `data`
replaced by the object's current data (bridge/jobs/waits.py finds it: the pollers'
snapshot over the latest event about the object). `type`, `changes` and `time` stay those
of the match: they say what started the wait. So write what must keep holding on `data`
(`data.status eq in_review`); a condition on `changes` holds for the whole wait.

This module holds what the worker and rule tests share: checking `for:` when a rule is
loaded, the object of an event, the state event, the re-check, and the waits of
`bridge test` (kept in memory, each event's `time` the clock).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from bridge.events import Event
from bridge.rules.checker import DURATION_HINT, Checker, parse_duration
from bridge.rules.explain import describe
from bridge.rules.model import ConditionResult, Rule, Scope, Wait
from bridge.rules.source import Node
from bridge.rules.triggers import is_schedule
from bridge.rules.values import OperandError
from bridge.templates.environment import Templates

# A check is a deferred job: to the second, and at most a month away (a longer wait is a
# schedule's work; docs/rules.md).
FOR_MIN_SECONDS = 1.0
FOR_MAX_SECONDS = 30 * 86400.0
# Sources whose subject alone may name objects of several kinds (the kind is in the type).
KINDED_SOURCES = frozenset({"lytho_workflow", "lytics"})
# Events about a profile's membership of the segment named by their subject.
MEMBERSHIP_TYPES = frozenset({"lytics.segment.entered", "lytics.segment.exited"})


def check_for(checker: Checker, rule: Node) -> Wait | None:
    """The rule's `for:` (None without one), every problem reported at its place."""
    node = rule.value.get("for")
    if node is None:
        return None
    value = node.value
    try:
        seconds = parse_duration(value)
    except OperandError:
        checker.error(node, f"bad duration {value!r} for 'for'{checker.in_rule}; {DURATION_HINT}")
        return None
    if seconds < FOR_MIN_SECONDS:
        checker.error(
            node,
            f"'for'{checker.in_rule} is {value!r}; expected at least 1s "
            "(a wait is checked to the second)",
        )
        return None
    if seconds > FOR_MAX_SECONDS:
        checker.error(
            node,
            f"'for'{checker.in_rule} is {value!r}; expected at most 30d "
            "(for longer, run a rule on a schedule)",
        )
        return None
    if "digest" in rule.value:
        checker.error(
            node,
            f"'for' and 'digest'{checker.in_rule} do not go together: a digest collects "
            "many matches into one run, 'for' re-checks one object's match; use one of them",
        )
        return None
    on = rule.value.get("on")
    if on is not None and is_schedule(on):
        checker.error(
            node,
            f"'for'{checker.in_rule}: for: waits re-check an object, but a scheduled rule's "
            "ticks are not one; remove for:, or schedule the rule later and check the state "
            "then (a look-up step, then if:)",
        )
        return None
    text = str(value).strip() if isinstance(value, str) else f"{value:g}s"
    return Wait(seconds=seconds, text=text)


def object_of(event: Event) -> str:
    """The object an event is about, as text: source, kind where it matters, subject."""
    if event.source == "lytics" and event.type in MEMBERSHIP_TYPES:
        profile = profile_of(event)
        if profile and event.subject:
            return f"lytics\nmembership\n{event.subject}\n{profile}"
        return f"{event.source}\n\n#{event.id}"
    if not event.subject:
        return f"{event.source}\n\n#{event.id}"
    kind = ""
    if event.source in KINDED_SOURCES:
        parts = event.type.split(".")
        kind = parts[1] if len(parts) > 2 else event.type
    return f"{event.source}\n{kind}\n{event.subject}"


def profile_of(event: Event) -> str:
    """The profile a segment membership event is about: `data._uid`, else `data.email`."""
    data = event.data if isinstance(event.data, Mapping) else {}
    for field in ("_uid", "email"):
        value = data.get(field)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return f"{field}:{value}"
    return ""


def object_hash(event: Event) -> str:
    """A short, safe name for the object of an event (Redis keys, job ids)."""
    return hashlib.sha256(object_of(event).encode()).hexdigest()[:24]


def is_deletion(event: Event) -> bool:
    """Whether the event says its object is gone (`lytho.asset.deleted`, …)."""
    return event.type.endswith(".deleted")


def state_event(origin: Event, data: Any) -> Event:
    """The matched event with the object's current data: what a re-check evaluates."""
    return replace(origin, data=data)


def recheck(rule: Rule, origin: Event, data: Any, templates: Templates) -> ConditionResult:
    """The rule's conditions evaluated on the object's current data (the condition tree)."""
    return rule.when.explain(Scope(state_event(origin, data), templates, rule))


def why_not(result: ConditionResult) -> str:
    """The first condition that no longer holds, as one line."""
    failing = result.failing()
    return describe(failing) if failing is not None else "the conditions"


def current_of(event: Mapping[str, Any], source: str) -> dict[str, Any]:
    """`current` in a waited run's templates: the state the check found, and from where
    (`event`: the latest event about the object; `snapshot`: a poller's, over it)."""
    return {
        "id": event.get("id"),
        "type": event.get("type"),
        "source": event.get("source"),
        "subject": event.get("subject"),
        "time": event.get("time"),
        "data": event.get("data"),
        "changes": dict(event.get("changes") or {}),
        "from": source,
    }


def clock(time: str) -> float | None:
    """An event's `time` as epoch seconds, None when it is not an ISO 8601 time."""
    try:
        parsed = datetime.fromisoformat(time.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def wait_text(entry: Mapping[str, Any]) -> str:
    """What a `for:` wait entry says: waiting until …, still holds → run, no longer holds
    (…) → not run, cancelled by event …"""
    status = entry.get("status")
    current = entry.get("current") if isinstance(entry.get("current"), Mapping) else {}
    state = f"current state: {current.get('from')} {current.get('event')}" if current else ""
    if status in ("waiting", "already_waiting"):
        try:
            at = datetime.fromtimestamp(float(entry.get("until") or 0), UTC)
            until = f"{at:%Y-%m-%d %H:%M:%S} UTC"
        except (TypeError, ValueError, OverflowError, OSError):
            until = str(entry.get("until"))
        also = ""
        if status == "already_waiting":
            also = f"; this match keeps the wait of event {entry.get('wait_of')}"
        return f"waiting until {until} (for {entry.get('for')}){also}"
    if status == "holds":
        return f"still holds ({state}) → run"
    if status == "not_run" and entry.get("dropped"):
        return f"{entry.get('why')}: not run"
    if status == "not_run":
        return f"no longer holds ({entry.get('why')}; {state}) → not run"
    if status == "cancelled":
        return f"cancelled by event {entry.get('by')}: {entry.get('why')}"
    if status == "cancels":
        return f"cancels the wait of event {entry.get('wait_of')}: {entry.get('why')}"
    return str(status)


# --- the waits of rule tests ------------------------------------------------------------


@dataclass
class MemoryWait:
    """One wait of a rule test: the rule, the match, when it is due, the latest state."""

    rule: Rule
    origin: Event
    due: float
    latest: Event


@dataclass
class WaitOutcome:
    """How a wait of a rule test ended: ran (with the state), or why not."""

    rule: Rule
    origin: Event
    current: Event | None
    why: str = ""


class MemoryWaits:
    """`for:` in rule tests, as the worker keeps waits in Redis, in memory.

    The clock is each event's `time`: a wait whose time is up before an event comes is
    checked first, against the latest event about its object; an event about the object
    for which the conditions no longer hold cancels it; at the end of the case every wait
    still pending is checked. Rule tests have no poller snapshot: the current state is the
    case's latest event about the object.
    """

    def __init__(self, templates: Templates) -> None:
        self.templates = templates
        self.pending: dict[tuple[str, str], MemoryWait] = {}
        self.ended: list[WaitOutcome] = []

    def observe(self, event: Event, now: float | None) -> None:
        """Before `event` is matched: check the waits due by now, then let it cancel."""
        self.close_due(now)
        here = object_of(event)
        for (rule_id, obj), wait in list(self.pending.items()):
            if obj != here:
                continue
            result = recheck(wait.rule, wait.origin, event.data, self.templates)
            if is_deletion(event) or not result.result:
                why = "deleted" if is_deletion(event) else why_not(result)
                self.ended.append(WaitOutcome(wait.rule, wait.origin, None, f"cancelled: {why}"))
                del self.pending[(rule_id, obj)]
            else:
                wait.latest = event

    def start(self, rule: Rule, event: Event, now: float | None) -> None:
        """A match of a rule with `for:`: wait (a second match keeps the first wait)."""
        assert rule.wait is not None
        key = (rule.id, object_of(event))
        if key not in self.pending:
            due = (now or 0.0) + rule.wait.seconds
            self.pending[key] = MemoryWait(rule, event, due, event)

    def close_due(self, now: float | None = None) -> None:
        """Check the waits due at `now` (every pending one when None), in order."""
        for key, wait in sorted(self.pending.items(), key=lambda item: item[1].due):
            if now is not None and now < wait.due:
                continue
            del self.pending[key]
            result = recheck(wait.rule, wait.origin, wait.latest.data, self.templates)
            if result.result:
                self.ended.append(WaitOutcome(wait.rule, wait.origin, wait.latest))
            else:
                self.ended.append(
                    WaitOutcome(wait.rule, wait.origin, None, f"no longer holds: {why_not(result)}")
                )
