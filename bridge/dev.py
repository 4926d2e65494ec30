"""`bridge dev`: web + worker in one process, an embedded Redis and sandboxes where needed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import uvicorn

from bridge.cli import DEV_WEBHOOK_SECRET, dev_settings, run_async
from bridge.context import build_context
from bridge.logs import configure_logging
from bridge.redis_server import EmbeddedRedis, redis_answers
from bridge.sandbox.lytho import create_lytho_app
from bridge.sandbox.lytho_workflow import create_lytho_workflow_app
from bridge.sandbox.lytics import create_lytics_app
from bridge.sandbox.server import ThreadedServer
from bridge.sandbox.slack import DEFAULT_TOKEN, SlackSandbox, create_slack_app
from bridge.settings import Secret, Settings
from bridge.web.app import create_app
from bridge.worker import run_worker

logger = logging.getLogger("bridge.dev")

# The sandboxes' demo credentials (they guard nothing but a local sandbox).
DEV_LYTHO_KEY = "sandbox-lytho-key"
DEV_LYTICS_TOKEN = "sandbox-lytics-token"  # noqa: S105
DEV_CLIENT_ID, DEV_CLIENT_SECRET = "sandbox-client", "sandbox-secret"


def _print_slack(message: dict[str, Any]) -> None:
    thread = f" (thread {message['thread_ts']})" if message.get("thread_ts") else ""
    blocks = f" [+{len(message['blocks'])} blocks]" if message.get("blocks") else ""
    print(
        f"[slack sandbox] {message['channel_name']}{thread}: {message['text']}{blocks}", flush=True
    )


@contextlib.contextmanager
def dev_services(settings: Settings) -> Iterator[Settings]:
    """Start what is missing (Redis, sandboxes) and yield the settings that point at them."""
    with contextlib.ExitStack() as stack:
        if not settings.redis_url_set and not redis_answers("127.0.0.1", 6379):
            embedded = stack.enter_context(EmbeddedRedis())
            settings = replace(settings, redis_url=embedded.url)
            print(f"[dev] no Redis on localhost: started an embedded one at {embedded.url}")
        else:
            print(f"[dev] Redis: {settings.redis_url.split('@')[-1]}")
        if settings.slack_bot_token is None:
            sandbox = SlackSandbox(on_message=_print_slack)
            server = ThreadedServer(create_slack_app(sandbox))
            server.start()
            stack.callback(server.stop)
            settings = replace(
                settings, slack_api_url=f"{server.url}/api/", slack_bot_token=Secret(DEFAULT_TOKEN)
            )
            print(f"[dev] no SLACK_BOT_TOKEN: Slack sandbox at {server.url}; messages print here")
        if settings.lytho_api_key is None:
            url = _sandbox(stack, create_lytho_app(DEV_LYTHO_KEY))
            settings = replace(
                settings, lytho_api_url=f"{url}/v1/", lytho_api_key=Secret(DEV_LYTHO_KEY)
            )
            print(f"[dev] no LYTHO_API_KEY: Lytho DAM sandbox at {url}/v1/")
        if settings.lytho_workflow_client_missing:
            url = _sandbox(stack, create_lytho_workflow_app(DEV_CLIENT_ID, DEV_CLIENT_SECRET))
            settings = replace(
                settings,
                lytho_workflow_api_url=f"{url}/v1/",
                lytho_token_url=f"{url}/oauth/token",
                lytho_client_id=DEV_CLIENT_ID,
                lytho_client_secret=Secret(DEV_CLIENT_SECRET),
            )
            print(f"[dev] no LYTHO_CLIENT_ID: Lytho Workflow sandbox at {url}/v1/")
        if settings.lytics_api_token is None:
            url = _sandbox(stack, create_lytics_app(DEV_LYTICS_TOKEN))
            settings = replace(
                settings, lytics_api_url=url, lytics_api_token=Secret(DEV_LYTICS_TOKEN)
            )
            print(f"[dev] no LYTICS_API_TOKEN: Lytics sandbox at {url}")
        yield settings


def _sandbox(stack: contextlib.ExitStack, app: Any) -> str:
    """Start a sandbox app on a free loopback port until the stack closes; its base URL."""
    server = ThreadedServer(app)
    server.start()
    stack.callback(server.stop)
    return server.url


async def _serve(settings: Settings) -> None:
    context = await build_context(settings)
    config = uvicorn.Config(
        create_app(settings, context=context),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        http="httptools",
    )
    server = DevServer(config, settings)

    def request_exit(signum: int, frame: object) -> None:
        server.should_exit = True

    # Our handlers stay in place around uvicorn's own, so Ctrl-C or SIGTERM always ends in
    # a clean shutdown of both the web server and the worker (exit code 0).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_exit)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(context, stop, completion_wait=5))
    try:
        await server.serve()
    finally:
        stop.set()
        await worker
        await context.close()
        print("[dev] stopped", flush=True)


class DevServer(uvicorn.Server):
    """uvicorn, telling the person at the terminal once it really listens."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        settings = self.settings
        print(f"[dev] listening on http://{settings.host}:{settings.port}  (Ctrl-C stops)")
        secret = settings.webhook_secret
        if secret is not None and secret.get() == DEV_WEBHOOK_SECRET:
            print("[dev] try: bridge send examples/events/proof-approved.json")
        token = settings.admin_token
        if token is not None and token.get().startswith("dev-"):
            print(
                f"[dev] dashboard: http://{settings.host}:{settings.port}/login  "
                f"token for this run: {token.get()}"
            )
        sys.stdout.flush()


def run_dev(port: int | None = None) -> int:
    settings = dev_settings(Settings.from_env())
    if port is not None:
        settings = replace(settings, port=port)
    configure_logging(settings)
    with dev_services(settings) as settings:
        secret = settings.webhook_secret
        if secret is not None and secret.get() == DEV_WEBHOOK_SECRET:
            print("[dev] webhooks are signed with the development secret (bridge send uses it)")
        rules = settings.rules_dir.resolve()
        print(f"[dev] rules from {rules}; templates from {settings.templates_dir.resolve()}")
        run_async(_serve(settings))
    return 0
