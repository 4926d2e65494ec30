"""`bridge dev`: web + worker in one process, an embedded Redis and sandboxes where needed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import redis
import uvicorn

from bridge.cli.config import DEV_WEBHOOK_SECRET, dev_settings
from bridge.cli.dev_slack import DevSlackPage
from bridge.cli.dev_state import (
    REDIS_DIR,
    STATE_FILE,
    DevState,
    load_state,
    prepare_dir,
    remove_state,
    shown_url,
    single_instance,
    state_env,
    write_state,
)
from bridge.cli.loop import run_async
from bridge.cli.redis_server import EmbeddedRedis
from bridge.clients.lytho_profile import load_profile
from bridge.errors import ConfigError
from bridge.logs import configure_logging
from bridge.operate.context import build_context
from bridge.operate.worker import run_worker
from bridge.sandbox.lytho import create_lytho_app
from bridge.sandbox.lytho_dialect import LythoDialect
from bridge.sandbox.lytho_workflow import create_lytho_workflow_app
from bridge.sandbox.lytics import create_lytics_app
from bridge.sandbox.server import ThreadedServer, stop_all
from bridge.sandbox.slack import DEFAULT_TOKEN, SlackSandbox, create_slack_app
from bridge.sandbox.slack_press import buttons
from bridge.settings import Secret, Settings
from bridge.web.app import create_app
from bridge.web.server import uvicorn_options

logger = logging.getLogger("bridge.cli.dev")

# The sandboxes' demo credentials (they guard nothing but a local sandbox).
DEV_LYTHO_KEY = "sandbox-lytho-key"
DEV_LYTICS_TOKEN = "sandbox-lytics-token"  # noqa: S105
DEV_CLIENT_ID, DEV_CLIENT_SECRET = "sandbox-client", "sandbox-secret"


def sandbox_env(settings: Settings) -> dict[str, str]:
    """The URLs and demo credentials of the API sandboxes this `bridge dev` started, so that
    `bridge doctor` beside it checks them (real credentials are never written here)."""
    env: dict[str, str] = {}
    s = settings
    if s.lytho_api_key is not None and s.lytho_api_key.get() == DEV_LYTHO_KEY:
        env.update(LYTHO_API_URL=s.lytho_api_url, LYTHO_API_KEY=DEV_LYTHO_KEY)
    secret = s.lytho_client_secret
    if (
        s.lytho_client_id == DEV_CLIENT_ID
        and secret is not None
        and secret.get() == DEV_CLIENT_SECRET
    ):
        env.update(
            LYTHO_WORKFLOW_API_URL=s.lytho_workflow_api_url,
            LYTHO_TOKEN_URL=s.lytho_token_url or "",
            LYTHO_CLIENT_ID=DEV_CLIENT_ID,
            LYTHO_CLIENT_SECRET=DEV_CLIENT_SECRET,
        )
    if s.lytics_api_token is not None and s.lytics_api_token.get() == DEV_LYTICS_TOKEN:
        env.update(LYTICS_API_URL=s.lytics_api_url, LYTICS_API_TOKEN=DEV_LYTICS_TOKEN)
    return env


def dev_slack_sandbox() -> SlackSandbox:
    """The Slack sandbox of `bridge dev`: every channel exists; what it gets is printed."""
    sandbox = SlackSandbox(strict=False, archived=())

    def show(message: dict[str, Any]) -> None:
        lines = sandbox.describe(message)
        print("\n".join([f"[slack sandbox] {lines[0]}", *lines[1:]]), flush=True)
        ids = [str(b["action_id"]) for _, b in buttons(message) if b.get("action_id")]
        if ids:  # what POST /_sandbox/press takes to press the first (see the start-up hint)
            press = {"channel": message["channel"], "ts": message["ts"], "action_id": ids[0]}
            also = f" (or action_id {', '.join(ids[1:])})" if ids[1:] else ""
            print(f"  press: {json.dumps(press)}{also}", flush=True)

    def created(name: str, channel_id: str) -> None:
        print(
            f"[slack sandbox] #{name} created on its first post (in dev every channel exists; "
            "in Slack, invite the bot to it)",
            flush=True,
        )

    def pressed(entry: dict[str, Any]) -> None:
        answer = f"answered {entry['status']}" if entry["status"] else entry["error"]
        print(f"[slack sandbox] button {entry['action_id']!r} pressed: {answer}", flush=True)

    sandbox.on_message = show
    sandbox.on_channel = created
    sandbox.on_callback = pressed
    return sandbox


def _stop_orphaned_redis(url: str, data_dir: Path) -> None:
    """Shut down a redis-server left running on our data by a `bridge dev` that was killed."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1)
    try:
        config: dict[str, str] = client.config_get("dir")  # type: ignore[assignment]
        if config.get("dir") == str(data_dir.resolve()):
            client.shutdown()
    except redis.RedisError:
        pass  # nothing answers there any more, or it is not ours
    finally:
        client.close()


