"""`for:` waits on the worker: start, cancel and check them, all in Redis (jobs → run).

A rule with `for:` that matches starts a wait (bridge/rules/waits.py says what a wait
means): one Lua script records it in its object's hash (`wait:object:<object>`, rule id →
the wait) and queues its check, a deferred job whose id names the rule, the object and the
matching event. A second match of the same object while it waits keeps the first wait.

Every event about an object with pending waits is looked at before it is matched: the
latest state of the object moves to it (unless it is older than the state known), and a
wait whose rule's conditions no longer hold for it is cancelled, its check taken off the
queue, in one script that also writes the cancel into the waiting event's trace.

The check (`check_wait`) evaluates the conditions on the object's current state: the
pollers' snapshot of the object (Lytho assets, Workflow objects, Lytics jobs and segments)
over the latest event about it. One script then ends the wait and, when they hold, queues
the rule's run (an ordinary run: traced, retried, dead-lettered) with the state it found
kept for the run's `current`. A check or a cancel interrupted by a crash runs again and
does nothing twice: each acts only while the wait it was given is still the pending one.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from bridge.events import Event
from bridge.jobs.digest import run_context as digest_run_context
from bridge.jobs.wait_state import current_state
from bridge.queue import Retry
from bridge.queue.redis_io import FastScript
from bridge.queue.scripts import WAKE_LUA
from bridge.queue.store import JOB_EXPIRY_MS, dumps, job_payload, loads
from bridge.rules import Rule
from bridge.rules.engine import RuleSet
from bridge.rules.waits import (
    clock,
    current_of,
    is_deletion,
    object_hash,
    recheck,
    why_not,
)

if TYPE_CHECKING:
    from bridge.operate.context import Context

logger = logging.getLogger(__name__)

# A check that finds no valid rule set looks again this often (s); at its last try (the
# queue's max_tries for check_wait, bridge/operate/worker.py) it ends the wait, traced.
NO_RULES_DEFER = 30
NO_RULES_TRIES = 500

# KEYS: queue, the object's hash, the check's job key, its result key, the match's mark.
# ARGV: rule id, the wait, job id, due ms, job payload, job expiry ms, keep the object ms,
# the event JSON, its time ms, mark ttl s. Returns {status, the wait}: `started`,
# `already_waiting` (another match's wait is pending), or what this match did before.
_START = """
local mark = redis.call('GET', KEYS[5])
if mark then
  local at = string.find(mark, '\\n', 1, true)
  return {string.sub(mark, 1, at - 1), string.sub(mark, at + 1)}
end
local pending = redis.call('HGET', KEYS[2], ARGV[1])
if pending then
  redis.call('SET', KEYS[5], 'already_waiting\\n' .. pending, 'EX', ARGV[10])
  return {'already_waiting', pending}
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local t = tonumber(redis.call('HGET', KEYS[2], '_t') or '-1')
if t <= tonumber(ARGV[9]) then
  redis.call('HSET', KEYS[2], '_latest', ARGV[8], '_t', ARGV[9])
