"""The `bridge` command: dev, web, worker, send, and the rule and operations tools."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import secrets
import sys
import time
import traceback
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bridge.cli.backfill import add_backfill_command
from bridge.errors import BridgeError, ConfigError, EventError, RuleError
from bridge.settings import Secret, Settings

if TYPE_CHECKING:
    from bridge.cli.dev_state import DevState

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


def companion_settings() -> tuple[Settings, DevState | None]:
    """Settings of a command run beside `bridge dev`: the environment, then dev's state file.

    The variables `bridge dev` wrote to `.bridge/dev.json` (its Redis, prefix, webhook secret
    and admin token) apply where the environment sets none; a stale file is noted and ignored.
    """
    from bridge.cli.dev_state import REDIS_DIR, read_state, shown_url

    state, note = read_state()
    if note:
        print(note, file=sys.stderr)
    if state is None:
        settings = _settings()
        if not settings.redis_url_set and REDIS_DIR.is_dir():
            print(
                f"note: bridge dev is not running in this folder (its data stays in "
                f"{REDIS_DIR}/ for its next run); using {shown_url(settings.redis_url)}",
                file=sys.stderr,
            )
        return settings, None
    return Settings.from_env(defaults=state.env), state


def _redacted(text: str, settings: Settings) -> str:
    """`text` with every configured secret masked (also as JSON writes it)."""
    from bridge.jobs.traces import redact

    values = settings.secrets()
    escaped = [json.dumps(value)[1:-1] for value in values]
    shown: str = redact(text, [*values, *escaped])
    return shown


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
    from bridge.operate.worker import worker_main

    settings = _settings()
    configure_logging(settings)
    run_async(worker_main(settings))
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from bridge.cli.dev import run_dev

    return run_dev(port=args.port, reset=args.reset)


DEFAULT_SOURCE = "demo"
DEFAULT_URL = "http://127.0.0.1:8000"


def payload_kind(payload: Any) -> str:
    """`cloudevents`, `lytics-audience` (a Lytics audience webhook) or `generic`."""
    first = payload[0] if isinstance(payload, list) and payload else payload
    if not isinstance(first, dict):
        return "generic"
    if "specversion" in first:
        return "cloudevents"
    data = first.get("data")
    if isinstance(data, dict) and "segment_events" in data and "type" not in first:
        return "lytics-audience"
    return "generic"


def _as_cloudevents(payload: Any, source: str, delivery: str) -> Any:
    """Generic events as CloudEvents of `source`, with the ids /hooks/{source} would give."""
    items = payload if isinstance(payload, list) else [payload]
    wrapped = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            return payload  # not events: the bridge says what is wrong with it
        event = {
            "specversion": "1.0",
            "id": item.get("id")
            or (delivery if not isinstance(payload, list) else f"{delivery}:{index}"),
            "source": source,
            **{k: item[k] for k in ("type", "subject", "time", "data", "changes") if k in item},
        }
        wrapped.append(event)
    return wrapped if isinstance(payload, list) else wrapped[0]


def _read_json(path: Path) -> tuple[bytes, Any]:
    """The bytes and the parsed JSON of an event file; ConfigError if it is not JSON."""
    from bridge.ingress.webhooks import parse_json

    body = path.read_bytes()
    try:
        return body, parse_json(body)
    except EventError as exc:
        raise ConfigError(
            f"{path} is not a JSON event file ({exc}); expected an event object or an array"
        ) from None


def cmd_send(args: argparse.Namespace) -> int:
    """Sign an event file the way a sender would and POST it to the bridge.

    Generic events go to /hooks/{source}; CloudEvents to /hooks/cloudevents; a Lytics
    audience webhook to /hooks/lytics. Events of a source whose route takes another shape
    (`lytics`, `cloudevents`) go as CloudEvents with that source, so any documented event can
    be sent with its own source.
    """
    import httpx

    from bridge.ingress.signatures import sign_github, sign_standard
    from bridge.ingress.webhooks import SPECIAL_SOURCES

    settings, state = companion_settings()
    path = Path(args.event)
    body, payload = _read_json(path)
    msg_id = args.id or f"msg_{uuid.uuid4().hex}"
    kind = payload_kind(payload)
    first = payload[0] if isinstance(payload, list) and payload else payload
    named = first.get("source") if isinstance(first, dict) else None
    source = args.source or (str(named) if named and kind == "generic" else DEFAULT_SOURCE)
    route, content_type = source, "application/json"
    if kind == "cloudevents":
        route = "cloudevents"
        if args.source and args.source != "cloudevents":
            items = payload if isinstance(payload, list) else [payload]
            for item in items:
                if isinstance(item, dict):
                    item["source"] = args.source
            body = json.dumps(payload).encode()
    elif kind == "lytics-audience" and args.source in (None, "lytics"):
        route = "lytics"
    elif source in SPECIAL_SOURCES:
        route = "cloudevents"
        body = json.dumps(_as_cloudevents(payload, source, msg_id)).encode()
        print(
            f"note: /hooks/{source} takes another shape; sent as CloudEvents with source "
            f"{source!r} to /hooks/cloudevents",
            file=sys.stderr,
        )
    if route == "cloudevents":
        batch = body.lstrip().startswith(b"[")
        content_type = f"application/cloudevents{'-batch' if batch else ''}+json"
    configured = settings.secret_for(route)
    secret = configured.get() if configured else DEV_WEBHOOK_SECRET
    headers = {"content-type": content_type, "webhook-id": msg_id}
    if args.github or settings.scheme_for(route) == "github":
        headers["x-hub-signature-256"] = sign_github(secret, body)
    else:
        stamp = int(time.time())
        headers["webhook-timestamp"] = str(stamp)
        headers["webhook-signature"] = sign_standard(secret, msg_id, stamp, body)
    base = args.url or (state.url if state else DEFAULT_URL)
    url = f"{base.rstrip('/')}/hooks/{route}"
    response = httpx.post(url, content=body, headers=headers, timeout=10)
    print(_redacted(f"{response.status_code} {response.text}", settings))
    if response.is_success:
        try:
            accepted = response.json().get("accepted") or []
        except ValueError:
            accepted = []
        for event_id in accepted:
            print(f"see: bridge trace {event_id}")
        return 0
    if response.status_code == 401:
        print(
            "the bridge refused the signature: run bridge send in the folder of bridge dev, "
            "or set BRIDGE_WEBHOOK_SECRET to the bridge's secret",
            file=sys.stderr,
        )
    elif response.status_code == 404:
        print(
            f"the bridge has no source {route!r}: set BRIDGE_WEBHOOK_SECRET_"
            f"{route.upper().replace('-', '_')} there, or send with another --source",
            file=sys.stderr,
        )
    return 1


def _load(rules_dir: Path, templates_dir: Path) -> tuple[Any, Any]:
    """The rule set and templates of a folder; RuleError lists every problem."""
    from bridge.actions import action_schemas
    from bridge.operate.catalogue import event_catalogue
    from bridge.rules import load_rules
    from bridge.templates.environment import Templates

    templates = Templates(templates_dir if templates_dir.is_dir() else None)
    ruleset = load_rules(
        rules_dir, templates=templates, actions=action_schemas(), event_types=event_catalogue()
    )
    return ruleset, templates


def _templates_dir(given: str | None, rules_dir: Path | None, settings: Settings) -> Path:
    """--templates; else, for a rules folder named on the command line, the `templates`
    folder beside it if there is one (`examples/rules` → `examples/templates`); else
    BRIDGE_TEMPLATES_DIR."""
    if given:
        return Path(given)
    if rules_dir is not None and rules_dir != settings.rules_dir:
        beside = rules_dir.parent / "templates"
        if beside.is_dir():
            return beside
    return settings.templates_dir


def _rules_dir_of(path: Path, default: Path) -> Path:
    """The rules folder a rule-test path belongs to: BRIDGE_RULES_DIR when the path is in it;
    else the folder above its `tests/` folder, or the path's own folder."""
    try:
        path.resolve().relative_to(default.resolve())
        return default
    except ValueError:
        pass
    folder = path if path.is_dir() else path.parent
    parts = folder.parts
    if "tests" in parts:
        last = len(parts) - 1 - parts[::-1].index("tests")
        return Path(*parts[:last]) if last else Path(".")
    return folder


