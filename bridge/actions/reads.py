"""What look-ups share within one run: answers already read, and the step's time budget.

A run (one rule for one event) often looks the same object up twice, say the asset in one
step and again in a loop. `RunReads` keeps each look-up's answer for the rest of the run,
keyed by the action and its parameters, so the second look-up sends no request; a step of
the run that writes to the same service (`lytho.tag_asset` for the `lytho.*` look-ups)
forgets that service's answers, so a look-up after a write reads again. The answers live
in the worker's memory for one pickup of the run: a retry, a resumption after a deferral
or another worker reads again (reads are idempotent).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.actions.action import Action, ActionDeps, StepCall
from bridge.errors import RateLimited

# The look-ups: their answers are kept for the rest of the run.
READS = frozenset(
    {
        "lytho.find_assets",
        "lytho.get_asset",
        "lytho_workflow.get",
        "lytics.lookup",
        "lytics.segment_membership",
    }
)
# What a look-up's service is: `lytho_workflow.get` → `lytho_workflow`.
SERVICES = frozenset(name.partition(".")[0] for name in READS)


def read_key(action: str, params: Any) -> str:
    """The key of one look-up: the action and its parameters, order of keys aside."""
    return action + " " + json.dumps(params, sort_keys=True, default=str)


class RunReads:
    """The answers of one run's look-ups, by action and parameters (see the module)."""

    def __init__(self) -> None:
        self._found: dict[str, dict[str, Any]] = {}
        self.hits = 0

    async def get(self, key: str, read: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """The answer kept under `key`, or `read()`'s, kept for the rest of the run."""
        if key in self._found:
            self.hits += 1
        else:
            self._found[key] = await read()
        return copy.deepcopy(self._found[key])

    def forget(self, service: str) -> None:
        """Drop the answers of `service`'s look-ups (a step wrote to it)."""
        for key in [k for k in self._found if k.partition(".")[0] == service]:
            del self._found[key]


def with_reads(action: Action) -> Action:
    """`action` taking part in its run's reads: a look-up answers from them, a write to a
    look-up's service forgets that service's answers; any other action as it is."""
    name, run = action.name, action.run
    service = name.partition(".")[0]
    if name in READS:

        async def look_up(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
            if call.reads is None:
                return await run(deps, call)
            return await call.reads.get(read_key(name, call.params), lambda: run(deps, call))

        return Action(action.schema, look_up)
    if service in SERVICES:

        async def write(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
            try:
                return await run(deps, call)
            finally:  # even a failed write may have changed something
                if call.reads is not None:
                    call.reads.forget(service)

        return Action(action.schema, write)
    return action


class Budget:
    """Whether another request fits in what is left of a step's time (`StepCall.deadline`).

    A look-up that needs many requests (Lytho allows 20 a minute) makes as many as fit,
    keeps how far it got in the step's memo and raises `stop()`: the step goes back to the
    queue without spending a try and resumes there (bridge/jobs/handlers.py).
    """

    # Kept free at the end of a step for the memo and the margin of error.
    SPARE = 0.5

    def __init__(self, deadline: float | None, *, resumable: bool) -> None:
        self.deadline = deadline if resumable else None
        self.longest = 0.0
        self.requests = 0
        self._since: float | None = None

    def start(self) -> None:
        self._since = time.monotonic()

    def done(self) -> None:
        """A request ended (its wait for the rate limiter included)."""
        if self._since is not None:
            self.longest = max(self.longest, time.monotonic() - self._since)
        self.requests += 1
        self._since = None

    def room(self) -> bool:
        """Whether the next request is likely to end before the step's time is up."""
        if self.deadline is None or self.requests == 0:
            return True
        return self.deadline - time.monotonic() > 1.5 * self.longest + self.SPARE

    def stop(self, action: str, progress: str) -> RateLimited:
        made = f"{self.requests} request{'' if self.requests == 1 else 's'}"
        return RateLimited(
            f"{action}: {progress}; {made} filled this step's time (Lytho allows few a "
            "minute), so it goes on from there in a moment, without spending a try",
            retry_after=0.5,
            status=None,
        )
