"""create_app(): the Starlette application of the web process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route

from bridge import metrics
from bridge.context import Context, build_context
from bridge.ingress.webhooks import receive
from bridge.settings import Settings
from bridge.web import admin, dashboard, prometheus
from bridge.web.health import healthz, readyz


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

    routes: list[BaseRoute] = [
        Route("/hooks/{source}", metrics.timed_webhook(receive), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", prometheus.metrics_endpoint, methods=["GET"]),
        *admin.routes(),
        *dashboard.routes(),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
