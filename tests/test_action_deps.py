"""Each layer is handed only what it uses: actions an ActionDeps, the webhook endpoint an
Ingress (settings, store, metrics), /readyz a Readiness. No process-wide Context needed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.actions import ActionDeps, StepCall, registry
from bridge.clients.base import RetryPolicy
from bridge.clients.outbound import guarded_client
from bridge.clients.ratelimit import RateLimiter
from bridge.errors import PermanentError
from bridge.ingress.webhooks import Ingress, receive
from bridge.operate.metrics import Metrics
from bridge.queue.keys import Keys
from bridge.queue.store import Store
from bridge.rules.live import LiveRules
from bridge.sandbox.server import ThreadedServer
from bridge.sandbox.slack import DEFAULT_TOKEN, SlackSandbox, create_slack_app
from bridge.settings import Settings
from bridge.templates.environment import Templates
from bridge.web.health import Readiness, readyz
from tests.helpers import SECRET, signed_headers


@pytest.fixture
async def limiter(redis_url: str, key_prefix: str) -> AsyncIterator[RateLimiter]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield RateLimiter(client, key_prefix=f"{key_prefix}ratelimit:")
    await client.aclose()


@pytest.fixture
def sink() -> Iterator[tuple[str, list[Any]]]:
    received: list[Any] = []

    async def collect(request: Request) -> Response:
        received.append(await request.json())
        return JSONResponse({"stored": len(received)})

    server = ThreadedServer(Starlette(routes=[Route("/sink", collect, methods=["POST"])]))
    server.start()
    yield server.url, received
    server.stop()


def call(params: dict[str, Any], output: Any = None, **context: Any) -> StepCall:
    return StepCall(params, context, "e-1", "r-1", "notify", output)


async def test_an_action_runs_with_only_its_deps(
    limiter: RateLimiter, sink: tuple[str, list[Any]]
) -> None:
    url, received = sink
    async with guarded_client(["127.0.0.1"]) as outbound:
        deps = ActionDeps(limiter, outbound, RetryPolicy(attempts=1), httpx.Timeout(5.0))
        result = await registry()["http.post"].run(
            deps, call({"url": f"{url}/sink", "json": {"order": 7}})
        )
        assert result == {"status": 200, "body": {"stored": 1}}
        assert received == [{"order": 7}]

        # An action whose client is not configured says which setting it needs.
        with pytest.raises(PermanentError, match=r"^slack\.post needs SLACK_BOT_TOKEN to be set$"):
            await registry()["slack.post"].run(deps, call({"channel": "#creative", "text": "hi"}))
    assert received == [{"order": 7}]


async def test_slack_post_sends_the_template_file_step_render_made(
    limiter: RateLimiter, tmp_path: Path
) -> None:
    """The worker renders a step once (Step.render, its template file included); the
    action sends that output, text or Block Kit, and renders nothing itself."""
    from slack_sdk.web.async_client import AsyncWebClient

    from bridge.rules.model import Step

    (tmp_path / "approved.j2").write_text("Proof {{ data.name }} approved\n")
    (tmp_path / "approved.json.j2").write_text(
        '[{"type": "section", "text": {"type": "mrkdwn", "text": "*{{ data.name }}*"}}]'
    )
    templates = Templates(tmp_path)
    context = {"data": {"name": "Spring"}}
    sandbox = SlackSandbox()
    server = ThreadedServer(create_slack_app(sandbox))
    server.start()
    try:
        slack = AsyncWebClient(token=DEFAULT_TOKEN, base_url=f"{server.url}/api/", timeout=10)
        async with guarded_client([]) as outbound:
            deps = ActionDeps(
                limiter, outbound, RetryPolicy(attempts=1), httpx.Timeout(5.0), slack=slack
            )
            for name in ("approved.j2", "approved.json.j2"):
                step = Step(0, "slack.post", {"channel": "#creative", "template": name})
                rendered = step.render(templates, context)
                await registry()["slack.post"].run(
                    deps, call(rendered.params, rendered.output, **context)
                )
    finally:
        server.stop()
    text, blocks = sandbox.received("#creative")
    assert text["text"] == "Proof Spring approved"
    assert blocks["blocks"][0]["text"]["text"] == "*Spring*"


async def test_the_webhook_endpoint_needs_only_settings_store_and_metrics(
    redis_url: str, key_prefix: str
) -> None:
    settings = Settings.from_env(
        {"REDIS_URL": redis_url, "BRIDGE_KEY_PREFIX": key_prefix, "BRIDGE_WEBHOOK_SECRET": SECRET}
    )
    client = redis.asyncio.Redis.from_url(redis_url)
    keys = Keys(key_prefix)
    store = Store(client, keys, settings.queue_name, dedup_ttl=60, event_ttl=60)
    metrics = Metrics(client, keys, interval=3600)
    app = Starlette(routes=[Route("/hooks/{source}", receive, methods=["POST"])])
    app.state.ingress = Ingress(settings, store, metrics)
    body = json.dumps({"id": "o-1", "type": "shop.order.paid", "data": {"n": 1}}).encode()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as http:
            answer = await http.post("/hooks/shop", content=body, headers=signed_headers(body))
            refused = await http.post(
                "/hooks/shop", content=body, headers=signed_headers(body, secret="whsec_d3Jvbmc=")
            )
        assert (answer.status_code, answer.json()) == (202, {"accepted": ["o-1"], "duplicates": []})
        stored = await client.get(keys.event("o-1"))
        assert stored is not None and json.loads(stored)["type"] == "shop.order.paid"
        assert refused.status_code == 401
        assert refused.json()["error"] == "bad_signature"
        assert await client.zcard(settings.queue_name) == 1  # the refused one was not queued
    finally:
        await client.delete(settings.queue_name)
        await client.aclose()


async def test_readyz_reads_only_redis_the_heartbeat_and_the_rules(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "rules").mkdir()
    rules = LiveRules(tmp_path / "rules", tmp_path / "templates", actions={})
    rules.load()
    client = redis.asyncio.Redis.from_url(redis_url)
    app = Starlette(routes=[Route("/readyz", readyz)])
    app.state.readiness = Readiness(client, f"{key_prefix}queue:health-check", rules)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as http:
            waiting = await http.get("/readyz")
            await client.set(f"{key_prefix}queue:health-check", b"beat", ex=60)
            ready = await http.get("/readyz")
    finally:
        await client.aclose()
    assert waiting.status_code == 503
    assert waiting.json()["checks"] == {"redis": "ok", "worker": "no heartbeat", "rules": "ok"}
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
