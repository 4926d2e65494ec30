"""Context: the shared resources of a process (settings, Redis, clients, rules, templates)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
from slack_sdk.web.async_client import AsyncWebClient

from bridge.actions import action_schemas
from bridge.clients.base import RetryPolicy
from bridge.clients.lytho import LythoClient
from bridge.clients.lytho_workflow import LythoWorkflowClient
from bridge.clients.lytics import LyticsClient
from bridge.clients.outbound import guarded_client
from bridge.clients.ratelimit import DEFAULT_LIMITS, Limit, RateLimiter
from bridge.jobs.limits import RunLimits
from bridge.jobs.traces import Tracer
from bridge.operate.catalogue import event_catalogue
from bridge.queue import ArqRedis
from bridge.queue.connection import connect
from bridge.queue.store import Keys, Store
from bridge.rules.live import LiveRules
from bridge.settings import Settings

logger = logging.getLogger(__name__)

HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def create_redis(settings: Settings) -> ArqRedis:
    """The Redis client of a process (bridge.queue.connection.connect)."""
    return connect(settings.redis_url, settings.queue_name)


@dataclass
class Context:
    """What every request handler and job needs; built once per process by build_context()."""

    settings: Settings
    redis: ArqRedis
    keys: Keys
    store: Store
    tracer: Tracer
    rules: LiveRules
    http: httpx.AsyncClient
    _slack: AsyncWebClient | None = None
    _outbound: httpx.AsyncClient | None = None
    _limiter: RateLimiter | None = None
    _aiohttp: aiohttp.ClientSession | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def slack(self) -> AsyncWebClient | None:
        """The Slack Web API client (one shared aiohttp session), or None without a token."""
        token = self.settings.slack_bot_token
        if token is None:
            return None
        if self._slack is None:
            self._aiohttp = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
            self._slack = AsyncWebClient(
                token=token.get(),
                base_url=self.settings.slack_api_url,
                session=self._aiohttp,
                timeout=10,
            )
        return self._slack

    @property
    def run_limits(self) -> RunLimits:
        """Dedupe and throttle of rule runs, shared through Redis."""
        if "run_limits" not in self.extras:
            self.extras["run_limits"] = RunLimits(self.redis, self.settings.key_prefix)
        limits: RunLimits = self.extras["run_limits"]
        return limits

    @property
    def limiter(self) -> RateLimiter:
        """The rate limits of every API, shared by all processes through Redis."""
        if self._limiter is None:
            # Waiting longer than a fraction of a step raises RateLimited instead, so the
            # job is deferred (no try spent) rather than hold a worker slot.
            limits = dict(DEFAULT_LIMITS)
            for api, configured in self.settings.rate_limits.items():
                limits[api] = tuple(Limit(c, p, burst=b) for c, p, b in configured)
            self._limiter = RateLimiter(
                self.redis,
                limits,
                key_prefix=self.keys.ratelimit_prefix,
                max_wait=self.settings.step_timeout_seconds / 3,
            )
        return self._limiter

    def retry_policy(self) -> RetryPolicy:
        """In-call retries that fit inside one step's timeout."""
        budget = self.settings.step_timeout_seconds
        return RetryPolicy(total=budget * 0.8, rate_limit_wait=budget / 4)

    def client_options(self) -> dict[str, Any]:
        return {"retry": self.retry_policy(), "timeout": self.api_timeout()}

    def api_timeout(self) -> httpx.Timeout:
        """One API request may use at most half a step, so a retry still fits."""
        budget = self.settings.step_timeout_seconds
        return httpx.Timeout(budget / 2, connect=min(5.0, budget / 4))

    @property
    def lytho(self) -> LythoClient | None:
        """The Lytho DAM client, or None without LYTHO_API_KEY."""
        key = self.settings.lytho_api_key
        if key is None:
            return None
        if "lytho" not in self.extras:
            self.extras["lytho"] = LythoClient(
                self.http, self.settings.lytho_api_url, key, self.limiter, **self.client_options()
            )
        client: LythoClient = self.extras["lytho"]
        return client

    @property
    def lytho_workflow(self) -> LythoWorkflowClient | None:
        """The Lytho Workflow client, or None without its OAuth credentials."""
        s = self.settings
        if not (s.lytho_client_id and s.lytho_client_secret and s.lytho_token_url):
            return None
        if "lytho_workflow" not in self.extras:
            self.extras["lytho_workflow"] = LythoWorkflowClient(
                self.http,
                s.lytho_workflow_api_url,
                s.lytho_token_url,
                s.lytho_client_id,
                s.lytho_client_secret,
                self.limiter,
                **self.client_options(),
            )
        client: LythoWorkflowClient = self.extras["lytho_workflow"]
        return client

    @property
    def lytics(self) -> LyticsClient | None:
        """The Lytics client, or None without LYTICS_API_TOKEN."""
        token = self.settings.lytics_api_token
        if token is None:
            return None
        if "lytics" not in self.extras:
            self.extras["lytics"] = LyticsClient(
                self.http,
                self.settings.lytics_api_url,
                token,
                self.limiter,
                **self.client_options(),
            )
        client: LyticsClient = self.extras["lytics"]
        return client

    @property
    def outbound(self) -> httpx.AsyncClient:
        """The guarded HTTP client for URLs that rules name (http.post)."""
        if self._outbound is None:
            self._outbound = guarded_client(self.settings.http_allow)
        return self._outbound

    async def close(self) -> None:
        await self.http.aclose()
        if self._outbound is not None:
            await self._outbound.aclose()
        if self._aiohttp is not None:
            await self._aiohttp.close()
        await self.redis.aclose(close_connection_pool=True)


async def build_context(
    settings: Settings, *, redis: ArqRedis | None = None, load_rules: bool = True
) -> Context:
    """Build the context of a web or worker process (Starlette lifespan, arq on_startup)."""
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
    http = httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False)
    return Context(
        settings=settings,
        redis=redis,
        keys=keys,
        store=store,
        tracer=tracer,
        rules=rules,
        http=http,
    )