def cmd_validate(args: argparse.Namespace) -> int:
    """Check every rule file and template; `file:line:col: message` per problem.

    Warnings (`file:line:col: warning: …`) are shown too; they fail only with --strict.
    """
    from bridge.actions import action_schemas
    from bridge.operate.catalogue import event_catalogue
    from bridge.rules.loader import check_rules
    from bridge.templates.environment import Templates

    settings = _settings()
    rules_dir = Path(args.dir) if args.dir else settings.rules_dir
    templates_dir = _templates_dir(args.templates, Path(args.dir) if args.dir else None, settings)
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
    path = Path(args.path) if args.path else settings.rules_dir
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    rules_dir = _rules_dir_of(path, settings.rules_dir)
    templates_dir = _templates_dir(args.templates, rules_dir, settings)
    if rules_dir != settings.rules_dir:
        print(
            f"note: testing the rules of {rules_dir} (templates: {templates_dir})", file=sys.stderr
        )
    ruleset, templates = _load(rules_dir, templates_dir)
    results = run_tests(path, ruleset, templates)
    if not results:
        print(f"no rule tests found in {path} (*.test.yaml, or YAML under tests/)")
        return 1
    print(format_results(results))
    return 0 if all(r.passed for r in results) else 1


def read_event_file(path: Path, source: str | None = None) -> Any:
    """The events of a JSON file: a generic event, a CloudEvent, a Lytics audience webhook,
    or an array of them; `source`, when given, is every event's source."""
    from bridge.ingress.normalize import cloudevents_structured, generic_events, lytics_events

    _, payload = _read_json(path)
    delivery = f"fire-{uuid.uuid4().hex[:12]}"
    kind = payload_kind(payload)
    try:
        if kind == "cloudevents":
            events = cloudevents_structured(payload)
            return [replace(e, source=source) for e in events] if source else events
        if kind == "lytics-audience" and source in (None, "lytics"):
            return lytics_events(payload, delivery)
        first = payload[0] if isinstance(payload, list) and payload else payload
        named = first.get("source") if isinstance(first, dict) else None
        return generic_events(source or str(named or "cli"), payload, delivery)
    except EventError as exc:
        raise EventError(f"{path}: {exc}") from None


