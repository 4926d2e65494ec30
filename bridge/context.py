"""Context: the shared resources of a process (settings, Redis, clients, rules, templates)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from slack_sdk.web.async_client import AsyncWebClient

from bridge.clients.outbound import guarded_client
from bridge.live_rules import LiveRules
from bridge.settings import Settings
from bridge.store import Keys, Store, dumps
from bridge.traces import Tracer

logger = logging.getLogger(__name__)

HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def job_serializer(value: Any) -> bytes:
    return dumps(value)


def job_deserializer(raw: bytes) -> Any:
    return json.loads(raw)


def create_redis(settings: Settings) -> ArqRedis:
    """The Redis client of a process: arq-compatible, JSON jobs, lazy connections.

    Heroku's `rediss://` URLs use self-signed certificates, so TLS is not verified there
    (NOTES.md); the connection is still encrypted.
    """
    options: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}
    if settings.redis_url.startswith("rediss://"):
        options["ssl_cert_reqs"] = "none"
    pool = ConnectionPool.from_url(settings.redis_url, **options)
    return ArqRedis(
        pool,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
        default_queue_name=settings.queue_name,
    )


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
    rules = LiveRules(settings.rules_dir, settings.templates_dir)
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
