"""The `bridge` command: dev, web, worker, send, and the rule and operations tools."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import sys
import time
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from bridge.errors import BridgeError, ConfigError, RuleError
from bridge.ingress.pollers.backfill import add_backfill_command
from bridge.settings import Secret, Settings

T = TypeVar("T")

# The development secret `bridge dev` uses when no BRIDGE_WEBHOOK_SECRET is set, and that
# `bridge send` signs with by default. It is public, so it is refused outside `bridge dev`.
DEV_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"lytbridge-dev-secret-not-for-prod").decode()


def event_loop_name() -> str:
    """uvloop where it is installed (Linux, macOS), else asyncio's own loop."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop where it is installed."""
    if event_loop_name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def _settings() -> Settings:
    return Settings.from_env()


def cmd_web(args: argparse.Namespace) -> int:
    import uvicorn

    from bridge.logs import configure_logging
    from bridge.web.server import uvicorn_options

    settings = _settings()
    configure_logging(settings)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "info",
        "access_log": False,
        "proxy_headers": True,
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
    from bridge.worker import worker_main

    settings = _settings()
    configure_logging(settings)
    run_async(worker_main(settings))
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


def _load(rules_dir: Path, templates_dir: Path) -> tuple[Any, Any]:
    """The rule set and templates of a folder; RuleError lists every problem."""
    from bridge.actions import action_schemas
    from bridge.live_rules import event_catalogue
    from bridge.rules import load_rules
    from bridge.templates import Templates

    templates = Templates(templates_dir if templates_dir.is_dir() else None)
    ruleset = load_rules(
        rules_dir, templates=templates, actions=action_schemas(), event_types=event_catalogue()
    )
    return ruleset, templates


def cmd_validate(args: argparse.Namespace) -> int:
    """Check every rule file and template; `file:line:col: message` per problem.

    Warnings (`file:line:col: warning: …`) are shown too; they fail only with --strict.
    """
    from bridge.actions import action_schemas
    from bridge.live_rules import event_catalogue
    from bridge.rules.loader import check_rules
    from bridge.templates import Templates

    settings = _settings()
    rules_dir = Path(args.dir) if args.dir else settings.rules_dir
    templates_dir = Path(args.templates) if args.templates else settings.templates_dir
    checked = check_rules(
        rules_dir,
        templates=Templates(templates_dir if templates_dir.is_dir() else None),
        actions=action_schemas(),
        event_types=event_catalogue(),
    )
    count = len(checked.ruleset.rules) if checked.ruleset is not None else 0
    found = sorted(checked.errors + checked.warnings, key=lambda p: (p.file, p.line, p.column))
    lines = [str(p) for p in found]  # errors and warnings, each file's in line order
    errors, warnings = len(checked.errors), len(checked.warnings)
    if templates_dir.is_dir():
        templates = Templates(templates_dir)
        for name in sorted(templates.names()):
            problem = templates.check_file(name)
            if problem:
                lines.append(problem)
                errors += 1
    if lines:
        print("\n".join(lines), file=sys.stderr)
    if errors or (warnings and args.strict):
        also = f", {warnings} warning(s)" if warnings else ""
        print(f"{errors} problem(s) found{also}", file=sys.stderr)
        return 1
    if warnings:
        print(f"{warnings} warning(s); `bridge validate --strict` fails on them", file=sys.stderr)
    print(f"ok: {count} rule(s) in {rules_dir}, templates in {templates_dir}")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    """Run rule test files: given events, the rules that must match and the actions."""
    from bridge.rules.testing import format_results, run_tests

    settings = _settings()
    ruleset, templates = _load(settings.rules_dir, settings.templates_dir)
    path = Path(args.path) if args.path else settings.rules_dir
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    results = run_tests(path, ruleset, templates)
    if not results:
        print(f"no rule tests found in {path} (*.test.yaml, or YAML under tests/)")
        return 1
    print(format_results(results))
    return 0 if all(r.passed for r in results) else 1