end
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[7]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
redis.call('SET', KEYS[5], 'started\\n' .. ARGV[2], 'EX', ARGV[10])
if redis.call('EXISTS', KEYS[3], KEYS[4]) == 0 then
  redis.call('PSETEX', KEYS[3], ARGV[6], ARGV[5])
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
end
return {'started', ARGV[2]}
"""

# KEYS: queue, the object's hash, then per wait to cancel: its check's job key, the
# waiting event's trace. ARGV: the event JSON, its time ms, trace ttl s, then per wait:
# rule id, the wait, its check's job id, the trace entry. Returns the rules cancelled, or
# false when the event is older than the state known (it changes nothing).
_OBSERVE = """
local t = tonumber(redis.call('HGET', KEYS[2], '_t') or '-1')
if tonumber(ARGV[2]) < t then return false end
redis.call('HSET', KEYS[2], '_latest', ARGV[1], '_t', ARGV[2])
local out = {}
for i = 0, (#ARGV - 3) / 4 - 1 do
  local a = 4 + i * 4
  if redis.call('HGET', KEYS[2], ARGV[a]) == ARGV[a + 1] then
    redis.call('HDEL', KEYS[2], ARGV[a])
    redis.call('ZREM', KEYS[1], ARGV[a + 2])
    redis.call('DEL', KEYS[3 + i * 2])
    redis.call('RPUSH', KEYS[4 + i * 2], ARGV[a + 3])
    redis.call('EXPIRE', KEYS[4 + i * 2], ARGV[3])
    out[#out + 1] = ARGV[a]
  end
end
if redis.call('HLEN', KEYS[2]) <= 2 then redis.call('DEL', KEYS[2]) end
return out
"""

# KEYS: queue, the object's hash, the run's job key, its result key, the waiting event's
# trace, the kept state, the event's record. ARGV: rule id, the wait, holds ('1'/'0'), run
# job id, now ms, run payload, job expiry ms, trace entry, ttl s, the state JSON, the event
# JSON. Returns 1 when this call ended the wait, 0 when it had ended before.
_FINISH = (
    """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('HLEN', KEYS[2]) <= 2 then redis.call('DEL', KEYS[2]) end
redis.call('RPUSH', KEYS[5], ARGV[8])
redis.call('EXPIRE', KEYS[5], ARGV[9])
if redis.call('EXISTS', KEYS[7]) == 0 then
  redis.call('SET', KEYS[7], ARGV[11], 'EX', ARGV[9])
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[6], ARGV[10], 'EX', ARGV[9])
  if redis.call('EXISTS', KEYS[3], KEYS[4]) == 0 then
    redis.call('PSETEX', KEYS[3], ARGV[7], ARGV[6])
    redis.call('ZADD', KEYS[1], ARGV[5], ARGV[4])
"""
    + WAKE_LUA
    + """
  end
end
return 1
"""
)

# Whether a rule set has a rule with `for:` (asked once per rule set, not per event).
_WAITING_RULES: WeakKeyDictionary[RuleSet, bool] = WeakKeyDictionary()


def has_waits(rules: RuleSet) -> bool:
    found = _WAITING_RULES.get(rules)
    if found is None:
        found = _WAITING_RULES[rules] = any(rule.wait is not None for rule in rules.rules)
    return found


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _event_ms(event: Event) -> int:
    """The event's time in ms: the order of the states of an object (now when unknown)."""
    at = clock(event.time)
    return int((at if at is not None else time.time()) * 1000)


async def observe_waits(
    bridge: Context, event: Event, rules: RuleSet, runs: list[Rule], run: str = ""
) -> list[Rule]:
    """Before an event's rules run: let it cancel the waits it breaks, then start the waits
    of the matched rules with `for:`; the rules that run now. Each is traced on the event
    (`wait` entries). A replay runs at once: it neither waits nor cancels.
    """
    if run or not has_waits(rules):
        return runs
    for rule_id, what in (await _observe(bridge, event, rules)).items():
        await bridge.tracer.record(event.id, "wait", rule=rule_id, status="cancels", **what)
    now: list[Rule] = []
    for rule in runs:
        if rule.wait is None:
            now.append(rule)
        else:
            what = await _start(bridge, event, rule)
            await bridge.tracer.record(event.id, "wait", rule=rule.id, **what)
    return now


async def _observe(bridge: Context, event: Event, rules: RuleSet) -> dict[str, Any]:
    """Cancel the object's waits whose conditions no longer hold for `event`."""
    key = bridge.keys.wait_object(object_hash(event))
    pending = await bridge.redis.hgetall(key)  # type: ignore[misc]
    waits = {_text(k): _text(v) for k, v in pending.items() if not _text(k).startswith("_")}
    if not waits:
        return {}
    keys: list[str] = [bridge.settings.queue_name, key]
    args: list[Any] = [dumps(event.to_dict()), _event_ms(event), bridge.settings.trace_ttl_seconds]
    why: dict[str, tuple[str, str]] = {}
    for rule_id, raw in waits.items():
        wait = loads(raw)
        rule = rules.get(rule_id)
        if rule is None or wait.get("event") == event.id:
            continue  # a rule gone is the check's to end; the waiting event itself holds
        origin = Event.from_dict(wait["origin"])
        if is_deletion(event):
            reason = f"the object was deleted ({event.type})"
        else:
            result = recheck(rule, origin, event.data, bridge.rules.templates)
            if result.result:
                continue
            reason = why_not(result)
        entry = {
            "at": round(time.time(), 3),
            "kind": "wait",
            "rule": rule_id,
            "status": "cancelled",
            "by": event.id,
            "why": reason,
        }
        keys += [bridge.keys.job(wait["job"]), bridge.keys.trace(origin.id)]
        args += [rule_id, raw, wait["job"], bridge.mask.dumps(entry)]
        why[rule_id] = (origin.id, reason)
    done = await FastScript(bridge.redis, _OBSERVE)(keys, args)
    out: dict[str, Any] = {}
    for rule_id in [_text(r) for r in done or []]:
        origin_id, reason = why[rule_id]
        out[rule_id] = {"wait_of": origin_id, "why": reason}
        logger.info("event %s cancelled the wait of rule %s (%s)", event.id, rule_id, reason)
        await bridge.run_limits.release(origin_id, rule_id)
    return out


async def _start(bridge: Context, event: Event, rule: Rule) -> dict[str, Any]:
    """Start the rule's wait for the event's object (or keep the one pending)."""
    assert rule.wait is not None
    keys = bridge.keys
    obj = object_hash(event)
    job_id = keys.wait_check_job_id(rule.id, obj, event.id)
    wait_ms = round(rule.wait.seconds * 1000)
    now_ms = int(time.time() * 1000)
    wait = {"event": event.id, "job": job_id, "until": (now_ms + wait_ms) / 1000}
    wait |= {"for": rule.wait.text, "origin": event.to_dict()}
    record = dumps(wait).decode()
    payload = job_payload("check_wait", (event.to_dict(), rule.id, obj, record), now_ms)
    keep = wait_ms + JOB_EXPIRY_MS
    status, current = await FastScript(bridge.redis, _START)(
        [
            bridge.settings.queue_name,
            keys.wait_object(obj),
            keys.job(job_id),
            keys.result(job_id),
            keys.wait_match(event.id, rule.id),
        ],
        [
            rule.id,
            record,
            job_id,
            now_ms + wait_ms,
            payload,
            keep,
            keep,
            dumps(event.to_dict()),
            _event_ms(event),
            bridge.settings.trace_ttl_seconds + round(rule.wait.seconds),
        ],
    )
    status, pending = _text(status), loads(_text(current))
    status = "waiting" if status == "started" else status
    out = {"status": status, "until": pending.get("until"), "for": pending.get("for")}
    if status == "already_waiting":
        out["wait_of"] = pending.get("event")
        await bridge.run_limits.release(event.id, rule.id)  # this match does not run
    logger.debug("event %s rule %s: %s", event.id, rule.id, status)
    return out


async def check_wait(
    ctx: dict[str, Any], event_dict: dict[str, Any], rule_id: str, obj: str, record: str
) -> dict[str, Any]:
    """The job due when a wait ends: check the conditions on the object's current state,
    and queue the rule's run when they hold."""
    bridge: Context = ctx["bridge"]
    keys = bridge.keys
    origin = Event.from_dict(event_dict)
    object_key = keys.wait_object(obj)
    raw_wait, raw_latest = await bridge.redis.hmget(object_key, [rule_id, "_latest"])  # type: ignore[misc]
    if raw_wait is None or _text(raw_wait) != record:
        return {"status": "ended before"}
    rules = bridge.rules.current
    if rules is None and int(ctx.get("job_try") or 1) < NO_RULES_TRIES:
        raise Retry(defer=NO_RULES_DEFER)  # no valid rule set now: look again when it is fixed
    latest = Event.from_dict(loads(raw_latest)) if raw_latest is not None else origin
    entry: dict[str, Any] = {"at": round(time.time(), 3), "kind": "wait", "rule": rule_id}
    holds, state, source = False, latest, "event"
    dropped = _dropped(rules, rule_id, origin.id)
    rule = rules.get(rule_id) if rules is not None else None
    if dropped or rule is None:
        entry |= {"status": "not_run", "why": dropped, "dropped": True}
    else:
        state, source = await current_state(bridge, latest)
        entry["current"] = {"from": source, "event": state.id}
        if is_deletion(state):
            entry |= {"status": "not_run", "why": f"the object was deleted ({state.type})"}
        else:
            result = recheck(rule, origin, state.data, bridge.rules.templates)
            holds = result.result
            entry["status"] = "holds" if holds else "not_run"
            if not holds:
                entry |= {"why": why_not(result), "conditions": result.to_dict()}
    now_ms = int(time.time() * 1000)
    run_job = keys.run_job_id(origin.id, rule_id)
    ttl = bridge.settings.trace_ttl_seconds
    ended = await FastScript(bridge.redis, _FINISH)(
        [
            bridge.settings.queue_name,
            object_key,
            keys.job(run_job),
            keys.result(run_job),
            keys.trace(origin.id),
            keys.wait_current(origin.id, rule_id),
            keys.event(origin.id),
        ],
        [
            rule_id,
            record,
            "1" if holds else "0",
            run_job,
            now_ms,
            job_payload("run_rule", (event_dict, rule_id, ""), now_ms),
            JOB_EXPIRY_MS,
            bridge.mask.dumps(entry),
            ttl,
            bridge.mask.dumps(current_of(state.to_dict(), source)),
            dumps(event_dict),
        ],
    )
    if not ended:
        return {"status": "ended before"}
    if not holds:
        await bridge.run_limits.release(origin.id, rule_id)
    logger.info("event %s rule %s: wait over, %s", origin.id, rule_id, entry["status"])
    return {"status": entry["status"]}


def _dropped(rules: RuleSet | None, rule_id: str, origin_id: str) -> str:
    """Why a wait's check runs nothing whatever the object's state ('' when it checks).

    The rule as loaded when the check runs decides (docs/rules.md#hot-reload): one removed,
    disabled or without `for:` by then runs nothing; the check found no valid rule set at
    its last try (NO_RULES_TRIES, 30 s apart: about 4 h)."""
    if rules is None:
        hours = round(NO_RULES_TRIES * NO_RULES_DEFER / 3600)
        return (
            f"no valid rule set was loaded for {NO_RULES_TRIES} tries (about {hours} h); "
            f"fix the rules, then run it with `bridge replay {origin_id}`"
        )
    rule = rules.get(rule_id)
    if rule is None or not rule.enabled:
        return f"rule {rule_id} no longer exists or is disabled (reloaded)"
    if rule.wait is None:
        return f"rule {rule_id} no longer waits (reloaded)"
    return ""


async def wait_context(bridge: Context, event: Event, rule: Rule) -> dict[str, Any]:
    """`current` for a run of a rule with `for:`: the state its check found (the event
    itself for a run that did not wait, such as a replay)."""
    raw = await bridge.redis.get(bridge.keys.wait_current(event.id, rule.id))
    if raw is None:
        return {"current": current_of(event.to_dict(), "event")}
    return {"current": loads(raw)}


async def run_context(bridge: Context, event: Event, rule: Rule, run: str) -> dict[str, Any]:
    """What a run adds to its templates: a digest's or a roll-up's (jobs/digest.py), and
    for a rule with `for:`, `current`."""
    extra = await digest_run_context(bridge, event, rule, run)
    return extra | await wait_context(bridge, event, rule) if rule.wait is not None else extra
