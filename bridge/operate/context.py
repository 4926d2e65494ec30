"""The composition root: build_context() makes a process's resources once, and each layer
is handed only the part it uses (ingress: settings, store, metrics; actions: ActionDeps;
/readyz: Redis, the heartbeat key and the rules)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
from slack_sdk.web.async_client import AsyncWebClient

from bridge.actions import ActionDeps, action_schemas
from bridge.actions.action import StepMemo
from bridge.actions.slack_keys import SlackKeys
from bridge.clients.base import RetryPolicy
from bridge.clients.lytho import LythoClient
from bridge.clients.lytho_profile import load_profile
from bridge.clients.lytho_workflow import LythoWorkflowClient
from bridge.clients.lytics import LyticsClient
from bridge.clients.netstream import http_transport
from bridge.clients.outbound import guarded_client
from bridge.clients.ratelimit import DEFAULT_LIMITS, Limit, RateLimiter
from bridge.ingress.webhooks import Ingress
from bridge.jobs.deadletters import DeadLetters, SecretMask
from bridge.jobs.limits import RunLimits
from bridge.jobs.traces import Tracer
from bridge.operate.catalogue import event_catalogue
from bridge.operate.metrics import Metrics
from bridge.queue import ArqRedis
from bridge.queue.connection import connect
from bridge.queue.store import Keys, Store
from bridge.rules.live import LiveRules
from bridge.settings import Settings

if TYPE_CHECKING:
    from bridge.ingress.pollers import Poller

logger = logging.getLogger(__name__)

HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def create_redis(settings: Settings) -> ArqRedis:
    """The Redis client of a process (bridge.queue.connection.connect)."""
    return connect(settings.redis_url, settings.queue_name)


def rate_limiter(redis: ArqRedis, keys: Keys, settings: Settings) -> RateLimiter:
    """The rate limits of every API, shared by all processes through Redis."""
    limits = dict(DEFAULT_LIMITS)
    # Lytho's limits are profile entries (a tenant may have others); BRIDGE_RATE_LIMIT_*
    # still wins over them.
    profile = load_profile(settings.lytho_profile)
    for api, entry in (("lytho", "dam"), ("lytho_workflow", "workflow")):
        limits[api] = tuple(Limit(c, p, burst=b) for c, p, b in profile.rate_limits(entry))
    for api, configured in settings.rate_limits.items():
        limits[api] = tuple(Limit(c, p, burst=b) for c, p, b in configured)
    # Waiting longer than a fraction of a step raises RateLimited instead, so the job is
    # deferred (no try spent) rather than hold a worker slot.
    return RateLimiter(
        redis,
        limits,
        key_prefix=keys.ratelimit_prefix,
        max_wait=settings.step_timeout_seconds / 3,
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    """In-call retries that fit inside one step's timeout."""
    budget = settings.step_timeout_seconds
    return RetryPolicy(total=budget * 0.8, rate_limit_wait=budget / 4)


def api_timeout(settings: Settings) -> httpx.Timeout:
    """One API request may use at most half a step, so a retry still fits."""
    budget = settings.step_timeout_seconds
    return httpx.Timeout(budget / 2, connect=min(5.0, budget / 4))


