"""Time triggers: cron schedules in a time zone, one event per tick across workers, catch-up.

The scheduler's clock is a parameter (`emit_ticks(context, now)`), so the tests set the time
instead of waiting for it; the end-to-end test runs two real `bridge worker` processes on a
schedule whose latest tick has already passed, as after a deploy.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.actions import action_schemas
from bridge.events import Event
from bridge.jobs.ticks import emit_ticks, next_ticks
from bridge.operate.catalogue import event_catalogue
from bridge.operate.context import Context, build_context
from bridge.operate.queries import rules_overview
from bridge.queue.store import loads
from bridge.rules.cron import Schedule, tick_event
from bridge.rules.engine import RuleSet
from bridge.rules.loader import check_rules
from bridge.rules.testing import run_tests
from bridge.settings import Settings
from bridge.templates.environment import Templates
from tests.helpers import Bridge, running_bridge, wait_for

AMS = "Europe/Amsterdam"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def ticks(schedule: Schedule, start: str, count: int) -> list[str]:
    out, moment = [], at(start)
    for _ in range(count):
        found = schedule.next_after(moment)
        assert found is not None
        out.append(found.astimezone(schedule.zone).isoformat())
        moment = found
    return out


# --- parsing and the next tick ------------------------------------------------------------


def test_fields_take_ranges_steps_lists_and_names() -> None:
    s = Schedule.parse("5/20 9-17/4 1,15,30-31 JAN,jul-AUG MON-FRI")
    assert s.minutes == (5, 25, 45)
    assert s.hours == (9, 13, 17)
    assert s.days == {1, 15, 30, 31}
    assert s.months == {1, 7, 8}
    assert s.weekdays == {1, 2, 3, 4, 5}
    assert Schedule.parse("0 0 * * 7").weekdays == {0}  # 7 is Sunday, as 0 is
    assert Schedule.parse("@hourly").minutes == (0,)
    assert Schedule.parse("*/15 * * * *").minutes == (0, 15, 30, 45)


def test_weekday_nine_oclock_in_amsterdam_follows_the_local_clock() -> None:
    s = Schedule.parse("0 9 * * MON-FRI", AMS)
    # Friday 10:00 local: the next is Monday 09:00 (winter, UTC+1).
    assert ticks(s, "2026-12-04T09:00:00Z", 2) == [
        "2026-12-07T09:00:00+01:00",
        "2026-12-08T09:00:00+01:00",
    ]
    assert s.next_after(at("2026-07-03T12:00:00Z")) == at("2026-07-06T07:00:00Z")  # UTC+2


def test_both_day_fields_restricted_match_either_day() -> None:
    s = Schedule.parse("0 0 13 * FRI")
    assert ticks(s, "2026-11-10T00:00:00Z", 3) == [
        "2026-11-13T00:00:00+00:00",  # a Friday the 13th
        "2026-11-20T00:00:00+00:00",  # a Friday
        "2026-11-27T00:00:00+00:00",
    ]
    assert Schedule.parse("0 0 29 2 *").next_after(at("2026-03-01T00:00:00Z")) == at(
        "2028-02-29T00:00:00Z"
    )


def test_a_tick_in_the_skipped_hour_runs_once_when_the_clock_jumps() -> None:
    # 29 March 2026: 02:00 CET becomes 03:00 CEST in Amsterdam.
    daily = Schedule.parse("30 2 * * *", AMS)
    assert ticks(daily, "2026-03-28T12:00:00Z", 2) == [
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist: at the end of the gap
        "2026-03-30T02:30:00+02:00",
    ]
    quarter = Schedule.parse("*/15 * * * *", AMS)
    assert ticks(quarter, "2026-03-29T00:40:00Z", 3) == [
        "2026-03-29T01:45:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:00 … 02:45 and 03:00 run once, as one tick
        "2026-03-29T03:15:00+02:00",
    ]


def test_a_tick_in_the_repeated_hour_runs_once_at_its_first_occurrence() -> None:
    # 25 October 2026: 03:00 CEST becomes 02:00 CET; 02:00-02:59 happens twice.
    daily = Schedule.parse("30 2 * * *", AMS)
    assert ticks(daily, "2026-10-24T12:00:00Z", 2) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    quarter = Schedule.parse("*/30 * * * *", AMS)
    assert ticks(quarter, "2026-10-24T23:50:00Z", 4) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T03:00:00+01:00",  # the second pass of 02:xx has no ticks
        "2026-10-25T03:30:00+01:00",
    ]


# --- bridge validate ----------------------------------------------------------------------

RULE = """\
id: summary
on: {on}
actions:
  - uses: slack.post
    with: {{channel: "#ops", text: "hi"}}
