"""Pollers: Lytho and Lytics changes found by comparing with a snapshot (ingress → events).

Each poller reads one API a little at a time, compares what it reads with the compact
snapshot it keeps in Redis, and turns the differences into events. `schedule.py` runs
the configured pollers from one arq cron job; `backfill.py` emits everything once on
purpose (`bridge backfill SOURCE`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bridge.operate.context import Context

# Poller names: the `<POLLER>` of BRIDGE_POLL_INTERVAL_<POLLER>, the limiter's API name
# and the `source` of the events each poller emits.
POLLER_NAMES: tuple[str, ...] = ("lytho", "lytho_workflow", "lytics")


@dataclass(frozen=True)
class PollResult:
    """What one run of a poller did; `done` when it finished a whole cycle of its source."""

    done: bool
    events: int = 0


class Budget(Protocol):
    """The requests one poll run may make: each only when the API has a slot free now."""

    async def slot(self) -> bool:
        """Book one request to the API now, or False: stop and resume next run."""
        ...

    def time_left(self) -> float:
        """Seconds left in this run's time box."""
        ...


class Poller(Protocol):
    """Finds the changes of one API since the last run and stores them as events."""

    @property
    def name(self) -> str:
        """The poller's name: its API, its events' source, `BRIDGE_POLL_INTERVAL_<NAME>`."""
        ...

    @property
    def event_types(self) -> Sequence[str]:
        """Every event type it can emit."""
        ...

    async def poll(self, budget: Budget) -> PollResult:
        """Read what the budget allows, emit the changes, advance the snapshot."""
        ...

    async def backfill(self, budget: Budget, progress: Progress) -> int:
        """Emit every object once as a `…created` event; return how many were new."""
        ...


class Progress(Protocol):
    """Where a backfill reports how far it is."""

    def advance(self, done: int, total: int | None) -> None: ...


def configured_pollers(context: Context) -> list[Poller]:
    """The pollers whose API credentials are set (one instance per context)."""
    # Imported here: importing the package (for the `bridge backfill` command) stays cheap.
    from bridge.ingress.pollers.lytho import LythoAssetPoller
    from bridge.ingress.pollers.lytho_workflow import WorkflowPoller
    from bridge.ingress.pollers.lytics import LyticsPoller

    cached: list[Poller] | None = context.extras.get("pollers")
    if cached is None:
        cached = []
        if context.lytho is not None:
            cached.append(LythoAssetPoller(context))
        if context.lytho_workflow is not None:
            cached.append(WorkflowPoller(context))
        if context.lytics is not None:
            cached.append(LyticsPoller(context))
        context.extras["pollers"] = cached
    return cached


def poller_event_types() -> dict[str, tuple[str, ...]]:
    """Every event type each poller can emit, by poller name (docs/events.md lists them)."""
    from bridge.ingress.pollers import lytho, lytho_workflow, lytics

    return {
        "lytho": tuple(lytho.EVENT_TYPES),
        "lytho_workflow": tuple(lytho_workflow.EVENT_TYPES),
        "lytics": tuple(lytics.EVENT_TYPES),
    }


__all__ = [
    "POLLER_NAMES",
    "Budget",
    "PollResult",
    "Poller",
    "Progress",
    "configured_pollers",
    "poller_event_types",
]
