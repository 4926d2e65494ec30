"""create_app(): the Starlette application of the web process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from bridge.ingress.webhooks import error, receive
from bridge.operate import metrics
from bridge.operate.context import Context, build_context
from bridge.settings import Settings
from bridge.web import admin, dashboard, prometheus
from bridge.web.health import healthz, readyz

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, context: Context | None = None) -> Starlette:
    """The web app; it builds its own Context unless given one (then the caller closes it)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        bridge = context or await build_context(settings or Settings.from_env())
        app.state.bridge = bridge
        metrics.of(bridge).start()
        # The web process follows rule changes too, so /readyz and the dashboard are current.
        watcher = asyncio.create_task(bridge.rules.watch()) if context is None else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await metrics.of(bridge).stop()
            if context is None:
                await bridge.close()

    webhook = metrics.timed_webhook(receive)
    routes: list[BaseRoute] = [
        Route("/hooks/{source}", webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", prometheus.metrics_endpoint, methods=["GET"]),
        *admin.routes(),
        *dashboard.routes(),
    ]
    return BridgeApp(webhook, routes=routes, lifespan=lifespan)


class BridgeApp(Starlette):
    """Starlette, with `POST /hooks/{source}` sent straight to its endpoint.

    Webhooks are nearly all the traffic. Starlette's error and exception middleware and
    its router cost about as much per request as storing the event, and the endpoint
    answers every error itself; the route stays in the router too (so a GET is a 405).
    """

    def __init__(self, webhook: Callable[[Request], Awaitable[Response]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._webhook = webhook

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        source = _webhook_source(scope)
        if source is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        scope["path_params"] = {"source": source}
        try:
            response = await self._webhook(Request(scope, receive))
        except Exception:
            logger.exception("webhook to %s failed", source)
            response = error(500, "internal_error", "the webhook could not be processed")
        await response(scope, receive, send)


def _webhook_source(scope: Scope) -> str | None:
    """The `{source}` of a `POST /hooks/{source}` request (as the router would match it)."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if not path.startswith("/hooks/"):
        return None
    source = path[7:]
    return source if source and "/" not in source else None


def create_app_from_env() -> Starlette:
    """The app of one of several `bridge web` processes (WEB_CONCURRENCY > 1): uvicorn
    starts each process afresh, so it reads its settings and sets up its logs itself."""
    from bridge.logs import configure_logging
    from bridge.web.server import configure

    settings = Settings.from_env()
    configure_logging(settings)
    configure(settings)  # this process's read timeout (the supervisor's is not inherited)
    return create_app(settings)