"""


@pytest.mark.parametrize(
    ("on", "message"),
    [
        (
            '{schedule: "0 25 * * *"}',
            "r.yaml:2:16: bad schedule '0 25 * * *' in rule 'summary': hour '25' is out of "
            "range; expected 0-23",
        ),
        (
            '{schedule: "0 9 * * MON-FRY", timezone: Europe/Amsterdam}',
            "r.yaml:2:16: bad schedule '0 9 * * MON-FRY' in rule 'summary': day of week 'FRY' "
            "is not a number or a day name; did you mean 'FRI'? expected 0-7 or SUN-SAT",
        ),
        (
            '{schedule: "*/0 * * * *"}',
            "r.yaml:2:16: bad schedule '*/0 * * * *' in rule 'summary': minute step '0' in "
            "'*/0' is not a whole number from 1; expected such as */15",
        ),
        (
            '{schedule: "0 9 * *"}',
            "r.yaml:2:16: bad schedule '0 9 * *' in rule 'summary': 4 fields where 5 are "
            'expected: minute hour day-of-month month day-of-week (such as "0 9 * * MON-FRI")',
        ),
        (
            '{schedule: "0 9 * * FRI-MON"}',
            "r.yaml:2:16: bad schedule '0 9 * * FRI-MON' in rule 'summary': day of week range "
            "'FRI-MON' runs backwards; expected the low end first (such as MON-FRI)",
        ),
        (
            '{schedule: "0 0 30 2 *"}',
            "r.yaml:2:16: bad schedule '0 0 30 2 *' in rule 'summary': never fires: no day 30 "
            "in FEB",
        ),
        (
            '{schedule: "0 9 * * *", timezone: Europe/Amsterdm}',
            "r.yaml:2:39: unknown timezone 'Europe/Amsterdm' in rule 'summary'; did you mean "
            "'Europe/Amsterdam'? expected an IANA name such as Europe/Amsterdam or UTC",
        ),
        (
            '{schedule: "0 9 * * *", timezone: Amsterdam}',
            "r.yaml:2:39: unknown timezone 'Amsterdam' in rule 'summary'; did you mean "
            "'Europe/Amsterdam'? expected an IANA name such as Europe/Amsterdam or UTC",
        ),
        (
            '[lytho.asset.created, {schedule: "0 9 * * *"}]',
            "r.yaml:2:5: 'on' in rule 'summary' mixes a schedule with event types; a rule runs "
            "on a schedule or on events, not both: split it into two rules",
        ),
        (
            "{timezone: UTC}",
            "r.yaml:2:5: 'on' in rule 'summary' has no schedule; expected on: "
            '{schedule: "0 9 * * MON-FRI", timezone: Europe/Amsterdam}',
        ),
        (
            "bridge.schedule",
            "r.yaml:2:5: 'on' in rule 'summary' names bridge.schedule: those events go only to "
            "the rule whose schedule made them; for a time trigger write on: "
            '{schedule: "0 9 * * MON-FRI", timezone: Europe/Amsterdam}',
        ),
    ],
)
def test_validate_says_what_is_wrong_where(tmp_path: Path, on: str, message: str) -> None:
    (tmp_path / "r.yaml").write_text(RULE.format(on=on))
    checked = check_rules(
        tmp_path, templates=Templates(None), actions=action_schemas(), event_types=event_catalogue()
    )
    assert checked.ruleset is None
    assert [f"{Path(p.file).name}:{p.line}:{p.column}: {p.message}" for p in checked.errors] == [
        message
    ]


# --- which rules a tick reaches; rule tests -------------------------------------------------

RULES = """\
rules:
  - id: weekday-summary
    on: {schedule: "0 9 * * MON-FRI", timezone: Europe/Amsterdam}
    actions:
      - uses: slack.post
        with: {channel: "#marketing", text: "Summary of {{ data.tick_local[:10] }}"}
  - id: every-event
    on: "*"
    actions:
      - uses: slack.post
        with: {channel: "#all", text: "{{ type }}"}
  - id: bridge-events
    on: "bridge.*"
    actions:
      - uses: slack.post
        with: {channel: "#all", text: "{{ type }}"}
