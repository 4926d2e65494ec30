"""An action, what it is handed (ActionDeps) and the step it performs (StepCall)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bridge.schema import ActionSchema

if TYPE_CHECKING:
    import httpx
    from slack_sdk.web.async_client import AsyncWebClient

    from bridge.clients.base import RetryPolicy
    from bridge.clients.lytho import LythoClient
    from bridge.clients.lytics import LyticsClient
    from bridge.clients.ratelimit import RateLimiter


@dataclass(frozen=True)
class StepCall:
    """One step to perform, as `Step.render` rendered it: its parameters, the template
    context they came from, and the output of its `template:` file (None without one)."""

    params: Mapping[str, Any]
    context: Mapping[str, Any]
    event_id: str
    rule_id: str
    step_key: str
    output: Any = None


@dataclass(frozen=True)
class ActionDeps:
    """What actions use: API clients (None when their credentials are not set), the rate
    limiter shared by every process, and the bounds of one call within a step."""

    limiter: RateLimiter
    # The guarded client for URLs that rules name (http.post): private addresses refused.
    outbound: httpx.AsyncClient
    retry: RetryPolicy
    timeout: httpx.Timeout
    slack: AsyncWebClient | None = None
    lytho: LythoClient | None = None
    lytics: LyticsClient | None = None
    # Lytho tag ids by case-folded name, with when each stops being trusted (monotonic).
    lytho_tag_ids: dict[str, tuple[Any, float]] = field(default_factory=dict)


ActionRun = Callable[[ActionDeps, StepCall], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Action:
    """An action: its declared parameters and the coroutine that performs it."""

    schema: ActionSchema
    run: ActionRun

    @property
    def name(self) -> str:
        return self.schema.name
