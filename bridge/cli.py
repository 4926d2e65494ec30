"""The `bridge` command: dev, web, worker, send, and the rule and operations tools."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError, ConfigError
from bridge.settings import Secret, Settings

# The development secret `bridge dev` uses when no BRIDGE_WEBHOOK_SECRET is set, and that
# `bridge send` signs with by default. It is public, so it is refused outside `bridge dev`.
DEV_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"lytbridge-dev-secret-not-for-prod").decode()


def _settings() -> Settings:
    return Settings.from_env()


def cmd_web(args: argparse.Namespace) -> int:
    import uvicorn

    from bridge.logs import configure_logging
    from bridge.web.app import create_app

    settings = _settings()
    configure_logging(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=20,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from bridge.logs import configure_logging
    from bridge.worker import worker_main

    settings = _settings()
    configure_logging(settings)
    asyncio.run(worker_main(settings))
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from bridge.dev import run_dev

    return run_dev(port=args.port)


def cmd_send(args: argparse.Namespace) -> int:
    """Sign an event file the way a sender would and POST it to /hooks/{source}."""
    import httpx

    from bridge.ingress.signatures import sign_github, sign_standard

    path = Path(args.event)
    body = path.read_bytes()
    try:
        json.loads(body)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    configured = _settings().webhook_secret
    secret = configured.get() if configured else DEV_WEBHOOK_SECRET
    msg_id = args.id or f"msg_{uuid.uuid4().hex}"
    headers = {"content-type": "application/json", "webhook-id": msg_id}
    if args.github:
        headers["x-hub-signature-256"] = sign_github(secret, body)
    else:
        stamp = int(time.time())
        headers["webhook-timestamp"] = str(stamp)
        headers["webhook-signature"] = sign_standard(secret, msg_id, stamp, body)
    url = f"{args.url.rstrip('/')}/hooks/{args.source}"
    response = httpx.post(url, content=body, headers=headers, timeout=10)
    print(f"{response.status_code} {response.text}")
    return 0 if response.is_success else 1


def _with_context(work: Any) -> Any:
    """Run `work(context)` against the configured Redis, closing it afterwards."""
    from bridge.context import build_context

    async def main() -> Any:
        context = await build_context(_settings(), load_rules=False)
        try:
            return await work(context)
        finally:
            await context.close()

    return asyncio.run(main())


def cmd_trace(args: argparse.Namespace) -> int:
    from bridge.admin import event_with_trace
    from bridge.report import trace_lines

    found = _with_context(lambda ctx: event_with_trace(ctx, args.event_id))
    if found is None:
        print(
            f"no event {args.event_id!r} is stored (unknown, or older than BRIDGE_TRACE_TTL)",
            file=sys.stderr,
        )
        return 1
    print("\n".join(trace_lines(*found)))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from bridge.admin import replay

    run = _with_context(lambda ctx: replay(ctx, args.event_id))
    if run is None:
        print(f"no event {args.event_id!r} is stored", file=sys.stderr)
        return 1
    print(f"event {args.event_id} queued again as run {run}; see: bridge trace {args.event_id}")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from bridge import admin
    from bridge.report import table

    if args.action == "list":
        letters = _with_context(lambda ctx: admin.dead_letters(ctx, args.limit))
        if not letters:
            print("no dead letters")
            return 0
        rows = [
            (
                dl.id,
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(dl.failed_at)),
                dl.event_id,
                dl.rule_id + (f"@{dl.run}" if dl.run else ""),
                f"{dl.step} ({dl.uses})",
                dl.attempts,
                dl.error if len(dl.error) <= 70 else dl.error[:69] + "…",
            )
            for dl in letters
        ]
        print(table(("ID", "FAILED (UTC)", "EVENT", "RULE", "STEP", "TRIES", "ERROR"), rows))
        return 0
    if not args.id:
        print(
            f"bridge dlq {args.action} needs the ID that `bridge dlq list` shows", file=sys.stderr
        )
        return 2
    if args.action == "retry":
        letter = _with_context(lambda ctx: admin.retry_dead_letter(ctx, args.id))
        if letter is None:
            print(f"no dead letter {args.id!r}", file=sys.stderr)
            return 1
        print(f"retrying {letter.rule_id} for event {letter.event_id} from step {letter.step}")
        return 0
    dropped = _with_context(lambda ctx: admin.drop_dead_letter(ctx, args.id))
    if not dropped:
        print(f"no dead letter {args.id!r}", file=sys.stderr)
        return 1
    print(f"dropped {args.id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge",
        description="lytbridge: Lytho and Lytics changes become events; YAML rules run actions.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="web + worker in one process, with sandboxes where needed")
    dev.add_argument("--port", type=int, default=None, help="web port (default: $PORT or 8000)")
    dev.set_defaults(func=cmd_dev)

    sub.add_parser("web", help="the web process (Procfile: web)").set_defaults(func=cmd_web)
    sub.add_parser("worker", help="the worker process (Procfile: worker)").set_defaults(
        func=cmd_worker
    )

    send = sub.add_parser("send", help="sign an event file and POST it to a running bridge")
    send.add_argument("event", help="a JSON file: one event object or an array of them")
    send.add_argument("--source", default="demo", help="the path's {source} (default: demo)")
    send.add_argument("--url", default="http://127.0.0.1:8000", help="the bridge's base URL")
    send.add_argument("--id", help="webhook-id to send (default: a new one)")
    send.add_argument("--github", action="store_true", help="sign with X-Hub-Signature-256")
    send.set_defaults(func=cmd_send)

    trace = sub.add_parser("trace", help="print what happened to one event")
    trace.add_argument("event_id")
    trace.set_defaults(func=cmd_trace)

    replay = sub.add_parser("replay", help="match and run a stored event again (a new run)")
    replay.add_argument("event_id")
    replay.set_defaults(func=cmd_replay)

    dlq = sub.add_parser("dlq", help="list, retry or drop dead letters")
    dlq.add_argument("action", choices=("list", "retry", "drop"))
    dlq.add_argument("id", nargs="?", help="a dead letter's ID, as `bridge dlq list` shows it")
    dlq.add_argument("--limit", type=int, default=100)
    dlq.set_defaults(func=cmd_dlq)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except BridgeError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


def dev_settings(settings: Settings) -> Settings:
    """Settings for `bridge dev`: loopback by default, a known development webhook secret."""
    changes: dict[str, Any] = {}
    if not settings.host_set:
        changes["host"] = "127.0.0.1"
    if settings.webhook_secret is None and not settings.allow_unsigned:
        changes["webhook_secret"] = Secret(DEV_WEBHOOK_SECRET)
    return replace(settings, **changes)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
