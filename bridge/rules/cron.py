"""Time triggers: cron schedules in a time zone, their ticks, and tick events (rules → decide).

A schedule is standard 5-field cron (minute, hour, day of month, month, day of week) with
`*`, ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b`, month names (JAN…DEC), day names
(SUN…SAT, 0 or 7 for Sunday) and the macros @hourly, @daily, @weekly, @monthly, @yearly.
As in Vixie cron, when both day fields are restricted (neither starts with `*`) a day
matches if either does.

Ticks are wall-clock times in the schedule's time zone. Across daylight-saving changes:

- a tick in the hour that is skipped (spring forward) runs once at the first instant after
  the gap (02:30 on the last Sunday of March runs at 03:00 in Europe/Amsterdam); several
  ticks in the gap run as that one tick;
- a tick in the hour that is repeated (fall back) runs once, at its first occurrence; the
  second pass of that hour has no ticks.
"""

from __future__ import annotations

import bisect
import functools
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.events import Event

# The type, source and id of the event a tick becomes (docs/events.md, "bridge.schedule").
SCHEDULE_EVENT = "bridge.schedule"
SCHEDULE_SOURCE = "bridge"
EXAMPLE = 'on: {schedule: "0 9 * * MON-FRI", timezone: Europe/Amsterdam}'

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# name, lowest, highest, names (their values start at the lowest)
FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, DAYS),
)
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February of a leap year
# The search for the next tick stops after this (a 29 February tick needs up to 8 years).
_HORIZON = timedelta(days=366 * 9)


class CronError(ValueError):
    """A schedule that cannot be read: the message says which field and what is wrong."""


def _value(token: str, field: int) -> int:
    name, low, high, names = FIELDS[field]
    if token.isdigit():
        number = int(token)
        if not low <= number <= high:
            raise CronError(f"{name} {token!r} is out of range; expected {low}-{high}")
        return number
    if names and token.upper() in names:
        return names.index(token.upper()) + (1 if field == 3 else 0)
    kind = {3: "month name", 4: "day name"}.get(field)
    if kind is None:
        raise CronError(f"{name} {token!r} is not a number; expected {low}-{high}")
    from bridge.rules.checker import suggest  # the one did-you-mean of rule checking

    hint = suggest(token.upper(), names)
    raise CronError(
        f"{name} {token!r} is not a number or a {kind}; {hint}"
        f"expected {low}-{high} or {names[0]}-{names[-1]}"
    )


def parse_field(text: str, field: int) -> frozenset[int]:
    """The values one field names; CronError saying what is wrong otherwise."""
    name, low, high, _ = FIELDS[field]
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{name} {text!r} has an empty item; expected items between commas")
        span, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(
                    f"{name} step {step_text!r} in {part!r} is not a whole number from 1; "
                    "expected such as */15"
                )
            step = int(step_text)
        if span == "*":
            first, last = low, high
        elif "-" in span:
            start, _, end = span.partition("-")
            first, last = _value(start, field), _value(end, field)
            if first > last:
                raise CronError(
                    f"{name} range {span!r} runs backwards; expected the low end first "
                    f"(such as {'MON-FRI' if field == 4 else f'{low}-{high}'})"
                )
        else:
            first = _value(span, field)
            last = high if slash else first
        values.update(range(first, last + 1, step))
    if field == 4 and 7 in values:
        values = (values - {7}) | {0}  # 7 is Sunday too
    return frozenset(values)


