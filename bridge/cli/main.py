"""The `bridge` command: its arguments, and the one place that turns errors into messages."""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from bridge.cli.backfill import add_backfill_command
from bridge.cli.config import env_settings, redacted
from bridge.cli.doctor import add_doctor_command
from bridge.cli.operations import cmd_dlq, cmd_replay, cmd_send, cmd_trace
from bridge.cli.processes import cmd_dev, cmd_web, cmd_worker
from bridge.cli.rules import cmd_fire, cmd_test, cmd_validate
from bridge.errors import BridgeError, RuleError


def _port(text: str) -> int:
    """A TCP port for --port: 0 (a free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is no port number (0 to 65535)") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is no port number (0 to 65535)")
    return value


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
    dev.add_argument(
        "--port",
        type=_port,
        default=None,
        help="web port, 0 for a free one (default: $PORT or 8000)",
    )
    dev.add_argument(
        "--reset", action="store_true", help="start clean: remove the data kept in .bridge/redis"
    )
    dev.set_defaults(func=cmd_dev)

    sub.add_parser("web", help="the web process (Procfile: web)").set_defaults(func=cmd_web)
    sub.add_parser("worker", help="the worker process (Procfile: worker)").set_defaults(
        func=cmd_worker
    )

    send = sub.add_parser("send", help="sign an event file and POST it to a running bridge")
    send.add_argument("event", nargs="?", help="a JSON file: one event object or an array of them")
    send.add_argument(
        "--source",
        help="the events' source, e.g. lytho or lytics (default: the file's, else demo)",
    )
    send.add_argument(
        "--url", help="the bridge's base URL (default: bridge dev's in this folder, else :8000)"
    )
    send.add_argument("--id", help="webhook-id to send (default: a new one)")
    send.add_argument("--github", action="store_true", help="sign with X-Hub-Signature-256")
    slack = send.add_mutually_exclusive_group()
    slack.add_argument(
        "--slack-action",
        metavar="ACTION_ID",
        help="instead of a file: press a Slack button with this action_id (POST /hooks/slack)",
    )
    slack.add_argument(
        "--slack-command",
        metavar='"/NAME TEXT"',
        help="instead of a file: run a Slack slash command (POST /hooks/slack)",
    )
    send.add_argument("--value", help="the pressed button's value (with --slack-action)")
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
    add_doctor_command(sub)
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
        # Our own errors are written for the user: the command's name, not an exception's
        # (a message that names its command already stands as it is).
        text = str(exc) if str(exc).startswith("bridge ") else f"{name}: {exc}"
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
    elif isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        text = f"{name}: {exc}\ngive the bridge's base URL, like --url http://127.0.0.1:8000"
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
        return redacted(text, env_settings())
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
