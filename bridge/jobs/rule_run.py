"""One run of one rule for one event: its steps in order, each finished one stored once.

A run stores each finished step's result, so a retry or a re-run after a crash resumes at
the first unfinished step; a run that exhausts its tries becomes a dead letter (see
deadletters.py) and gives back the dedupe and throttle slots it booked (see limits.py). A
run whose steps all finished, but one of them by failing with `continue_on_error`, is
`succeeded_with_errors`. It runs in its own `run_rule` job, or inside the `handle_event`
job that matched it (handlers.py, "inline").
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from bridge.actions import RunReads, StepCall, registry, traced_params
from bridge.errors import ClientError, PermanentError, RateLimited, TemplateError
from bridge.events import Event
from bridge.jobs.flow import StepWalk
from bridge.operate import metrics
from bridge.queue import Retry
from bridge.queue.store import loads
from bridge.rules import Rule, Step, event_context

if TYPE_CHECKING:
    from bridge.operate.context import Context

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 300.0
# A job picked up this many times (crashes, rate limits, time slices) gives up for good.
MAX_PICKUPS = 500
# Progress or not, a run gives up after this many (the queue allows run_rule one more).
MAX_RUN_PICKUPS = 100 * MAX_PICKUPS
# A job yields (re-queues itself) rather than start a step that could outlive its timeout.
JOB_TIMEOUT_MARGIN = 5.0
# A step's rendered parameters are traced as sent up to this size; larger ones as a preview.
MAX_TRACED_PARAMS_BYTES = 16 * 1024
PARAMS_PREVIEW_BYTES = 2048


def backoff_delay(step: Step, failures: int) -> float:
    """The delay before try `failures + 1`: doubled each time, capped, with equal jitter."""
    base = min(MAX_BACKOFF_SECONDS, step.backoff_seconds * 2 ** max(0, failures - 1))
    return float(base / 2 + random.uniform(0, base / 2))


def job_timeout(step_timeout: float) -> float:
    """A job's timeout: one step's (BRIDGE_STEP_TIMEOUT) and a margin to record its end."""
    return step_timeout + JOB_TIMEOUT_MARGIN


class RuleRun:
    """One run of one rule for one event, resumable from the steps stored in Redis."""

    def __init__(
        self,
        bridge: Context,
        event: Event,
        rule: Rule,
        run: str,
        pickup: int,
        extra: Any = None,
        *,
        fresh: bool = False,
        started: float | None = None,
    ) -> None:
        """`fresh`: the run's first job ever (inline in handle_event's first try), so none
        of its steps can be stored yet; `started`: when the job that runs it started."""
        self.bridge = bridge
        self.extra: dict[str, Any] = extra or {}  # what a digest or roll-up adds to templates
        self.event = event
        self.rule = rule
        self.run_name = run
        self.pickup = pickup
        self.steps_key = bridge.keys.steps(event.id, rule.id, run)
        self.attempts_key = bridge.keys.attempts(event.id, rule.id, run)
        self.started = time.monotonic() if started is None else started
        self.fresh = fresh
        self.mask = bridge.mask
        # What every trace entry of this run says about whose run it is.
        self.who: dict[str, str] = {"rule": rule.id} | ({"run": run} if run else {})
        self.reads = RunReads()  # the run's look-ups (bridge/actions/reads.py)

    async def run(self) -> dict[str, Any]:
        done = {} if self.fresh else await self._done()
        walk = StepWalk(self, done, registry())  # loops and branches: jobs/flow.py
        if not await walk.steps(self.rule.actions):
            return {"status": "dead_lettered", "step": walk.stopped}
        results, failed = walk.results, walk.failed
        status = "succeeded_with_errors" if failed else "succeeded"
        ended = self.bridge.tracer.encode(
            "run", **self.who, status=status, **({"failed_steps": failed} if failed else {})
        )
        self.bridge.tracer.hold(self.event.id, ended)
        if not self.fresh:
            await self.bridge.tracer.flush(self.event.id)  # inline: handle_event flushes it
        metrics.run_ended(self.bridge.metrics, self.rule.id, status)
        if not self.run_name and (self.rule.dedupe is not None or self.rule.throttle is not None):
            await self.bridge.run_limits.keep(self.event.id, self.rule.id)
        return {"status": status, "steps": list(results)} | (
            {"failed_steps": failed} if failed else {}
        )

    async def _done(self) -> dict[str, Any]:
        """The results of the steps finished before, by step key."""
        stored = await self.bridge.redis.hgetall(self.steps_key)  # type: ignore[misc]
        return {k.decode(): loads(v) for k, v in stored.items()}

    async def ready(self, step: Step, since: int = 0) -> bool:
        """Whether `step` may start in this job; False when the run gave up (a dead letter)
        after MAX_PICKUPS pickups without progress (since pickup `since`)."""
        if self.pickup - since > MAX_PICKUPS or self.pickup > MAX_RUN_PICKUPS:
            most = MAX_PICKUPS if self.pickup - since > MAX_PICKUPS else MAX_RUN_PICKUPS
            what = f"{most} pickups" + (" in all" if most > MAX_PICKUPS else "")
            await self._dead_letter(step, f"gave up after {what}", 0)
            return False
        elapsed = time.monotonic() - self.started
        step_timeout = self.bridge.settings.step_timeout_seconds
        if elapsed + step_timeout > job_timeout(step_timeout) - 1:
            raise Retry(defer=0)  # a fresh time slice; no try is spent
        return True

    def context(self, results: dict[str, Any]) -> dict[str, Any]:
        """What the run's templates see, with the results of the steps so far."""
        return event_context(self.event, self.rule, results) | self.extra

    async def _run_step(
        self, step: Step, results: dict[str, Any], actions: dict[str, Any], scope: Any = None
    ) -> dict[str, Any] | None:
        """Run one step (a loop item with its `scope`); its stored result, or None when the
        run went to the dead letters."""
        context = self.context(results) | (scope or {})
        templates = self.bridge.rules.templates
        tracer, ttl = self.bridge.tracer, self.bridge.settings.trace_ttl_seconds
        attempt = await tracer.count(self.event.id, self.attempts_key, step.key, 1, ttl)
        trace = {**self.who, "step": step.key, "uses": step.uses, "attempt": attempt}
        begun = time.monotonic()
        # One budget for the whole step: its `if:`, its parameters, its template file, and
        # the action's calls.
        deadline = begun + self.bridge.settings.step_timeout_seconds
        try:
            with templates.deadline(deadline):
                # Rendered as rule tests and fire --dry-run render it (Step.render),
                # its template file included.
                rendered = step.render(templates, context, deadline=deadline)
                if rendered.skipped:
                    result: dict[str, Any] = {"skipped": True}
                    await self._finish(step, result, trace | {"status": "skipped"})
                    return result
                params = rendered.params
                # What was sent, as sent (secrets masked): the dashboard shows this, it
                # never renders a rule's templates again.
                trace["params"] = self._shown_params(traced_params(step.uses, params))
                call = StepCall(
                    params,
                    context,
                    self.event.id,
                    self.rule.id,
                    step.key,
                    rendered.output,
                    run=self.run_name,
                    reads=self.reads,
                    deadline=deadline,
                )
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    result = await actions[step.uses].run(self.bridge.actions, call)
        except RateLimited as exc:
            # A rate limit is not the step's fault: wait as told and spend no try.
            await tracer.count(self.event.id, self.attempts_key, step.key, -1, ttl)
            await self._trace(
                trace
                | {"status": "rate_limited", "error": str(exc), "retry_after": exc.retry_after},
                begun,
            )
            logger.info(
                "event %s rule %s step %s rate limited; retry in %.1f s",
                self.event.id,
                self.rule.id,
                step.key,
                exc.retry_after,
            )
            raise Retry(defer=exc.retry_after) from None
        except TemplateError as exc:
            message = str(exc)
            if time.monotonic() >= deadline:
                message += (
                    f" (a step has {self.bridge.settings.step_timeout_seconds:g} s in all, "
                    "BRIDGE_STEP_TIMEOUT, for its if:, its parameters and its action)"
                )
            return await self._failed(step, message, attempt, trace, begun, final=True)
        except PermanentError as exc:
            return await self._failed(step, str(exc), attempt, trace, begun, final=True)
        except (ClientError, TimeoutError) as exc:
            message = str(exc) or f"timed out after {self.bridge.settings.step_timeout_seconds} s"
            return await self._failed(step, message, attempt, trace, begun, final=False)
        except Exception as exc:
            logger.exception(
                "event %s rule %s step %s failed unexpectedly",
                self.event.id,
                self.rule.id,
                step.key,
            )
            message = f"unexpected error: {type(exc).__name__}: {exc}"
            return await self._failed(step, message, attempt, trace, begun, final=False)
        await self._finish(step, result, trace | {"status": "succeeded", "result": result}, begun)
        return result

    def _shown_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The rendered parameters for the trace: masked, and cut when they are large."""
        encoded = self.mask.dumps(params)
        if len(encoded) <= MAX_TRACED_PARAMS_BYTES:
            shown: dict[str, Any] = loads(encoded)
            return shown
        preview = encoded[:PARAMS_PREVIEW_BYTES].decode(errors="ignore")
        return {"_truncated": True, "bytes": len(encoded), "preview": preview}

    async def _finish(
        self, step: Step, result: dict[str, Any], trace: dict[str, Any], begun: float | None = None
    ) -> None:
        ttl = self.bridge.settings.trace_ttl_seconds
        # Stored with every configured secret masked (an upstream error may echo one), with
        # its trace entry in the same step.
        value = self.mask.dumps(result)
        entry = self._entry(trace, begun)
        await self.bridge.tracer.put(self.event.id, self.steps_key, step.key, value, ttl, entry)

    async def _trace(self, fields: dict[str, Any], begun: float | None) -> None:
        entry = self._entry(fields, begun)
        self.bridge.tracer.hold(self.event.id, entry)
        await self.bridge.tracer.flush(self.event.id)

    def _entry(self, fields: dict[str, Any], begun: float | None) -> bytes:
        """A step's trace entry (counted in the metrics)."""
        if begun is not None:
            fields["duration_ms"] = round((time.monotonic() - begun) * 1000, 1)
        metrics.step_traced(self.bridge.metrics, fields)
        return self.bridge.tracer.encode("step", **fields)

    async def _failed(
        self,
        step: Step,
        message: str,
        attempt: int,
        trace: dict[str, Any],
        begun: float,
        *,
        final: bool,
    ) -> dict[str, Any] | None:
        # An upstream error may echo a secret: mask it before it is traced, logged, stored
        # or shown to the next steps (`steps.<id>.error`).
        message = self.mask.text(message)
        exhausted = final or attempt >= step.attempts
        if not exhausted:
            delay = backoff_delay(step, attempt)
            await self._trace(
                trace | {"status": "failed", "error": message, "retry_in": round(delay, 2)}, begun
            )
            logger.warning(
                "event %s rule %s step %s failed (try %d of %d): %s; retry in %.1f s",
                self.event.id,
                self.rule.id,
                step.key,
                attempt,
                step.attempts,
                message,
                delay,
            )
            raise Retry(defer=delay)
        if step.continue_on_error:
            result = {"error": message, "failed": True}
            await self._finish(
                step,
                result,
                trace | {"status": "failed", "error": message, "continued": True},
                begun,
            )
            return result
        await self._trace(trace | {"status": "failed", "error": message}, begun)
        await self._dead_letter(step, message, attempt)
        return None

    async def _dead_letter(self, step: Step, message: str, attempts: int) -> None:
        letter = await self.bridge.dead_letters.add(
            self.event, self.rule.id, self.run_name, step.key, step.uses, message, attempts
        )
        metrics.dead_lettered(self.bridge.metrics, self.rule.id)
        metrics.run_ended(self.bridge.metrics, self.rule.id, "dead_lettered")
        if not self.run_name:
            # A slot counts only for a run that did not fail: the next matching event runs.
            # (Replays and retries of replays booked none.)
            await self.bridge.run_limits.release(self.event.id, self.rule.id)
        await self.bridge.tracer.record(
            self.event.id,
            "run",
            **self.who,
            status="dead_lettered",
            dead_letter=letter.id,
            step=step.key,
            error=message,
        )
        logger.error(
            "event %s rule %s step %s dead-lettered as %s: %s",
            self.event.id,
            self.rule.id,
            step.key,
            letter.id,
            message,
        )
        return None
