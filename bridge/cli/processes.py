"""`bridge web`, `worker` and `dev`: the long-running processes."""

from __future__ import annotations

import argparse
from typing import Any

from bridge.cli.config import env_settings
from bridge.cli.loop import event_loop_name, run_async
from bridge.settings import Settings


def checked_settings() -> Settings:
    """The settings of a long-running process, with its Lytho profile checked before it
    starts (an override file's problems are reported as `file:line:col`, and nothing runs)."""
    from bridge.clients.lytho_profile import load_profile

    settings = env_settings()
    load_profile(settings.lytho_profile)
    return settings


def cmd_web(args: argparse.Namespace) -> int:
    import uvicorn

    from bridge.logs import configure_logging
    from bridge.web.server import uvicorn_options

    settings = checked_settings()
    configure_logging(settings)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        # uvicorn's own lines ("Started server process", "Shutting down", …) go through the
        # bridge's handler, in BRIDGE_LOG_FORMAT and at BRIDGE_LOG_LEVEL, secrets masked:
        # no logging set-up of uvicorn's own.
        "log_config": None,
        "log_level": settings.log_level,
        "access_log": False,
        "timeout_graceful_shutdown": 20,
        "loop": event_loop_name(),
        # httptools, with a read timeout, bounded headers and a connection limit.
        **uvicorn_options(settings),
    }
    if settings.web_concurrency == 1:
        from bridge.web.app import create_app

        uvicorn.run(create_app(settings), **options)
    else:
        # uvicorn's supervisor (which does not load the app itself) shares the socket with
        # WEB_CONCURRENCY processes, each building its app and connections from the env.
        uvicorn.run(
            "bridge.web.app:create_app_from_env",
            factory=True,
            workers=settings.web_concurrency,
            **options,
        )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from bridge.logs import configure_logging
    from bridge.operate.worker import worker_main

    settings = checked_settings()
    configure_logging(settings)
    run_async(worker_main(settings))
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from bridge.cli.dev import run_dev

    return run_dev(port=args.port, reset=args.reset)