def cmd_fire(args: argparse.Namespace) -> int:
    """Show which rules match an event and what they would do; or enqueue it."""
    from bridge.errors import TemplateError
    from bridge.rules.explain import format_condition_tree
    from bridge.rules.testing import dry_run_context, render_actions

    settings, _ = companion_settings() if not args.dry_run else (_settings(), None)
    events = read_event_file(Path(args.event), args.source)
    if not args.dry_run:
        from bridge.queue.store import Admission, Store

        async def enqueue(ctx: Any) -> list[Admission]:
            store: Store = ctx.store
            admitted: list[Admission] = await store.admit(events)
            return admitted

        admitted = _with_context(enqueue, settings)
        for event, admission in zip(events, admitted, strict=True):
            # Another source may own the event's id: then it is stored under another one.
            state = "enqueued" if admission.new else "duplicate, not enqueued"
            shown = admission.id
            print(f"{shown} ({event.type}): {state}; see: bridge trace {shown}")
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


def _with_context(work: Any, settings: Settings) -> Any:
    """Run `work(context)` against the configured Redis, closing it afterwards."""
    from bridge.operate.context import build_context

    async def main() -> Any:
        context = await build_context(settings, load_rules=False)
        try:
            return await work(context)
        finally:
            await context.close()

    return asyncio.run(main())


