"""create_app(): the web process's ASGI app, the webhook fast path in front of Starlette."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from bridge.ingress import slack
from bridge.ingress.webhooks import Ingress, error, receive
from bridge.operate import metrics
from bridge.operate.context import Context, build_context
from bridge.queue.keys import Keys
from bridge.settings import Settings
from bridge.web import admin, dashboard, prometheus
from bridge.web.health import Readiness, healthz, readyz

logger = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(settings: Settings | None = None, *, context: Context | None = None) -> WebApp:
    """The web app; it builds its own Context unless given one (then the caller closes it)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        bridge = context or await build_context(settings or Settings.from_env())
        hand_out(app.state, bridge)
        bridge.metrics.start()
        # The web process follows rule changes too, so /readyz and the dashboard are current.
        watcher = asyncio.create_task(bridge.rules.watch()) if context is None else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await bridge.metrics.stop()
            if context is None:
                await bridge.close()

    webhook = timed_webhook(hooks)
    routes: list[BaseRoute] = [
        # Served by the fast path (WebApp); kept in the router too, so a GET is a 405.
        Route("/hooks/{source}", webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", prometheus.metrics_endpoint, methods=["GET"]),
        *admin.routes(),
        *dashboard.routes(),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    if context is not None:
        hand_out(app.state, context)  # in-process calls without a lifespan work too
    return WebApp(app, webhook)


def hand_out(state: State, bridge: Context) -> None:
    """Give each part of the web what it uses: ingress and /readyz their own small objects;
    the admin API and dashboard, which reach jobs through operate/, the process's Context."""
    state.bridge = bridge
    state.ingress = Ingress(bridge.settings, bridge.store, bridge.metrics)
    heartbeat = Keys.health_check(bridge.settings.queue_name)
    state.readiness = Readiness(bridge.redis, heartbeat, bridge.rules)


async def hooks(request: Request) -> Response:
    """POST /hooks/{source}: Slack's requests to their own door, every other to webhooks'."""
    if request.path_params.get("source") == slack.SOURCE:
        return await slack.receive(request)
    return await receive(request)


def timed_webhook(endpoint: Endpoint) -> Endpoint:
    """Wrap the webhook endpoint: count each answer by status, time each acknowledgement."""

    async def timed(request: Request) -> Response:
        begun = time.perf_counter()
        status = 500
        try:
            response = await endpoint(request)
            status = response.status_code
            return response
        finally:
            ingress: Ingress = request.app.state.ingress
            metrics.webhook_answered(
                ingress.metrics,
                str(request.path_params.get("source", "")),
                status,
                time.perf_counter() - begun,
                bool(request.scope.get(metrics.VERIFIED)),
            )

    return timed


class WebApp:
    """The ASGI app: `POST /hooks/{source}` straight to the webhook endpoint, everything
    else (and every lifespan event) to the Starlette app.

    Webhooks are nearly all the traffic. Starlette's error and exception middleware and
    its router cost about as much per request as storing the event, and the endpoint
    answers every error itself, so webhooks skip them (docs/performance.md).
    """

    def __init__(self, app: Starlette, webhook: Endpoint) -> None:
        self.app = app
        self.webhook = webhook

    @property
    def state(self) -> State:
        """The Starlette app's state (what each endpoint is handed)."""
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        source = webhook_source(scope)
        if source is None:
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app
        scope["path_params"] = {"source": source}
        try:
            response = await self.webhook(Request(scope, receive))
        except Exception:
            logger.exception("webhook to %s failed", source)
            response = error(500, "internal_error", "the webhook could not be processed")
        await response(scope, receive, send)


def webhook_source(scope: Scope) -> str | None:
    """The `{source}` of a `POST /hooks/{source}` request (as the router would match it)."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if not path.startswith("/hooks/"):
        return None
    source = path[7:]
    return source if source and "/" not in source else None


def create_app_from_env() -> WebApp:
    """The app of one of several `bridge web` processes (WEB_CONCURRENCY > 1): uvicorn
    starts each process afresh, so it reads its settings and sets up its logs itself."""
    from bridge.logs import configure_logging
    from bridge.web.server import configure

    settings = Settings.from_env()
    configure_logging(settings)
    configure(settings)  # this process's read timeout (the supervisor's is not inherited)
    return create_app(settings)
