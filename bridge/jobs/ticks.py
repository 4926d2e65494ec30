"""Time triggers: each tick of a scheduled rule becomes one `bridge.schedule` event (→ jobs).

An arq cron job (`schedule.every_tick`) runs `emit_ticks` every few seconds, on one
worker a slot however many run. For each enabled rule with a schedule it takes the latest
tick that passed since the last one it emitted, at most LOOKBACK ago, and ingests it
through the store with an id made of the rule id and the tick time: a tick emitted twice
(two workers, a retry) is stored and run once. Ticks missed while no worker ran are not
made up one by one: after a deploy only the latest of them runs (with `missed: true`),
and none older than LOOKBACK.

The last emitted tick of each rule is kept in one hash (`Keys.schedule_ticks`) with the
schedule it belongs to. A rule seen for the first time, re-enabled, or whose schedule or
time zone changed starts from now: it never runs for a tick from before it was scheduled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bridge.events import Event
from bridge.jobs.schedule import every_tick
from bridge.queue import CronJob
from bridge.queue.redis_io import FastScript
from bridge.rules import Rule
from bridge.rules.cron import tick_event

if TYPE_CHECKING:
    from bridge.operate.context import Context

logger = logging.getLogger(__name__)

LOOKBACK = timedelta(hours=24)  # the oldest missed tick still run after a deploy
LATE = timedelta(seconds=60)  # a tick emitted later than this was missed (`missed: true`)

# Moves a rule's mark forward only (a slower emitter never moves it back), or starts it
# afresh when the schedule changed.
_ADVANCE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local was, new = cjson.decode(old), cjson.decode(ARGV[2])
  if was.schedule == new.schedule and was.timezone == new.timezone and was.tick >= new.tick then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def now_utc() -> datetime:
    return datetime.now(UTC)


def _mark(rule: Rule, at: datetime) -> str:
    assert rule.schedule is not None
    schedule = rule.schedule
    return json.dumps(
        {"tick": at.timestamp(), "schedule": schedule.expression, "timezone": schedule.timezone}
    )


def _last(rule: Rule, raw: Any) -> datetime | None:
    """The last tick emitted for the rule, if the mark is of its current schedule."""
    assert rule.schedule is not None
    try:
        mark = json.loads(raw)
        same = (mark["schedule"], mark["timezone"]) == (
            rule.schedule.expression,
            rule.schedule.timezone,
        )
        return datetime.fromtimestamp(float(mark["tick"]), UTC) if same else None
    except (ValueError, TypeError, KeyError):
        return None


def due_ticks(
    scheduled: Mapping[str, Rule], marks: Mapping[str, Any], now: datetime
) -> tuple[list[Event], dict[str, datetime]]:
    """The tick event due for each rule, and each rule's new mark (pure: no Redis)."""
    events: list[Event] = []
    moved: dict[str, datetime] = {}
    for rule_id, rule in scheduled.items():
        assert rule.schedule is not None
        last = _last(rule, marks[rule_id]) if rule_id in marks else None
        if last is None:
            moved[rule_id] = now  # new, or its schedule changed: from now on
            continue
        tick = rule.schedule.latest_in(max(last, now - LOOKBACK), now)
        if tick is not None:
            events.append(tick_event(rule_id, rule.schedule, tick, missed=now - tick > LATE))
            moved[rule_id] = tick
    return events, moved


async def emit_ticks(context: Context, now: datetime | None = None) -> dict[str, str]:
    """Ingest the due tick of every scheduled rule; what happened, per rule with news."""
    rules = context.rules.current
    if rules is None:
        return {}  # no valid rule set: keep the marks for when there is one again
    redis, key = context.redis, context.keys.schedule_ticks
    scheduled = rules.scheduled
    if not scheduled:
        await redis.delete(key)
        return {}
    now = now or now_utc()
    raw = await redis.hgetall(key)  # type: ignore[misc]
    marks = {k.decode(): v for k, v in raw.items()}
    events, moved = due_ticks(scheduled, marks, now)
    report = {rule_id: "started" for rule_id in moved}
    if events:
        admitted = await context.store.admit(events)
        for event, admission in zip(events, admitted, strict=True):
            state = "emitted" if admission.new else "already emitted"
            report[event.subject or ""] = f"{state} {event.data['tick']}"
            logger.info("rule %s: tick %s %s (%s)", event.subject, event.time, state, admission.id)
    # Marks move only after the events are stored: a crash in between emits the same tick
    # (the same id) again, which the store knows.
    advance = FastScript(redis, _ADVANCE)
    for rule_id, at in moved.items():
        await advance([key], [rule_id, _mark(scheduled[rule_id], at)])
    stale = [rule_id for rule_id in marks if rule_id not in scheduled]
    if stale:
        # Removed or disabled: re-enabled, it starts afresh.
        await redis.hdel(key, *stale)  # type: ignore[misc]
    return report


def next_ticks(context: Context, now: datetime | None = None) -> dict[str, str | None]:
    """The next tick of each scheduled rule (ISO, UTC), for the dashboard and the API."""
    rules = context.rules.current
    now = now or now_utc()
    out: dict[str, str | None] = {}
    for rule_id, rule in (rules.scheduled if rules is not None else {}).items():
        assert rule.schedule is not None
        tick = rule.schedule.next_after(now)
        out[rule_id] = None if tick is None else tick.isoformat().replace("+00:00", "Z")
    return out


def tick_jobs(context: Context) -> list[CronJob]:
    """The arq cron job that emits the ticks (always there: rules with a schedule may come
    with a live reload)."""
    return [every_tick(context.keys.schedule_tick_name, lambda: emit_ticks(context))]
