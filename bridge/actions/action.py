"""An action, what it is handed (ActionDeps) and the step it performs (StepCall)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bridge.schema import ActionSchema

if TYPE_CHECKING:
    import httpx
    from redis.asyncio import Redis
    from slack_sdk.web.async_client import AsyncWebClient

    from bridge.actions.reads import RunReads
    from bridge.actions.slack_keys import SlackKeys
    from bridge.clients.base import RetryPolicy
    from bridge.clients.lytho import LythoClient
    from bridge.clients.lytho_workflow import LythoWorkflowClient
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
    # The run's name: "" for the first run of (event, rule), `replay-…` for a replay.
    run: str = ""
    # The run's look-ups so far (bridge/actions/reads.py), and when the step's time is up
    # (time.monotonic()); None where there is no run (tests, dry runs).
    reads: RunReads | None = None
    deadline: float | None = None


class StepMemo:
    """What an action keeps across the tries of one step (event, rule, step), so that a
    retry after a crash or a timeout resumes where the last try stopped instead of doing
    again what the outside world already did (lytho.upload_asset). Kept `ttl` seconds."""

    def __init__(self, redis: Redis, prefix: str, ttl: int) -> None:
        self.redis, self.prefix, self.ttl = redis, prefix, ttl

    def key(self, call: StepCall) -> str:
        # A replay is a new run (`call.run`): it does the work again, as slack.post does.
        return f"{self.prefix}{call.event_id}:{call.rule_id}:{call.run}:{call.step_key}"

    async def get(self, call: StepCall) -> dict[str, Any]:
        raw = await self.redis.get(self.key(call))
        found = json.loads(raw) if raw else {}
        return found if isinstance(found, dict) else {}

    async def put(self, call: StepCall, value: Mapping[str, Any]) -> None:
        await self.redis.set(self.key(call), json.dumps(dict(value)), ex=self.ttl)


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
    lytho_workflow: LythoWorkflowClient | None = None
    lytics: LyticsClient | None = None
    # Threads and living messages of slack.post (thread_key, message_key), kept in Redis.
    slack_keys: SlackKeys | None = None
    # Progress of a step across its tries; None where nothing is kept (tests, dry runs).
    memo: StepMemo | None = None
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
