"""The servers a benchmark runs beside the bridge, each in its own process.

`noop` and `lpush` are the bare baselines of the ingest figures: Starlette on uvicorn,
served exactly like `bridge web` (same loop and HTTP implementation, no access log), once
answering 202 without doing anything, once with one Redis LPUSH of the body per request.
`slack` serves the bridge's Slack sandbox, stamping each message with the time it arrived;
`lytho`, `lytho-workflow` and `lytics` serve the upstream sandboxes that pollers read.

    python bench/baselines.py noop|lpush|slack|lytho|lytho-workflow|lytics PORT [REDIS_URL]
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def noop_app() -> Starlette:
    """Reads the body and answers 202, like the bridge's happy path without the work."""

    async def receive(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"accepted": [request.headers.get("webhook-id")]}, status_code=202)

    return Starlette(routes=[Route("/hooks/{source}", receive, methods=["POST"])])


def lpush_app(redis_url: str) -> Starlette:
    """The no-op app plus one LPUSH of the body to Redis per request."""
    from redis.asyncio import Redis

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.redis = Redis.from_url(redis_url)
        try:
            yield
        finally:
            await app.state.redis.aclose()

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        await request.app.state.redis.lpush("bench:baseline", body)
        return JSONResponse({"accepted": [request.headers.get("webhook-id")]}, status_code=202)

    return Starlette(
        routes=[Route("/hooks/{source}", receive, methods=["POST"])], lifespan=lifespan
    )


def slack_app() -> Starlette:
    """The bridge's Slack sandbox; each message record gets `received_at` (epoch seconds)."""
    from bridge.sandbox.slack import SlackSandbox, create_slack_app

    def stamp(record: dict[str, Any]) -> None:
        # The sandbox appends this same dict to its messages, so the stamp is served too.
        record["received_at"] = time.time()

    return create_slack_app(SlackSandbox(on_message=stamp))


UPSTREAMS = ("lytho", "lytho-workflow", "lytics")


def upstream_app(kind: str) -> Any:
    """A Lytho DAM, Lytho Workflow or Lytics sandbox with `bridge dev`'s credentials
    (imported only here, so that the baselines' memory stays theirs alone)."""
    from bridge.cli import dev
    from bridge.sandbox.lytho import create_lytho_app
    from bridge.sandbox.lytho_workflow import create_lytho_workflow_app
    from bridge.sandbox.lytics import create_lytics_app

    if kind == "lytho":
        return create_lytho_app(dev.DEV_LYTHO_KEY)
    if kind == "lytho-workflow":
        return create_lytho_workflow_app(dev.DEV_CLIENT_ID, dev.DEV_CLIENT_SECRET)
    return create_lytics_app(dev.DEV_LYTICS_TOKEN)


def main(argv: list[str]) -> None:
    kind, port = argv[0], int(argv[1])
    if kind == "noop":
        app = noop_app()
    elif kind == "lpush":
        app = lpush_app(argv[2])
    elif kind == "slack":
        app = slack_app()
    elif kind in UPSTREAMS:
        app = upstream_app(kind)
    else:
        raise SystemExit(
            f"unknown server {kind!r}; expected noop, lpush, slack or {', '.join(UPSTREAMS)}"
        )
    # The same server options as `bridge web` (bridge/cli/processes.py), so the ratios compare apps.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main(sys.argv[1:])
