"""Check a rule's time trigger, `on: {schedule: …, timezone: …}`, and tick times in rule
tests (rules → decide; the schedule itself is bridge/rules/cron.py)."""

from __future__ import annotations

import difflib
from datetime import UTC, timedelta
from typing import TYPE_CHECKING

from bridge.events import Event
from bridge.rules.cron import EXAMPLE, SCHEDULE_EVENT, CronError, Schedule, iso, parse_time, zone

if TYPE_CHECKING:
    from bridge.rules.checker import Checker
    from bridge.rules.engine import RuleSet
    from bridge.rules.source import Node


def is_schedule(node: Node) -> bool:
    """Whether an `on:` node holds a schedule (a mapping, alone or in a list)."""
    items = node.value if node.is_sequence else [node]
    return any(item.is_mapping for item in items)


def check_schedule(checker: Checker, node: Node) -> Schedule | None:
    """The schedule of an `on:` node, each problem reported at its place."""
    if not node.is_mapping:
        checker.error(
            node,
            f"'on'{checker.in_rule} mixes a schedule with event types; a rule runs on a "
            "schedule or on events, not both: split it into two rules",
        )
        return None
    checker.unknown_keys(node, ("schedule", "timezone"), "'on'")
    expression_node, timezone_node = node.value.get("schedule"), node.value.get("timezone")
    # A bad time zone is reported, and the expression is still checked (against UTC), so
    # that every problem of the trigger is told at once.
    timezone, zone_ok = "UTC", True
    if timezone_node is not None:
        if not isinstance(timezone_node.value, str):
            checker.error(
                timezone_node,
                f"timezone{checker.in_rule} must be an IANA name such as Europe/Amsterdam, "
                f"not {timezone_node.plain()!r}",
            )
            zone_ok = False
        else:
            try:
                zone(timezone_node.value)
                timezone = timezone_node.value
            except CronError as exc:
                shown = repr(timezone_node.value)
                checker.error(timezone_node, str(exc).replace(shown, shown + checker.in_rule, 1))
                zone_ok = False
    if expression_node is None:
        checker.error(node, f"'on'{checker.in_rule} has no schedule; expected {EXAMPLE}")
        return None
    expression = expression_node.value
    if not isinstance(expression, str) or not expression.strip():
        checker.error(
            expression_node,
            f"schedule{checker.in_rule} must be a cron expression in quotes, such as "
            f'"0 9 * * MON-FRI", not {expression_node.plain()!r}',
        )
        return None
    try:
        schedule = Schedule.parse(expression, timezone)
    except CronError as exc:
        checker.error(expression_node, f"bad schedule {expression!r}{checker.in_rule}: {exc}")
        return None
    return schedule if zone_ok else None


def off_schedule(event: Event, ruleset: RuleSet) -> str | None:
    """Why a tick given by hand (a rule test, a dry run) is no tick of its rule's schedule, or
    names no scheduled rule; None when it is one (or the event is no tick)."""
    if event.type != SCHEDULE_EVENT:
        return None
    rule = ruleset.scheduled.get(event.subject or "")
    if rule is None:  # a tick names its rule in `subject`
        names = sorted(ruleset.scheduled)
        near = difflib.get_close_matches(event.subject or "", names, n=1)
        return (
            f"no scheduled rule {event.subject or ''!r}"
            + (f"; scheduled rules here: {', '.join(names)}" if names else "; none is here")
            + (f"; did you mean {near[0]!r}?" if near else "")
            + " (a tick's subject is the id of the rule it runs)"
        )
    if rule.schedule is None:
        return None
    schedule, at = rule.schedule, parse_time(event.time)
    if at is None:
        return f"the tick's time {event.time!r} is not an ISO 8601 time"
    if schedule.next_after(at - timedelta(microseconds=1)) == at:
        return None
    # The tick before it: looked for in growing windows, so a tick a minute costs little.
    windows = (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=366))
    before = next((t for w in windows if (t := schedule.latest_in(at - w, at))), None)
    after = schedule.next_after(at)
    around = " and ".join(
        f"{iso(t.astimezone(UTC))} ({iso(schedule.local(t))})" for t in (before, after) if t
    )
    return (
        f"{event.time} is not a tick of rule {rule.id!r} ({schedule.expression!r} in "
        f"{schedule.timezone}); the ticks around it: {around or 'none'}"
    )