@functools.cache
def zone(name: str) -> zoneinfo.ZoneInfo:
    """The time zone of an IANA name; CronError (with a did-you-mean) when there is none."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        pass
    known = known_zones()
    if not known:
        raise CronError(
            f"unknown timezone {name!r}: no time zone data was found on this machine; "
            "install the tzdata package (pip install tzdata)"
        )
    by_city = {z.rsplit("/", 1)[-1].lower(): z for z in known}
    close = by_city.get(name.replace(" ", "_").lower())
    from bridge.rules.checker import suggest

    hint = f"did you mean {close!r}? " if close else suggest(name, known)
    raise CronError(
        f"unknown timezone {name!r}; {hint}expected an IANA name such as Europe/Amsterdam or UTC"
    )


@functools.cache
def known_zones() -> tuple[str, ...]:
    return tuple(sorted(zoneinfo.available_timezones()))


@dataclass(frozen=True)
class Schedule:
    """A cron schedule in a time zone: which wall-clock minutes are ticks."""

    expression: str
    timezone: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 is Sunday
    either_day: bool  # both day fields restricted: a day matches if either does

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> Schedule:
        """The schedule of a cron expression; CronError saying which field is wrong."""
        text = MACROS.get(expression.strip().lower(), expression)
        parts = text.split()
        if len(parts) != 5:
            if expression.strip().startswith("@"):
                raise CronError(
                    f"unknown macro {expression.strip()!r}; expected 5 fields or one of "
                    + ", ".join(MACROS)
                )
            raise CronError(
                f"{len(parts)} field{'' if len(parts) == 1 else 's'} where 5 are expected: "
                'minute hour day-of-month month day-of-week (such as "0 9 * * MON-FRI")'
            )
        fields = [parse_field(part, i) for i, part in enumerate(parts)]
        zone(timezone)
        schedule = cls(
            expression=expression,
            timezone=timezone,
            minutes=tuple(sorted(fields[0])),
            hours=tuple(sorted(fields[1])),
            days=fields[2],
            months=fields[3],
            weekdays=fields[4],
            either_day=not parts[2].startswith("*") and not parts[4].startswith("*"),
        )
        if not schedule.either_day and not any(
            day <= _MONTH_DAYS[month - 1] for month in schedule.months for day in schedule.days
        ):
            names = ", ".join(MONTHS[m - 1] for m in sorted(schedule.months))
            raise CronError(
                f"never fires: no day {min(schedule.days)}{'+' if len(schedule.days) > 1 else ''}"
                f" in {names}"
            )
        return schedule

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zone(self.timezone)

    def _day_matches(self, wall: datetime) -> bool:
        in_days = wall.day in self.days
        in_weekdays = wall.isoweekday() % 7 in self.weekdays
        return (in_days or in_weekdays) if self.either_day else (in_days and in_weekdays)

    def _next_wall(self, wall: datetime, limit: datetime) -> datetime | None:
        """The first wall-clock minute at or after `wall` that the fields name."""
        while wall <= limit:
            if wall.month not in self.months:
                year, month = divmod(wall.month, 12)  # the 1st of the next month
                wall = datetime(wall.year + year, month + 1, 1)
                continue
            if not self._day_matches(wall):
                wall = datetime(wall.year, wall.month, wall.day) + timedelta(days=1)
                continue
            at = bisect.bisect_left(self.hours, wall.hour)
            if at == len(self.hours):
                wall = datetime(wall.year, wall.month, wall.day) + timedelta(days=1)
                continue
            if self.hours[at] != wall.hour:
                wall = wall.replace(hour=self.hours[at], minute=0)
                continue
            at = bisect.bisect_left(self.minutes, wall.minute)
            if at == len(self.minutes):
                wall = wall.replace(minute=0) + timedelta(hours=1)
                continue
            return wall.replace(minute=self.minutes[at])
        return None

    def instant(self, wall: datetime) -> datetime:
        """When a wall-clock tick happens (UTC): its first occurrence in a repeated hour,
        the end of the gap for one in a skipped hour."""
        tz = self.zone
        first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if first.astimezone(tz).replace(tzinfo=None) == wall:
            return first
        # In a gap: the first minute whose wall-clock time is past `wall` (a binary search
        # between the times the offsets before and after the change give).
        low = int(wall.replace(tzinfo=tz, fold=1).timestamp()) // 60
        high = int(first.timestamp()) // 60
        while high - low > 1:
            middle = (low + high) // 2
            if datetime.fromtimestamp(middle * 60, tz).replace(tzinfo=None) > wall:
                high = middle
            else:
                low = middle
        return datetime.fromtimestamp(high * 60, UTC)

    def next_after(self, instant: datetime) -> datetime | None:
        """The first tick strictly after `instant` (aware), in UTC; None if none in 9 years."""
        wall = instant.astimezone(self.zone).replace(tzinfo=None, second=0, microsecond=0)
        limit = wall + _HORIZON
        while True:
            found = self._next_wall(wall, limit)
            if found is None:
                return None
            at = self.instant(found)
            if at > instant:
                return at
            wall = found + timedelta(minutes=1)

    def latest_in(self, after: datetime, until: datetime) -> datetime | None:
        """The last tick in (after, until], or None."""
        latest = None
        tick = self.next_after(after)
        while tick is not None and tick <= until:
            latest = tick
            tick = self.next_after(tick)
        return latest

    def local(self, instant: datetime) -> datetime:
        return instant.astimezone(self.zone)

    def complete(self, event: Event, rule_id: str) -> Event:
        """The event with a tick's data, if it is a tick written by hand (complete_tick)."""
        return complete_tick(event, rule_id, self)


def iso(instant: datetime) -> str:
    """An instant as ISO 8601: UTC with a Z, or with its own offset."""
    text = instant.isoformat(timespec="seconds")
    return text.replace("+00:00", "Z") if instant.utcoffset() == timedelta(0) else text


def tick_id(rule_id: str, tick: datetime) -> str:
    """The event id of one tick of one rule: every worker that emits it names it so."""
    return f"schedule:{rule_id}:{iso(tick.astimezone(UTC))}"


def tick_data(rule_id: str, schedule: Schedule, tick: datetime, *, missed: bool) -> dict[str, Any]:
    return {
        "rule": rule_id,
        "tick": iso(tick.astimezone(UTC)),
        "tick_local": iso(schedule.local(tick)),
        "schedule": schedule.expression,
        "timezone": schedule.timezone,
        "missed": missed,
    }


def tick_event(rule_id: str, schedule: Schedule, tick: datetime, *, missed: bool) -> Event:
    """The event of one tick: it goes only to the rule it names (its subject)."""
    return Event(
        id=tick_id(rule_id, tick),
        source=SCHEDULE_SOURCE,
        type=SCHEDULE_EVENT,
        subject=rule_id,
        time=iso(tick.astimezone(UTC)),
        data=tick_data(rule_id, schedule, tick, missed=missed),
    )


def parse_time(text: str) -> datetime | None:
    """An aware instant from ISO 8601 (`Z` or an offset; none means UTC), else None."""
    try:
        found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


def complete_tick(event: Event, rule_id: str, schedule: Schedule) -> Event:
    """A tick event written by hand (a rule test, `bridge fire`: type, subject, time) with
    the data the scheduler gives it; data it gives itself is kept."""
    data = event.data if isinstance(event.data, Mapping) else {}
    if event.type != SCHEDULE_EVENT or "tick" in data:
        return event
    at = parse_time(event.time)
    if at is None:
        return event
    full = tick_data(rule_id, schedule, at, missed=False) | dict(data)
    return Event(event.id, event.source, event.type, full, event.subject, event.time, event.changes)
