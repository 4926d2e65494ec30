"""What a poller is: the Poller protocol, the budget of its runs and what a run did."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bridge.clients.base import RetryPolicy

if TYPE_CHECKING:
    import httpx
    from redis.asyncio import Redis

    from bridge.queue.store import Store
    from bridge.settings import Settings

# Poller names: the `<POLLER>` of BRIDGE_POLL_INTERVAL_<POLLER>, the limiter's API name
# and the `source` of the events each poller emits.
POLLER_NAMES: tuple[str, ...] = ("lytho", "lytho_workflow", "lytics")
# One try per request: a retry would send a request that no slot was booked for (the
# schedule books each poll request's slot, bridge/jobs/schedule.py).
POLL_RETRY = RetryPolicy(attempts=1, rate_limit_wait=0.0)


@dataclass(frozen=True)
class PollerDeps:
    """What a poller uses: the settings (its credentials), the shared HTTP client, the event
    store its events go to, and Redis (its snapshot)."""

    settings: Settings
    http: httpx.AsyncClient
    store: Store
    redis: Redis


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
