"""Digests and throttle roll-ups: matches collected in Redis into one run (jobs → run).

A digest rule's match joins the open window of its rule and rendered key (one Lua
script: the first match opens it and queues its close as a deferred job whose id is
derived from the digest's id; `max` matches close it at once). Closing detaches the
window (a match arriving after that opens the next one: never lost, never in two), then,
in one more script, queues one run of the rule whose event carries the members
(bridge/rules/digests.py), traces it and forgets the members. Both steps may run again
after a crash and do nothing twice. A match is booked to its digest per event, so an event
matched again (a re-run of handle_event) never joins a second digest.

A roll-up throttle counts the matches it holds back and keeps the newest of them; the
next run it admits takes them over, stored beside the run, so a retry sees the same.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bridge.errors import TemplateError
from bridge.events import Event
from bridge.queue.keys import Keys
from bridge.queue.redis_io import FastScript
from bridge.queue.scripts import WAKE_LUA
from bridge.queue.store import JOB_EXPIRY_MS, Job, dumps, job_payload, loads
from bridge.rules import Rule, event_context
from bridge.rules.digests import (
    DIGEST_SOURCE,
    ROLLUP_KEPT,
    digest_context,
    digest_event,
    is_digest_run,
    rollup_context,
)

if TYPE_CHECKING:
    from bridge.jobs.limits import Suppressed
    from bridge.operate.context import Context

logger = logging.getLogger(__name__)

# KEYS: queue, the window, the event's joined mark, the close job's key if this match
# opens a window. ARGV: event id, event JSON, max, window ms, now ms, job expiry ms, a
# fresh digest id, the close job's payload, the close job ids' prefix, the members' key
# prefix, keep s. Returns {digest id, members now (0: joined before)}.
_JOIN = (
    """
local joined = redis.call('GET', KEYS[3])
if joined then return {joined, 0} end
local window_ms, now = tonumber(ARGV[4]), tonumber(ARGV[5])
local open = redis.call('GET', KEYS[2])
if not open then
  open = ARGV[7]
  redis.call('SET', KEYS[2], open, 'PX', window_ms + tonumber(ARGV[6]))
  redis.call('PSETEX', KEYS[4], window_ms + tonumber(ARGV[6]), ARGV[8])
  redis.call('ZADD', KEYS[1], now + window_ms, ARGV[9] .. open)
end
local members = ARGV[10] .. open
local n = redis.call('RPUSH', members, ARGV[2])
redis.call('EXPIRE', members, ARGV[11])
redis.call('SET', KEYS[3], open, 'EX', ARGV[11])
if n >= tonumber(ARGV[3]) then
  -- Full: the next match opens a new window, and this one closes now.
  redis.call('DEL', KEYS[2])
  redis.call('ZADD', KEYS[1], 'XX', now, ARGV[9] .. open)
"""
    + WAKE_LUA
    + """
end
return {open, n}
"""
)

# KEYS: the window, the members. ARGV: the digest id. Detaches the window if it is still
# this digest's (the next match opens a new one) and returns the members in order.
_DETACH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return redis.call('LRANGE', KEYS[2], 0, -1)
"""

# KEYS: queue, the members, the run's job key, its result key, the digest's trace, its
# event record. ARGV: job id, now ms, job payload, job expiry ms, trace entry, trace ttl s,
# the event JSON, event ttl s. Returns 1 when this call queued the run, 0 when done before.
_COMMIT = (
    """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('SET', KEYS[6], ARGV[7], 'EX', ARGV[8])
redis.call('RPUSH', KEYS[5], ARGV[5])
redis.call('EXPIRE', KEYS[5], ARGV[6])
if redis.call('EXISTS', KEYS[3], KEYS[4]) == 0 then
  redis.call('PSETEX', KEYS[3], ARGV[4], ARGV[3])
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
redis.call('DEL', KEYS[2])
"""
    + WAKE_LUA
    + """
return 1
"""
)

