"""create_app(): the Starlette application of the web process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Route

from bridge.context import Context, build_context
from bridge.ingress.webhooks import receive
from bridge.settings import Settings
from bridge.web.health import healthz, readyz


def create_app(settings: Settings | None = None, *, context: Context | None = None) -> Starlette:
    """The web app; it builds its own Context unless given one (then the caller closes it)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if context is not None:
            app.state.bridge = context
            yield
            return
        built = await build_context(settings or Settings.from_env())
        app.state.bridge = built
        try:
            yield
        finally:
            await built.close()

    routes = [
        Route("/hooks/{source}", receive, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