"""


def load(folder: Path, text: str = RULES) -> tuple[RuleSet, Templates]:
    folder.mkdir(exist_ok=True)
    (folder / "rules.yaml").write_text(text)
    templates = Templates(None)
    checked = check_rules(
        folder, templates=templates, actions=action_schemas(), event_types=event_catalogue()
    )
    assert checked.errors == []
    assert checked.ruleset is not None
    return checked.ruleset, templates


def test_a_tick_goes_only_to_its_own_rule_never_through_a_glob(tmp_path: Path) -> None:
    ruleset, templates = load(tmp_path / "rules")
    rule = ruleset.get("weekday-summary")
    assert rule is not None and rule.schedule is not None
    tick = tick_event(rule.id, rule.schedule, at("2026-12-07T08:00:00Z"), missed=False)
    assert tick.id == "schedule:weekday-summary:2026-12-07T08:00:00Z"
    assert tick.data == {
        "rule": "weekday-summary",
        "tick": "2026-12-07T08:00:00Z",
        "tick_local": "2026-12-07T09:00:00+01:00",
        "schedule": "0 9 * * MON-FRI",
        "timezone": AMS,
        "missed": False,
    }
    assert ruleset.matching(tick, templates) == [rule]
    # A tick naming a rule without a schedule, or no rule, reaches nothing.
    for subject in ("every-event", "nope"):
        other = Event("x", "bridge", "bridge.schedule", {}, subject)
        assert ruleset.evaluate(other, templates) == []


def test_a_rule_test_gives_a_tick_time_and_is_told_when_it_is_no_tick(tmp_path: Path) -> None:
    ruleset, templates = load(tmp_path / "rules")
    (tmp_path / "rules" / "summary.test.yaml").write_text(
        """\
cases:
  - name: Monday 9:00 in Amsterdam
    event: {type: bridge.schedule, subject: weekday-summary, time: "2026-12-07T09:00:00+01:00"}
    expect:
      matched: [weekday-summary]
      actions:
        - {uses: slack.post, with: {channel: "#marketing", text: "Summary of 2026-12-07"}}
  - name: 9:00 UTC is 10:00 in Amsterdam
    event: {type: bridge.schedule, subject: weekday-summary, time: "2026-12-07T09:00:00Z"}
    expect:
      matched: [weekday-summary]
"""
    )
    [result] = run_tests(tmp_path / "rules", ruleset, templates)
    good, off = result.cases
    assert good.passed, [str(f) for f in good.failures]
    assert [str(f) for f in off.failures] == [
        "tick time: expected 'a tick of its schedule', got '2026-12-07T09:00:00Z'\n"
        "2026-12-07T09:00:00Z is not a tick of rule 'weekday-summary' ('0 9 * * MON-FRI' in "
        "Europe/Amsterdam); the ticks around it: 2026-12-07T08:00:00Z "
        "(2026-12-07T09:00:00+01:00) and 2026-12-08T08:00:00Z (2026-12-08T09:00:00+01:00)"
    ]


# --- the scheduler: one event per tick, catch-up after a deploy ---------------------------

EVERY_10 = """\
id: every-10
on: {schedule: "*/10 * * * *"}
actions:
  - uses: slack.post
    with: {channel: "#ops", text: "{{ data.tick }}"}
"""


def settings_for(redis_url: str, key_prefix: str, tmp_path: Path) -> Settings:
    (tmp_path / "rules").mkdir(exist_ok=True)
    return Settings.from_env(
        {
            "REDIS_URL": redis_url,
            "BRIDGE_KEY_PREFIX": key_prefix,
            "BRIDGE_RULES_DIR": str(tmp_path / "rules"),
            "BRIDGE_TEMPLATES_DIR": str(tmp_path / "templates"),
        }
    )


@pytest.fixture
async def workers(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[Context, Context]]:
    """Two workers' resources (each its own connections) on one Redis, one rule folder."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(EVERY_10)
    settings = settings_for(redis_url, key_prefix, tmp_path)
    first, second = await build_context(settings), await build_context(settings)
    yield first, second
    await first.close()
    await second.close()