# KEYS: the roll-up list, its count, the event's mark. ARGV: event JSON, kept, ttl s.
_ROLL = """
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[3]) then return 0 end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: the roll-up list, its count, the run's copy. ARGV: ttl s. The run takes over what
# was held back, once: a run that took it already keeps what it took.
_TAKE = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local taken = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('RPUSH', KEYS[3], redis.call('GET', KEYS[2]) or '0')
for i = 1, #taken do redis.call('RPUSH', KEYS[3], taken[i]) end
redis.call('EXPIRE', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""


def _script(bridge: Context, source: str) -> FastScript:
    # Cheap to make (it holds the source and its SHA-1): made where it runs.
    return FastScript(bridge.redis, source)


def _hash(text: str) -> str:
    # Rendered keys can be long or hold odd characters; Redis keys stay short and safe.
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


async def join_digests(
    bridge: Context, event: Event, rules: list[Rule], run: str = ""
) -> tuple[list[Rule], dict[str, str]]:
    """The rules that run at once (those without a digest), and the digest each other one's
    match joined (rule id → digest id)."""
    now: list[Rule] = []
    joined: dict[str, str] = {}
    for rule in rules:
        if rule.digest is None:
            now.append(rule)
            continue
        joined[rule.id] = await _join(bridge, event, rule, run)
    return now, joined


async def _join(bridge: Context, event: Event, rule: Rule, run: str) -> str:
    assert rule.digest is not None
    keys: Keys = bridge.keys
    try:
        key = str(bridge.rules.templates.render_value(rule.digest.key, event_context(event, rule)))
    except TemplateError as exc:
        # A key that cannot render still collects: into the rule's own window.
        logger.warning(
            "event %s rule %s: digest key failed (%s); joining the rule's window",
            event.id,
            rule.id,
            exc,
        )
        key = rule.id
    window_ms = max(1, round(rule.digest.window_seconds * 1000))
    now_ms = int(time.time() * 1000)
    fresh = "dg_" + secrets.token_hex(10)
    close_id = keys.digest_close_job_id(fresh)
    payload = job_payload("close_digest", (rule.id, fresh, key), now_ms)
    keep = bridge.settings.trace_ttl_seconds + round(rule.digest.window_seconds)
    digest_id, count = await _script(bridge, _JOIN)(
        [
            bridge.settings.queue_name,
            keys.digest_window(rule.id, _hash(key)),
            keys.digest_joined(event.id, rule.id, run),
            keys.job(close_id),
        ],
        [
            event.id,
            dumps(event.to_dict()),
            rule.digest.max,
            window_ms,
            now_ms,
            JOB_EXPIRY_MS,
            fresh,
            payload,
            keys.digest_close_job_id(""),
            keys.digest_members(""),
            keep,
        ],
    )
    digest_id = _text(digest_id)
    logger.debug("event %s rule %s joined digest %s (%s)", event.id, rule.id, digest_id, count)
    return digest_id


async def close_digest(
    ctx: dict[str, Any], rule_id: str, digest_id: str, key: str
) -> dict[str, Any]:
    """The job that closes a digest's window: queue one run of the rule with its members."""
    bridge: Context = ctx["bridge"]
    keys: Keys = bridge.keys
    members_key = keys.digest_members(digest_id)
    raw = await _script(bridge, _DETACH)(
        [keys.digest_window(rule_id, _hash(key)), members_key], [digest_id]
    )
    if not raw:
        return {"status": "closed before"}
    members = [loads(item) for item in raw]
    event = digest_event(rule_id, digest_id, key, members)
    now_ms = int(time.time() * 1000)
    job_id = keys.run_job_id(digest_id, rule_id)
    entry = {
        "at": round(time.time(), 3),
        "kind": "digest",
        "rule": rule_id,
        "key": key,
        "count": len(members),
        "members": [m.get("id") for m in members],
    }
    ttl = bridge.settings.trace_ttl_seconds
    queued = await _script(bridge, _COMMIT)(
        [
            bridge.settings.queue_name,
            members_key,
            keys.job(job_id),
            keys.result(job_id),
            keys.trace(digest_id),
            keys.event(digest_id),
        ],
        [
            job_id,
            now_ms,
            job_payload("run_rule", (event.to_dict(), rule_id, ""), now_ms),
            JOB_EXPIRY_MS,
            bridge.mask.dumps(entry),
            ttl,
            dumps(event.to_dict()),
            max(ttl, bridge.store.event_ttl),
        ],
    )
    if queued:
        logger.info("digest %s of rule %s closed with %d events", digest_id, rule_id, len(members))
    return {"status": "queued" if queued else "queued before", "count": len(members)}


def replay_job(keys: Keys, event: Event, run: str) -> Job | None:
    """The job of a replay of a digest run (`dg_…`): its rule runs again with the same
    members, as a new run (its event matches no rule: matched again, it would run nothing).
    None for an event that is no digest run."""
    rule_id = event.data.get("rule") if isinstance(event.data, Mapping) else None
    if not isinstance(rule_id, str) or not is_digest_run(event, rule_id):
        return None
    return Job("run_rule", (event.to_dict(), rule_id, run), keys.run_job_id(event.id, rule_id, run))


async def admit(bridge: Context, rule: Rule, event: Event) -> Suppressed | None:
    """Dedupe and throttle's verdict on a match (limits.py); a roll-up throttle counts it."""
    context = event_context(event, rule)
    held = await bridge.run_limits.admit(rule, event.id, context, bridge.rules.templates)
    if rule.throttle is not None and rule.throttle.rollup:
        await roll_up(bridge, rule, event, context, held)
    return held


async def roll_up(
    bridge: Context,
    rule: Rule,
    event: Event,
    context: Mapping[str, Any],
    held: Suppressed | None,
) -> None:
    """Count a match a roll-up throttle held back, or hand what it held to this run."""
    assert rule.throttle is not None
    if held is not None and held.by != "throttle":
        return  # held back by dedupe: not a match the throttle rolls up
    key = str(bridge.rules.templates.render_value(rule.throttle.key, context))
    rolled = bridge.keys.rollup(rule.id, _hash(key))
    ttl = bridge.settings.trace_ttl_seconds
    if held is not None:
        seen = bridge.keys.rollup_seen(rule.id, event.id)
        await _script(bridge, _ROLL)(
            [rolled, rolled + ":count", seen], [dumps(event.to_dict()), ROLLUP_KEPT, ttl]
        )
    else:
        await _script(bridge, _TAKE)(
            [rolled, rolled + ":count", bridge.keys.rollup_run(event.id, rule.id)], [ttl]
        )


async def run_context(bridge: Context, event: Event, rule: Rule, run: str) -> dict[str, Any]:
    """What a digest run or a roll-up throttle's run adds to its templates' context."""
    if event.source == DIGEST_SOURCE and is_digest_run(event, rule.id):
        extra = digest_context(event, rule)
        extra.pop("steps")
        return extra
    if rule.throttle is None or not rule.throttle.rollup:
        return {}
    if run:
        return {"throttle": rollup_context(0, [])}  # a replay took nothing over
    raw = await bridge.redis.lrange(bridge.keys.rollup_run(event.id, rule.id), 0, -1)  # type: ignore[misc]
    count = int(raw[0]) if raw else 0
    return {"throttle": rollup_context(count, [loads(item) for item in raw[1:]])}