def cmd_trace(args: argparse.Namespace) -> int:
    from bridge.cli.report import trace_lines
    from bridge.operate.admin import event_with_trace

    settings, _ = companion_settings()
    found = _with_context(lambda ctx: event_with_trace(ctx, args.event_id), settings)
    if found is None:
        print(
            f"no event {args.event_id!r} is stored (unknown, or older than BRIDGE_TRACE_TTL)",
            file=sys.stderr,
        )
        return 1
    print(_redacted("\n".join(trace_lines(*found)), settings))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from bridge.operate.admin import replay

    settings, _ = companion_settings()
    run = _with_context(lambda ctx: replay(ctx, args.event_id), settings)
    if run is None:
        print(f"no event {args.event_id!r} is stored", file=sys.stderr)
        return 1
    print(f"event {args.event_id} queued again as run {run}; see: bridge trace {args.event_id}")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from bridge.cli.report import table
    from bridge.operate import admin

    settings, _ = companion_settings()
    if args.action == "list":
        letters = _with_context(lambda ctx: admin.dead_letters(ctx, args.limit), settings)
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
                _short(_redacted(dl.error, settings), 70),
            )
            for dl in letters
        ]
        headers = ("ID", "FAILED (UTC)", "EVENT", "RULE", "STEP", "TRIES", "ERROR")
        print(_redacted(table(headers, rows), settings))
        return 0
    if not args.id:
        print(
            f"bridge dlq {args.action} needs the ID that `bridge dlq list` shows", file=sys.stderr
        )
        return 2
    if args.action == "retry":
        letter = _with_context(lambda ctx: admin.retry_dead_letter(ctx, args.id), settings)
        if letter is None:
            print(f"no dead letter {args.id!r}", file=sys.stderr)
            return 1
        shown = f"retrying {letter.rule_id} for event {letter.event_id} from step {letter.step}"
        print(_redacted(shown, settings))
        return 0
    dropped = _with_context(lambda ctx: admin.drop_dead_letter(ctx, args.id), settings)
    if not dropped:
        print(f"no dead letter {args.id!r}", file=sys.stderr)
        return 1
    print(f"dropped {args.id}")
    return 0


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge",
        description="lytbridge: Lytho and Lytics changes become events; YAML rules run actions.",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="show the Python traceback of an unexpected error"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="web + worker in one process, with sandboxes where needed")
    dev.add_argument("--port", type=int, default=None, help="web port (default: $PORT or 8000)")
    dev.add_argument(
        "--reset", action="store_true", help="start clean: remove the data kept in .bridge/redis"
    )
    dev.set_defaults(func=cmd_dev)

    sub.add_parser("web", help="the web process (Procfile: web)").set_defaults(func=cmd_web)
    sub.add_parser("worker", help="the worker process (Procfile: worker)").set_defaults(
        func=cmd_worker
    )

    send = sub.add_parser("send", help="sign an event file and POST it to a running bridge")
    send.add_argument("event", help="a JSON file: one event object or an array of them")
    send.add_argument(
        "--source",
        help="the events' source, e.g. lytho or lytics (default: the file's, else demo)",
    )
    send.add_argument(
        "--url", help="the bridge's base URL (default: bridge dev's in this folder, else :8000)"
    )
    send.add_argument("--id", help="webhook-id to send (default: a new one)")
    send.add_argument("--github", action="store_true", help="sign with X-Hub-Signature-256")
    send.set_defaults(func=cmd_send)

    validate = sub.add_parser("validate", help="check rule files and templates")
    validate.add_argument("dir", nargs="?", help="the rules folder (default: BRIDGE_RULES_DIR)")
    validate.add_argument(
        "--templates",
        help="the templates folder (default: the one beside DIR, or BRIDGE_TEMPLATES_DIR)",
    )
    validate.add_argument("--strict", action="store_true", help="fail on warnings too")
    validate.set_defaults(func=cmd_validate)

    test = sub.add_parser("test", help="run rule test files (no network, no Redis)")
    test.add_argument("path", nargs="?", help="a test file or folder (default: the rules folder)")
    test.add_argument(
        "--templates",
        help="the templates folder (default: the one beside the rules, or BRIDGE_TEMPLATES_DIR)",
    )
    test.set_defaults(func=cmd_test)

    fire = sub.add_parser("fire", help="show which rules match an event; or enqueue it")
    fire.add_argument("event", help="a JSON file: an event, a CloudEvent, or an array")
    fire.add_argument("--dry-run", action="store_true", help="explain only; enqueue nothing")
    fire.add_argument("--source", help="the events' source (default: the file's, else cli)")
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
    """Run one command; every failure is one or two lines on stderr and a non-zero exit."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        # Output still buffered for a closed pipe fails here, inside the handling below.
        sys.stdout.flush()
    except RuleError as exc:
        print("\n".join(str(p) for p in exc.problems), file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `bridge trace … | head`: the reader has all it wanted. Nothing more to say, and
        # nothing more may be written (Python would complain when it flushes at exit).
        _silence_stdout()
        return 141
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the one place that turns errors into messages
        if args.traceback:
            traceback.print_exc()
        print(_error_message(args, exc), file=sys.stderr)
        return 1
    return code


def _command_name(args: argparse.Namespace) -> str:
    action = getattr(args, "action", None)
    return f"bridge {args.command}" + (f" {action}" if args.command == "dlq" and action else "")


def _error_message(args: argparse.Namespace, exc: BaseException) -> str:
    """What went wrong and what to do, in one or two lines, secrets masked."""
    import httpx
    import redis

    name = _command_name(args)
    cause = exc.__cause__
    if isinstance(exc, BridgeError) and isinstance(
        cause, redis.ConnectionError | redis.TimeoutError
    ):
        exc = cause  # the store's "cannot store events" is, here, an unreachable Redis
    if isinstance(exc, BridgeError):
        text = f"{type(exc).__name__}: {exc}"
    elif isinstance(exc, FileNotFoundError):
        text = f"{name}: no file {exc.filename}; give the path of a JSON file"
        if Path("examples/events").is_dir():
            text += " (examples/events/ has samples)"
    elif isinstance(exc, IsADirectoryError):
        text = f"{name}: {exc.filename} is a folder; give the path of a JSON file"
    elif isinstance(exc, PermissionError):
        text = f"{name}: cannot read {exc.filename}: permission denied"
    elif isinstance(exc, httpx.TimeoutException):
        text = (
            f"{name}: the bridge at {_url_of(exc)} did not answer in time\n"
            "is it overloaded or stuck? its terminal or logs say more"
        )
    elif isinstance(exc, httpx.TransportError):
        reason = "connection refused" if "refused" in str(exc).lower() else str(exc)
        text = (
            f"{name}: no bridge answers at {_url_of(exc)} ({reason or type(exc).__name__})\n"
            "start one with `bridge dev` in this folder, or pass --url"
        )
    elif isinstance(exc, redis.AuthenticationError):
        text = f"{name}: Redis refused the credentials ({exc})\ncheck the password in REDIS_URL"
    elif isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        text = (
            f"{name}: cannot reach Redis{_redis_problem(exc)}\n"
            "start `bridge dev` in this folder (its commands find it), or set REDIS_URL "
            "to the bridge's Redis"
        )
    elif isinstance(exc, redis.RedisError):
        text = f"{name}: Redis answered with an error: {exc}\ncheck REDIS_URL"
    elif isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        text = f"{name}:{where} {exc.strerror or exc}"
    else:
        text = (
            f"{name}: unexpected error: {type(exc).__name__}: {exc}\n"
            "this is a bug in lytbridge; run again with `bridge --traceback …` and report it"
        )
    try:
        return _redacted(text, _settings())
    except BridgeError:
        return text


def _redis_problem(exc: Exception) -> str:
    """` at localhost:6379 (connection refused)` from redis-py's wordier message."""
    import redis

    message = str(exc)
    where = re.search(r"connecting to (\S+?)\.? ", message + " ")
    at = f" at {where.group(1)}" if where else ""
    if "Error 111 " in message or "refused" in message.lower():
        return f"{at} (connection refused)"
    if isinstance(exc, redis.TimeoutError) or "timed out" in message.lower():
        return f"{at} (no answer in time)"
    return f"{at} ({message})"


def _url_of(exc: Exception) -> str:
    """The base URL of the request an httpx error is about."""
    try:
        url = exc.request.url  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return "the given URL"
    return f"{url.scheme}://{url.netloc.decode()}"


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush finds no closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (tests capture it): nothing will be flushed to a pipe


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