async def stored(context: Context) -> list[Event]:
    ids = await context.redis.zrange(context.keys.events, 0, -1)
    out = []
    for raw_id in ids:
        raw = await context.redis.get(context.keys.event(raw_id.decode()))
        out.append(Event.from_dict(loads(raw)))
    return out


async def test_ticks_are_emitted_once_each_and_only_the_latest_missed_one_runs(
    workers: tuple[Context, Context],
) -> None:
    context, _ = workers
    # First seen: a new rule never runs for a tick from before it was scheduled.
    assert await emit_ticks(context, at("2026-12-07T08:03:00Z")) == {"every-10": "started"}
    assert await emit_ticks(context, at("2026-12-07T08:09:59Z")) == {}
    report = await emit_ticks(context, at("2026-12-07T08:10:04Z"))
    assert report == {"every-10": "emitted 2026-12-07T08:10:00Z"}
    assert await emit_ticks(context, at("2026-12-07T08:10:09Z")) == {}
    # Workers down from 08:12 to 11:47: 08:20 … 11:40 passed; only 11:40 runs, as missed.
    report = await emit_ticks(context, at("2026-12-07T11:47:00Z"))
    assert report == {"every-10": "emitted 2026-12-07T11:40:00Z"}
    events = await stored(context)
    assert [e.id for e in events] == [
        "schedule:every-10:2026-12-07T08:10:00Z",
        "schedule:every-10:2026-12-07T11:40:00Z",
    ]
    assert [(e.time, e.data["missed"]) for e in events] == [
        ("2026-12-07T08:10:00Z", False),
        ("2026-12-07T11:40:00Z", True),
    ]
    assert await context.redis.zcard(context.settings.queue_name) == 2  # one job per tick
    assert next_ticks(context, at("2026-12-07T11:47:00Z")) == {"every-10": "2026-12-07T11:50:00Z"}


async def test_two_workers_emitting_the_same_tick_store_it_once(
    workers: tuple[Context, Context],
) -> None:
    first, second = workers
    await emit_ticks(first, at("2026-12-07T08:03:00Z"))
    marks = await first.redis.hgetall(first.keys.schedule_ticks)  # type: ignore[misc]
    both = await asyncio.gather(
        emit_ticks(first, at("2026-12-07T08:10:01Z")),
        emit_ticks(second, at("2026-12-07T08:10:01Z")),
    )
    # The second saw the marks before the first moved them: it emits the same tick again.
    await second.redis.hset(second.keys.schedule_ticks, mapping=marks)  # type: ignore[misc]
    again = await emit_ticks(second, at("2026-12-07T08:10:02Z"))
    outcomes = sorted(r.get("every-10", "") for r in [*both, again])
    assert outcomes.count("emitted 2026-12-07T08:10:00Z") == 1
    assert "already emitted 2026-12-07T08:10:00Z" in outcomes
    assert [e.id for e in await stored(first)] == ["schedule:every-10:2026-12-07T08:10:00Z"]
    assert await first.redis.zcard(first.settings.queue_name) == 1


async def test_a_tick_older_than_the_look_back_is_not_run(
    workers: tuple[Context, Context], tmp_path: Path
) -> None:
    context, _ = workers
    (tmp_path / "rules" / "r.yaml").write_text(EVERY_10.replace("*/10 * * * *", "0 9 * * MON"))
    context.rules.load()
    await emit_ticks(context, at("2026-11-25T12:00:00Z"))  # a Wednesday: started
    # Down until Wednesday a week later: Monday 09:00 is 2 days ago, past the 24 h look-back.
    assert await emit_ticks(context, at("2026-12-02T12:00:00Z")) == {}
    assert await stored(context) == []
    # A changed schedule starts afresh (no tick of the old one is made up).
    (tmp_path / "rules" / "r.yaml").write_text(EVERY_10.replace("*/10 * * * *", "0 * * * *"))
    context.rules.load()
    assert await emit_ticks(context, at("2026-12-02T12:30:00Z")) == {"every-10": "started"}
    assert await stored(context) == []