def read_event_file(path: Path) -> Any:
    """The events of a JSON file: a generic event, a CloudEvent, or an array of either."""
    from bridge.ingress.normalize import cloudevents_structured, generic_events
    from bridge.ingress.webhooks import parse_json

    payload = parse_json(path.read_bytes())
    first = payload[0] if isinstance(payload, list) and payload else payload
    if isinstance(first, dict) and "specversion" in first:
        return cloudevents_structured(payload)
    source = str(first.get("source", "cli")) if isinstance(first, dict) else "cli"
    return generic_events(source, payload, f"fire-{uuid.uuid4().hex[:12]}")


def cmd_fire(args: argparse.Namespace) -> int:
    """Show which rules match an event and what they would do; or enqueue it."""
    from bridge.errors import TemplateError
    from bridge.rules.explain import format_condition_tree
    from bridge.rules.testing import dry_run_context, render_actions

    settings = _settings()
    events = read_event_file(Path(args.event))
    if not args.dry_run:
        from bridge.store import Store

        async def enqueue(ctx: Any) -> list[bool]:
            store: Store = ctx.store
            stored: list[bool] = await store.ingest(events)
            return stored

        stored = _with_context(enqueue)
        for event, new in zip(events, stored, strict=True):
            state = "enqueued" if new else "duplicate, not enqueued"
            print(f"{event.id} ({event.type}): {state}; see: bridge trace {event.id}")
        return 0
    ruleset, templates = _load(settings.rules_dir, settings.templates_dir)
    failed = False
    for event in events:
        evaluations = ruleset.evaluate(event, templates)
        matched = [e for e in evaluations if e.matched]
        print(
            f"event {event.id} ({event.type}): {len(matched)} of {len(evaluations)} "
            "candidate rules match"
        )
        for evaluation in evaluations:
            print(format_condition_tree(evaluation, indent=1))
            if evaluation.matched:
                for action in render_actions(event, evaluation.rule, templates):
                    shown = json.dumps(dict(action.with_), ensure_ascii=False, default=str)
                    state = (
                        " (skipped: if is false)"
                        if action.skipped
                        else f" (error: {action.error})"
                        if action.error
                        else ""
                    )
                    print(f"      → {action.step}: {action.uses} {shown}{state}")
                    failed = failed or bool(action.error)
                    template = action.with_.get("template")
                    if isinstance(template, str) and not action.skipped and not action.error:
                        context = dry_run_context(event, evaluation.rule)
                        try:
                            rendered = templates.render_file(template, context)
                        except TemplateError as exc:
                            print(f"          (error: {exc})")
                            failed = True
                            continue
                        text = json.dumps(rendered, ensure_ascii=False, indent=2, default=str)
                        print("\n".join("          " + line for line in text.splitlines()))
    return 1 if failed else 0


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

    validate = sub.add_parser("validate", help="check rule files and templates")
    validate.add_argument("dir", nargs="?", help="the rules folder (default: BRIDGE_RULES_DIR)")
    validate.add_argument(
        "--templates", help="the templates folder (default: BRIDGE_TEMPLATES_DIR)"
    )
    validate.add_argument("--strict", action="store_true", help="fail on warnings too")
    validate.set_defaults(func=cmd_validate)

    test = sub.add_parser("test", help="run rule test files (no network, no Redis)")
    test.add_argument("path", nargs="?", help="a test file or folder (default: the rules folder)")
    test.set_defaults(func=cmd_test)

    fire = sub.add_parser("fire", help="show which rules match an event; or enqueue it")
    fire.add_argument("event", help="a JSON file: an event, a CloudEvent, or an array")
    fire.add_argument("--dry-run", action="store_true", help="explain only; enqueue nothing")
    fire.set_defaults(func=cmd_fire)

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

    add_backfill_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except RuleError as exc:
        print("\n".join(str(p) for p in exc.problems), file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
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
    if settings.admin_token is None:
        # A token for this run only, printed at start, so the dashboard works at once.
        changes["admin_token"] = Secret(f"dev-{secrets.token_urlsafe(18)}")
    return replace(settings, **changes)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