@dataclass
class Context:
    """The resources of one process, built once by build_context() and closed by close().

    Layers do not take the whole of it: the web hands `ingress` to the webhook endpoint
    and what /readyz checks to bridge.web.health; the worker's jobs hand `actions` to the
    actions.
    """

    settings: Settings
    redis: ArqRedis
    keys: Keys
    store: Store
    tracer: Tracer
    rules: LiveRules
    http: httpx.AsyncClient
    limiter: RateLimiter
    metrics: Metrics
    mask: SecretMask
    run_limits: RunLimits
    dead_letters: DeadLetters
    # API clients, None when their credentials are not set.
    lytho: LythoClient | None = None
    lytho_workflow: LythoWorkflowClient | None = None
    lytics: LyticsClient | None = None
    # Made on first use by the poll schedule (bridge.ingress.pollers, bridge.jobs.schedule).
    pollers: list[Poller] | None = None
    poll_budget: RateLimiter | None = None
    _aiohttp: aiohttp.ClientSession | None = field(default=None, repr=False)

    @cached_property
    def ingress(self) -> Ingress:
        """What the webhook endpoint uses."""
        return Ingress(self.settings, self.store, self.metrics)

    @cached_property
    def actions(self) -> ActionDeps:
        """What actions use; made on the first step (the web never needs it)."""
        return ActionDeps(
            limiter=self.limiter,
            outbound=guarded_client(self.settings.http_allow),
            retry=retry_policy(self.settings),
            timeout=api_timeout(self.settings),
            slack=self._slack(),
            lytho=self.lytho,
            lytho_workflow=self.lytho_workflow,
            lytics=self.lytics,
            memo=StepMemo(self.redis, f"{self.keys.prefix}memo:", self.settings.trace_ttl_seconds),
            slack_keys=SlackKeys(self.redis, self.keys),
        )

    def _slack(self) -> AsyncWebClient | None:
        """The Slack Web API client (one aiohttp session), or None without a token."""
        token = self.settings.slack_bot_token
        if token is None:
            return None
        self._aiohttp = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return AsyncWebClient(
            token=token.get(),
            base_url=self.settings.slack_api_url,
            session=self._aiohttp,
            timeout=10,
        )

    async def close(self) -> None:
        await self.http.aclose()
        if "actions" in self.__dict__:
            await self.actions.outbound.aclose()
        if self._aiohttp is not None:
            await self._aiohttp.close()
        await self.redis.aclose(close_connection_pool=True)


async def build_context(
    settings: Settings,
    *,
    redis: ArqRedis | None = None,
    limiter: RateLimiter | None = None,
    load_rules: bool = True,
) -> Context:
    """Build the resources of a web, worker or CLI process (`redis` and `limiter`: given
    ones instead of those the settings describe)."""
    redis = redis or create_redis(settings)
    keys = Keys(settings.key_prefix)
    store = Store(
        redis,
        keys,
        settings.queue_name,
        dedup_ttl=settings.dedup_ttl_seconds,
        event_ttl=settings.trace_ttl_seconds,
    )
    tracer = Tracer(redis, keys, settings.trace_ttl_seconds, settings.secrets())
    rules = LiveRules(
        settings.rules_dir,
        settings.templates_dir,
        actions=action_schemas(),
        event_types=event_catalogue(),
    )
    if load_rules:
        rules.load()
    http = httpx.AsyncClient(
        transport=http_transport(), timeout=HTTP_TIMEOUT, follow_redirects=False
    )
    limiter = limiter or rate_limiter(redis, keys, settings)
    mask = SecretMask(settings.secrets())
    options: dict[str, Any] = {"retry": retry_policy(settings), "timeout": api_timeout(settings)}
    s = settings
    return Context(
        settings=settings,
        redis=redis,
        keys=keys,
        store=store,
        tracer=tracer,
        rules=rules,
        http=http,
        limiter=limiter,
        metrics=Metrics(redis, keys, limiter=limiter, own_secrets=settings.webhook_secrets),
        mask=mask,
        run_limits=RunLimits(redis, settings.key_prefix),
        dead_letters=DeadLetters(
            redis,
            keys,
            mask,
            queue_name=settings.queue_name,
            trace_ttl=settings.trace_ttl_seconds,
        ),
        lytho=None
        if s.lytho_api_key is None
        else LythoClient(
            http,
            s.lytho_api_url,
            s.lytho_api_key,
            limiter,
            profile=load_profile(s.lytho_profile),
            **options,
        ),
        lytho_workflow=None
        if not (s.lytho_client_id and s.lytho_client_secret and s.lytho_token_url)
        else LythoWorkflowClient(
            http,
            s.lytho_workflow_api_url,
            s.lytho_token_url,
            s.lytho_client_id,
            s.lytho_client_secret,
            limiter,
            profile=load_profile(s.lytho_profile),
            **options,
        ),
        lytics=None
        if s.lytics_api_token is None
        else LyticsClient(http, s.lytics_api_url, s.lytics_api_token, limiter, **options),
    )