async def test_the_rules_list_shows_the_schedule_and_its_next_tick(
    workers: tuple[Context, Context],
) -> None:
    context, _ = workers
    before = datetime.now(UTC)
    [rule] = (await rules_overview(context))["rules"]
    shown = rule["schedule"]
    assert (shown["cron"], shown["timezone"]) == ("*/10 * * * *", "UTC")
    next_tick = at(shown["next_tick"])
    assert before < next_tick <= before + timedelta(minutes=10)
    assert next_tick.minute % 10 == 0 and next_tick.second == 0


# --- end to end: two real workers after a deploy --------------------------------------------


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path) as running:
        running.start_slack()
        yield running


def cron_runs(bridge: Bridge) -> int:
    """Tick jobs that have run (arq keeps each slot's result for a minute)."""
    found = bridge.redis.keys(f"arq:result:cron:{bridge.settings.key_prefix}schedule:*")
    return len(found)  # type: ignore[arg-type]


@pytest.mark.timeout(180)
def test_two_workers_after_a_deploy_run_the_latest_missed_tick_once(bridge: Bridge) -> None:
    # A daily tick at a time two hours ago, in Amsterdam: it passed while no worker ran.
    now = datetime.now(UTC)
    local = (now - timedelta(hours=2)).astimezone(Schedule.parse("* * * * *", AMS).zone)
    expression = f"{local.minute} {local.hour} * * *"
    schedule = Schedule.parse(expression, AMS)
    tick = schedule.latest_in(now - timedelta(hours=24), now)
    assert tick is not None
    bridge.write_rule(
        "daily.yaml",
        f"""\
id: daily-summary
on: {{schedule: "{expression}", timezone: {AMS}}}
actions:
  - uses: slack.post
    with:
      channel: "#marketing"
      text: "Summary for {{{{ data.tick_local }}}} (missed: {{{{ data.missed }}}})"
""",
    )
    # The last tick emitted before the deploy: three days ago.
    mark = {"tick": (tick - timedelta(days=3)).timestamp(), "schedule": expression, "timezone": AMS}
    bridge.redis.hset(
        f"{bridge.settings.key_prefix}schedule:ticks", "daily-summary", json.dumps(mark)
    )
    bridge.start_worker()
    bridge.start_worker()
    messages = wait_for(lambda: bridge.slack.received("#marketing"), timeout=30, what="the tick")
    # Let the tick job run in two more slots: nothing more is emitted.
    # Slots come every 5 s; on a loaded machine three can take longer than 30 s.
    wait_for(lambda: cron_runs(bridge) >= 3, timeout=120, what="three tick slots")
    wait_for(lambda: bridge.queued() == 0, what="the queue to empty")
    assert len(bridge.slack.received("#marketing")) == 1
    local_tick = tick.astimezone(schedule.zone).isoformat()
    assert messages[0]["text"] == f"Summary for {local_tick} (missed: True)"
    event_id = f"schedule:daily-summary:{tick.isoformat().replace('+00:00', 'Z')}"
    assert bridge.stored_events() == 1
    # The run's end is traced after its message was posted: wait for it.
    run = wait_for(
        lambda: bridge.trace_has(event_id, "run", rule="daily-summary"), what="the run's end"
    )
    assert run["status"] == "succeeded"
    raw = bridge.redis.hget(f"{bridge.settings.key_prefix}schedule:ticks", "daily-summary")
    assert json.loads(raw)["tick"] == tick.timestamp()  # type: ignore[arg-type]


def test_a_bad_time_zone_and_a_bad_expression_are_both_told(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        RULE.format(on='{schedule: "0 9 * * MON-FRY", timezone: Europe/Amsterdm}')
    )
    checked = check_rules(
        tmp_path, templates=Templates(None), actions=action_schemas(), event_types=event_catalogue()
    )
    assert checked.ruleset is None
    assert [(p.line, p.column, p.message.split(":")[0]) for p in checked.errors] == [
        (2, 16, "bad schedule '0 9 * * MON-FRY' in rule 'summary'"),
        (
            2,
            45,
            "unknown timezone 'Europe/Amsterdm' in rule 'summary'; did you mean "
            "'Europe/Amsterdam'? expected an IANA name such as Europe/Amsterdam or UTC",
        ),
    ]
    assert "did you mean 'FRI'?" in checked.errors[0].message
