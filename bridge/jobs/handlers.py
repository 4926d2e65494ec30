"""The queue's jobs: handle_event (match rules, run what matched) and run_rule (a run again).

This is the only module that joins rules to actions. A `handle_event` job on its first try
runs the rules it matched itself ("inline", rule_run.RuleRun, each run under its own id
and steps), which spares every matched event a second job: its enqueue, claim and finish.
A run that must wait (a retry's backoff, a rate limit, a fresh time slice) or that failed
unexpectedly goes on as a `run_rule` job of its own, from its first unfinished step; a
`handle_event` picked up again after a crash queues its runs as `run_rule` jobs, which
resume from the steps the first try stored, so no finished step runs twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from bridge.errors import TemplateError
from bridge.events import Event
from bridge.jobs.digest import admit, join_digests
from bridge.jobs.rule_run import (
    JOB_TIMEOUT_MARGIN,
    MAX_BACKOFF_SECONDS,
    MAX_PICKUPS,
    MAX_RUN_PICKUPS,
    RuleRun,
    backoff_delay,
    job_timeout,
)
from bridge.jobs.waits import observe_waits, run_context
from bridge.operate import metrics
from bridge.queue import Retry
from bridge.queue.store import Job
from bridge.rules import Rule

if TYPE_CHECKING:
    from bridge.operate.context import Context

__all__ = [
    "JOB_TIMEOUT_MARGIN",
    "MAX_BACKOFF_SECONDS",
    "MAX_PICKUPS",
    "MAX_RUN_PICKUPS",
    "RuleRun",
    "backoff_delay",
    "handle_event",
    "job_timeout",
    "run_rule",
]

logger = logging.getLogger(__name__)


def _bridge(ctx: dict[str, Any]) -> Context:
    """The worker's resources (bridge/operate/context.py), set by its on_startup."""
    context: Context = ctx["bridge"]
    return context


async def handle_event(
    ctx: dict[str, Any], event_dict: dict[str, Any], run: str = ""
) -> dict[str, Any]:
    """Match the event against the rules, record why, and run each matched rule: here on
    the first try (a run that must wait goes on as its own job), as run_rule jobs after.

    `run` names a replay: its rule runs are new runs, not resumptions of the first ones.
    """
    started = time.monotonic()
    bridge = _bridge(ctx)
    event = Event.from_dict(event_dict)
    metrics.event_handled(bridge.metrics, event, run)
    rules = bridge.rules.current
    if rules is None:
        await bridge.tracer.record(
            event.id,
            "evaluated",
            rules=[],
            note="no valid rule set is loaded",
            problems=bridge.rules.problems,
        )
        logger.warning("event %s not matched: no valid rule set is loaded", event.id)
        return {"matched": []}
    evaluations = rules.evaluate(event, bridge.rules.templates)
    matched = [e.rule for e in evaluations if e.matched]
    metrics.rules_matched(bridge.metrics, [rule.id for rule in matched], run)
    # A replay is an operator's explicit request: dedupe and throttle do not hold it back.
    suppressed = {} if run else await _suppressed(bridge, event, matched)
    runs = [rule for rule in matched if rule.id not in suppressed]
    joined: dict[str, str] = {}  # a digest rule's match joins its digest (jobs/digest.py)
    if any(rule.digest is not None for rule in runs):
        runs, joined = await join_digests(bridge, event, runs, run)
    runs = await observe_waits(bridge, event, rules, runs, run)  # `for:` (jobs/waits.py)
    # The first try runs its matches here. Its trace entry waits for the run's first write
    # to Redis (before any action starts) and goes with it, in the same round trip.
    inline = bool(runs) and int(ctx.get("job_try") or 1) == 1
    evaluated = bridge.tracer.encode(
        "evaluated",
        rules=[e.to_dict() for e in evaluations],
        matched=[r.id for r in matched],
        **({"suppressed": suppressed} if suppressed else {}),
        **({"digests": joined} if joined else {}),
        **({"run": run} if run else {}),
    )
    bridge.tracer.hold(event.id, evaluated)
    if inline:
        try:
            await _run_inline(bridge, event, event_dict, runs, run, started)
        finally:  # what is left of the trace (the runs' ends) goes with the job's finish
            await bridge.tracer.hand_over(event.id, ctx)
    elif runs:  # written before the runs start, so that it comes first in the trace
        await bridge.tracer.flush(event.id)
        await bridge.store.enqueue([_run_job(bridge, event_dict, rule.id, run) for rule in runs])
    else:
        await bridge.tracer.hand_over(event.id, ctx)
    logger.debug(
        "event %s (%s) matched %d of %d candidate rules%s",
        event.id,
        event.type,
        len(matched),
        len(evaluations),
        (": " + ", ".join(r.id for r in matched)) if matched else "",
    )
    return {"matched": [r.id for r in matched], "suppressed": list(suppressed)}


