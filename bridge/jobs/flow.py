"""Walk a rule's steps in a run: plain steps, `for_each` loops and `choose` branches (→ run).

What a step, a loop item or a choice stored is read back on a retry (after a failure, a
crash or a SIGKILL), so a run resumes where it stopped: at the first unfinished step; in a
loop, at the first unfinished item of the list rendered on its first try; inside the
branch chosen the first time. The run itself (rule_run.RuleRun) runs each single step.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bridge.errors import TemplateError
from bridge.queue.store import dumps, loads
from bridge.rules.choose import CHOOSE, chosen_steps, decide
from bridge.rules.loops import item_context, item_step, items_key, loop_items
from bridge.rules.model import Step

if TYPE_CHECKING:
    from bridge.jobs.rule_run import RuleRun

# What `StepWalk.one` answers when the run went to the dead letters.
STOPPED: Any = object()
# Where a run keeps the pickup at which a loop last finished an item (beside step keys,
# which never start with '[').
PROGRESS = "[progress]"


def continued_failure(result: Any) -> bool:
    """Whether a stored step result is that of a step that failed with continue_on_error."""
    return (
        isinstance(result, dict)
        and result.keys() == {"error", "failed"}
        and result["failed"] is True
    )


def loop_result(outcomes: list[Any]) -> dict[str, Any]:
    """A finished loop step's result: each item's, and how many failed or were skipped."""
    failed = sum(1 for o in outcomes if continued_failure(o))
    skipped = sum(1 for o in outcomes if isinstance(o, dict) and o.get("skipped") is True)
    return {"results": outcomes, "count": len(outcomes), "failed": failed, "skipped": skipped}


class StepWalk:
    """Runs steps in order for one RuleRun, skipping what is done; knows where it stopped."""

    def __init__(self, run: RuleRun, done: Mapping[str, Any], actions: dict[str, Any]) -> None:
        self.run = run
        self.done = done  # what the run stored before this try, by key
        self.actions = actions
        self.results: dict[str, Any] = {}  # `steps` in templates
        self.failed: list[str] = []  # steps that failed under continue_on_error
        self.stopped: str | None = None  # the step or item whose failure ended the run
        # The pickup at which a loop last finished an item: a long loop that goes on in
        # many time slices (a rate limit deferring each item) is given up only after
        # MAX_PICKUPS pickups without progress, not MAX_PICKUPS in all.
        progress = done.get(PROGRESS)
        self.since = progress if isinstance(progress, int) else 0

    async def steps(self, steps: Sequence[Step]) -> bool:
        """Run `steps` in order; False when the run went to the dead letters."""
        for step in steps:
            if step.uses == CHOOSE:
                finished = await self.choose(step)
            elif step.for_each is not None:
                finished = await self.loop(step)
            else:
                finished = await self.one(step) is not STOPPED
            if not finished:
                return False
        return True

    def keep(self, step: Step, result: Any) -> None:
        self.results[step.key] = result
        if continued_failure(result) or (step.for_each is not None and _failed_items(result)):
            self.failed.append(step.key)

    async def one(self, step: Step, scope: dict[str, Any] | None = None) -> Any:
        """Run one step (or loop item, with its `scope`) unless done: its result, or STOPPED
        when the run went to the dead letters."""
        if step.key in self.done:
            outcome = self.done[step.key]
        elif not await self.run.ready(step, self.since):
            outcome = None
        else:
            outcome = await self.run._run_step(step, self.results, self.actions, scope)
        if outcome is None:
            self.stopped = step.key
            return STOPPED
        if scope is None:
            self.keep(step, outcome)
        return outcome

    async def choose(self, step: Step) -> bool:
        """Decide (once per run: a retry reads the stored choice) and run the branch."""
        run = self.run
        choice = self.done.get(step.key)
        if choice is None:
            decided = decide(
                step, run.event, run.bridge.rules.templates, run.rule, run.context(self.results)
            )
            choice = decided.result
            ttl, tracer = run.bridge.settings.trace_ttl_seconds, run.bridge.tracer
            entry = tracer.encode(
                "step",
                **run.who,
                step=step.key,
                uses=CHOOSE,
                status="succeeded",
                params={"branches": decided.tried},
                result=choice,
            )
            value = run.mask.dumps(choice)
            await tracer.put(run.event.id, run.steps_key, step.key, value, ttl, entry)
        self.results[step.key] = choice
        return await self.steps(chosen_steps(step, choice))

    async def loop(self, step: Step) -> bool:
        """Run the step once per item, each item's result stored as it finishes."""
        if step.key in self.done:
            self.keep(step, self.done[step.key])
            return True
        items = await self.items(step)
        if items is None:  # the list did not render: failed for good
            return step.key in self.results
        run, count, outcomes = self.run, len(items), []
        for index, item in enumerate(items):
            outcome = await self.one(item_step(step, index), item_context(step, item, index, count))
            if outcome is STOPPED:
                return False
            outcomes.append(outcome)
            await self.progressed()
        result = loop_result(outcomes)
        ttl, tracer = run.bridge.settings.trace_ttl_seconds, run.bridge.tracer
        entry = tracer.encode(
            "loop",
            **run.who,
            step=step.key,
            uses=step.uses,
            status="finished",
            items=count,
            failed=result["failed"],
            skipped=result["skipped"],
        )
        value = run.mask.dumps(result)
        await tracer.put(run.event.id, run.steps_key, step.key, value, ttl, entry)
        self.keep(step, result)
        return True

    async def progressed(self) -> None:
        """Record that this pickup finished an item (once per pickup)."""
        run = self.run
        if run.pickup > self.since:
            self.since = run.pickup
            ttl = run.bridge.settings.trace_ttl_seconds
            await run.bridge.store.put(run.steps_key, PROGRESS, dumps(run.pickup), ttl)

    async def items(self, step: Step) -> list[Any] | None:
        """The loop's list: stored with the run on its first try, read back on the next."""
        stored = self.done.get(items_key(step))
        if isinstance(stored, list):
            return stored
        run = self.run
        bridge, ttl = run.bridge, run.bridge.settings.trace_ttl_seconds
        begun = time.monotonic()
        deadline = begun + bridge.settings.step_timeout_seconds
        templates = bridge.rules.templates
        try:
            with templates.deadline(deadline):
                items = loop_items(step, templates, run.context(self.results), deadline=deadline)
        except TemplateError as exc:
            # The same list renders the same way on every try: failed for good.
            attempt = await bridge.tracer.count(run.event.id, run.attempts_key, step.key, 1, ttl)
            trace = {**run.who, "step": step.key, "uses": step.uses, "attempt": attempt}
            outcome = await run._failed(step, str(exc), attempt, trace, begun, final=True)
            if outcome is None:
                self.stopped = step.key
            else:
                self.keep(step, outcome)  # continue_on_error: the error is its result
            return None
        encoded = run.mask.dumps(items)
        entry = bridge.tracer.encode(
            "loop", **run.who, step=step.key, uses=step.uses, status="started", items=len(items)
        )
        await bridge.tracer.put(run.event.id, run.steps_key, items_key(step), encoded, ttl, entry)
        found: list[Any] = loads(encoded)
        return found


def _failed_items(result: Any) -> bool:
    """Whether a loop's result counts items that failed under continue_on_error."""
    failed = result.get("failed") if isinstance(result, dict) else None
    return isinstance(failed, int) and not isinstance(failed, bool) and failed > 0