@contextlib.contextmanager
def dev_services(settings: Settings, data_dir: Path = REDIS_DIR) -> Iterator[Settings]:
    """Start what is missing (Redis, sandboxes) and yield the settings that point at them."""
    with contextlib.ExitStack() as stack:
        if settings.redis_url_set:
            print(f"[dev] Redis: {shown_url(settings.redis_url)} (REDIS_URL)")
        else:
            prepare_dir(data_dir.parent)
            embedded = stack.enter_context(EmbeddedRedis(data_dir=data_dir))
            settings = replace(settings, redis_url=embedded.url)
            print(
                f"[dev] Redis: its own redis-server on 127.0.0.1:{embedded.port}, data in "
                f"{data_dir}/ (kept between runs{_kept(embedded.url)}; "
                "bridge dev --reset starts clean)"
            )
        # The sandboxes stop side by side (a fifth of a second each, one after another).
        sandboxes: list[ThreadedServer] = []
        stack.callback(stop_all, sandboxes)
        if settings.slack_bot_token is None:
            sandbox = dev_slack_sandbox()
            server = ThreadedServer(create_slack_app(sandbox))
            sandboxes.append(server)  # stopped even when its start times out
            server.start()
            settings = replace(
                settings, slack_api_url=f"{server.url}/api/", slack_bot_token=Secret(DEFAULT_TOKEN)
            )
            print(
                f"[dev] no SLACK_BOT_TOKEN: Slack sandbox at {server.url}; every channel "
                "exists, and what it gets prints here"
            )
        # With BRIDGE_LYTHO_PROFILE set, the sandboxes speak that dialect, so a profile
        # written for a tenant can be tried locally first (docs/lytho-api.md).
        dialect = _dialect(settings)
        if settings.lytho_api_key is None:
            url = _sandbox(sandboxes, create_lytho_app(DEV_LYTHO_KEY, dialect=dialect))
            settings = replace(
                settings, lytho_api_url=f"{url}/v1/", lytho_api_key=Secret(DEV_LYTHO_KEY)
            )
            print(f"[dev] no LYTHO_API_KEY: Lytho DAM sandbox at {url}/v1/{_speaking(settings)}")
        if settings.lytho_workflow_client_missing:
            url = _sandbox(
                sandboxes,
                create_lytho_workflow_app(DEV_CLIENT_ID, DEV_CLIENT_SECRET, dialect=dialect),
            )
            settings = replace(
                settings,
                lytho_workflow_api_url=f"{url}/v1/",
                lytho_token_url=f"{url}/oauth/token",
                lytho_client_id=DEV_CLIENT_ID,
                lytho_client_secret=Secret(DEV_CLIENT_SECRET),
            )
            print(
                f"[dev] no LYTHO_CLIENT_ID: Lytho Workflow sandbox at {url}/v1/"
                f"{_speaking(settings)}"
            )
        if settings.lytics_api_token is None:
            url = _sandbox(sandboxes, create_lytics_app(DEV_LYTICS_TOKEN))
            settings = replace(
                settings, lytics_api_url=url, lytics_api_token=Secret(DEV_LYTICS_TOKEN)
            )
            print(f"[dev] no LYTICS_API_TOKEN: Lytics sandbox at {url}")
        yield settings