def _run_job(
    bridge: Context, event_dict: dict[str, Any], rule_id: str, run: str, defer: float = 0.0
) -> Job:
    job_id = bridge.keys.run_job_id(str(event_dict["id"]), rule_id, run)
    return Job("run_rule", (event_dict, rule_id, run), job_id, defer)


async def _run_inline(
    bridge: Context,
    event: Event,
    event_dict: dict[str, Any],
    rules: list[Rule],
    run: str,
    started: float,
) -> None:
    """Run each matched rule in this job, side by side; a run that must wait, or failed
    unexpectedly, is queued as its own `run_rule` job and resumes there."""

    async def one(rule: Rule) -> None:
        try:
            extra = await run_context(bridge, event, rule, run)  # a roll-up's
            await RuleRun(bridge, event, rule, run, 1, extra, fresh=True, started=started).run()
        except Retry as exc:
            defer = (exc.defer_score or 0) / 1000
            await bridge.store.enqueue([_run_job(bridge, event_dict, rule.id, run, defer)])
        except Exception:
            logger.exception(
                "event %s rule %s: the run failed in handle_event; it goes on as its own job",
                event.id,
                rule.id,
            )
            await bridge.store.enqueue([_run_job(bridge, event_dict, rule.id, run)])

    outcomes = await asyncio.gather(*(one(rule) for rule in rules), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def _suppressed(
    bridge: Context, event: Event, matched: list[Rule]
) -> dict[str, dict[str, str]]:
    """The matched rules that dedupe or throttle hold back, with why; books the others."""
    found: dict[str, dict[str, str]] = {}
    for rule in matched:
        if rule.dedupe is None and rule.throttle is None:
            continue  # Most rules have neither: no context to build, no Redis call.
        try:
            held = await admit(bridge, rule, event)
        except TemplateError as exc:
            # A key that cannot render cannot dedupe: run rather than lose the action.
            logger.warning(
                "event %s rule %s: dedupe/throttle key failed (%s); running it",
                event.id,
                rule.id,
                exc,
            )
            continue
        if held is not None:
            found[rule.id] = held.to_dict()
            logger.info("event %s rule %s suppressed: %s", event.id, rule.id, held.reason)
    return found


async def run_rule(
    ctx: dict[str, Any], event_dict: dict[str, Any], rule_id: str, run: str = ""
) -> dict[str, Any]:
    """Run a rule's steps for an event in order, skipping those already finished."""
    bridge = _bridge(ctx)
    event = Event.from_dict(event_dict)
    rules = bridge.rules.current
    rule = rules.get(rule_id) if rules is not None else None
    if rule is None:
        await bridge.tracer.record(
            event.id, "run", rule=rule_id, status="skipped", reason="the rule no longer exists"
        )
        logger.warning("event %s: rule %s no longer exists; run skipped", event.id, rule_id)
        return {"status": "skipped"}
    extra = await run_context(bridge, event, rule, run)  # a digest's, a roll-up's
    return await RuleRun(bridge, event, rule, run, int(ctx.get("job_try") or 1), extra).run()
