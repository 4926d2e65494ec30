"""Pollers: Lytho and Lytics changes found by comparing with a snapshot (ingress → events).

Each poller reads one API a little at a time, compares what it reads with the compact
snapshot it keeps in Redis, and turns the differences into events. `schedule.py` runs
the configured pollers from one arq cron job; `backfill.py` emits everything once on
purpose (`bridge backfill SOURCE`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.ingress.pollers.poller import (
    POLL_RETRY,
    POLLER_NAMES,
    Budget,
    Poller,
    PollerDeps,
    PollResult,
    Progress,
)

if TYPE_CHECKING:
    from bridge.operate.context import Context


def configured_pollers(context: Context) -> list[Poller]:
    """The pollers whose API credentials are set (one instance per context)."""
    # Imported here: importing the package (for the `bridge backfill` command) stays cheap.
    from bridge.ingress.pollers.lytho import LythoAssetPoller
    from bridge.ingress.pollers.lytho_workflow import WorkflowPoller
    from bridge.ingress.pollers.lytics import LyticsPoller

    cached = context.pollers
    if cached is None:
        deps = PollerDeps(context.settings, context.http, context.store, context.redis)
        cached = []
        if context.lytho is not None:
            cached.append(LythoAssetPoller(deps))
        if context.lytho_workflow is not None:
            cached.append(WorkflowPoller(deps))
        if context.lytics is not None:
            cached.append(LyticsPoller(deps))
        context.pollers = cached
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
    "POLL_RETRY",
    "Budget",
    "PollResult",
    "Poller",
    "PollerDeps",
    "Progress",
    "configured_pollers",
    "poller_event_types",
]