def _kept(url: str) -> str:
    """`, 42 keys from earlier runs`, or nothing for an empty database."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys: int = client.dbsize()  # type: ignore[assignment]
    except redis.RedisError:
        return ""
    finally:
        client.close()
    return f", {keys} key{'s' if keys > 1 else ''} from earlier runs" if keys else ""


def _speaking(settings: Settings) -> str:
    """What a Lytho sandbox's line adds when it speaks an override profile's dialect."""
    if settings.lytho_profile is None:
        return ""
    return f", speaking the dialect of {settings.lytho_profile} (BRIDGE_LYTHO_PROFILE)"


def _dialect(settings: Settings) -> LythoDialect | None:
    if settings.lytho_profile is None:
        return None
    try:
        return LythoDialect.from_file(settings.lytho_profile)
    except ValueError as exc:  # load_profile checked it already; the sandbox's own reading
        raise ConfigError(
            f"the Lytho sandboxes cannot speak {settings.lytho_profile}: {exc}"
        ) from None


def _sandbox(sandboxes: list[ThreadedServer], app: Any) -> str:
    """Start a sandbox app on a free loopback port, stopped with `sandboxes`; its base URL."""
    server = ThreadedServer(app)
    sandboxes.append(server)  # stopped even when its start times out
    server.start()
    return server.url


async def _serve(settings: Settings, redis_dir: Path | None) -> None:
    context = await build_context(settings)
    config = uvicorn.Config(
        DevSlackPage(create_app(settings, context=context)),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        # The same bounds on slow and hostile clients as `bridge web`.
        **uvicorn_options(settings),
    )
    server = DevServer(config, settings, redis_dir)

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

    def __init__(self, config: uvicorn.Config, settings: Settings, redis_dir: Path | None) -> None:
        super().__init__(config)
        self.settings = settings
        self.redis_dir = redis_dir
        example = Path("examples/events/proof-approved.json")
        self.example = example if example.is_file() else None

    def _port(self) -> int:
        """The port really bound (`--port 0` picks a free one)."""
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                port: int = sock.getsockname()[1]
                return port
        return self.settings.port

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        settings = self.settings
        port = self._port()
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "", "::") else settings.host  # noqa: S104
        url = f"http://{host}:{port}"
        write_state(
            DevState(
                pid=os.getpid(),
                url=url,
                env={**state_env(settings), **sandbox_env(settings)},
                redis_dir=str(self.redis_dir.resolve()) if self.redis_dir else None,
                started_at=time.time(),
            )
        )
        print(f"[dev] listening on {url}  (Ctrl-C stops)")
        print(
            "[dev] bridge send, trace, dlq, replay, fire, doctor and backfill in this folder "
            f"find this bridge through {STATE_FILE}"
        )
        secret = settings.webhook_secret
        if secret is not None and secret.get() == DEV_WEBHOOK_SECRET and self.example:
            print(f"[dev] try: bridge send {self.example}")
        print(
            f"[dev] Slack buttons: {url}/dev/slack (press them, or: bridge send --slack-action "
            "ACTION_ID); they arrive signed at POST /hooks/slack"
        )
        await self._aim_slack_sandbox(url)
        token = settings.admin_token
        if token is not None and token.get().startswith("dev-"):
            print(f"[dev] dashboard: {url}/login  token for this run: {token.get()}")
        sys.stdout.flush()

    async def _aim_slack_sandbox(self, url: str) -> None:
        """Point dev's own Slack sandbox's presses at this bridge's POST /hooks/slack."""
        settings = self.settings
        secret = settings.slack_signing_secret
        token = settings.slack_bot_token
        if token is None or token.get() != DEFAULT_TOKEN or secret is None:
            return  # a real Slack: its app's Request URL is set at api.slack.com
        sandbox = settings.slack_api_url.rstrip("/").removesuffix("/api")
        aim = {"url": f"{url}/hooks/slack", "signing_secret": secret.get()}
        try:
            async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
                answer = await client.post(f"{sandbox}/_sandbox/interactivity", json=aim)
        except httpx.HTTPError:
            return
        if answer.is_success:
            print(
                f"[dev] or press one in the sandbox: POST {sandbox}/_sandbox/press (docs/slack.md)"
            )


def run_dev(port: int | None = None, reset: bool = False) -> int:
    settings = dev_settings(Settings.from_env())
    load_profile(settings.lytho_profile)  # an override file's problems, before anything starts
    if port is not None:
        settings = replace(settings, port=port)
    if reset and settings.redis_url_set:
        raise ConfigError(
            "bridge dev --reset clears the data of its own Redis in .bridge/redis, but "
            "REDIS_URL is set; unset REDIS_URL, or clear that Redis yourself"
        )
    configure_logging(settings)
    with single_instance():
        # This process holds the folder's lock: any state file left is an earlier run's.
        if STATE_FILE.exists():
            stale = load_state()
            print("[dev] an earlier bridge dev in this folder did not stop cleanly; starting anew")
            if stale is not None and stale.redis_dir and "REDIS_URL" in stale.env:
                _stop_orphaned_redis(stale.env["REDIS_URL"], Path(stale.redis_dir))
            STATE_FILE.unlink(missing_ok=True)
        redis_dir = None if settings.redis_url_set else REDIS_DIR
        if reset and REDIS_DIR.exists():
            shutil.rmtree(REDIS_DIR)
            print(f"[dev] --reset: removed the data of earlier runs ({REDIS_DIR}/)")
        try:
            with dev_services(settings) as settings:
                secret = settings.webhook_secret
                if secret is not None and secret.get() == DEV_WEBHOOK_SECRET:
                    print(
                        "[dev] webhooks are signed with the development secret "
                        "(bridge send uses it)"
                    )
                rules = settings.rules_dir.resolve()
                print(
                    f"[dev] rules from {rules}; templates from {settings.templates_dir.resolve()}"
                )
                run_async(_serve(settings, redis_dir))
        finally:
            remove_state(os.getpid())
    return 0
