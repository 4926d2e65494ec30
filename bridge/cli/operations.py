"""`bridge send`, `trace`, `replay` and `dlq`: commands beside a running bridge."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.cli.config import DEV_WEBHOOK_SECRET, companion_settings, redacted
from bridge.cli.event_files import as_cloudevents, payload_kind, read_json
from bridge.cli.loop import with_context

if TYPE_CHECKING:
    from bridge.cli.dev_state import DevState
    from bridge.settings import Settings

DEFAULT_SOURCE = "demo"
DEFAULT_URL = "http://127.0.0.1:8000"


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

    if args.slack_action or args.slack_command:
        from bridge.cli.slack_send import send_slack

        if args.event:
            print(
                "bridge send: give an event file or --slack-action/--slack-command, not both",
                file=sys.stderr,
            )
            return 2
        return send_slack(args, DEFAULT_URL)
    if not args.event:
        print(
            "bridge send: give an event file (a JSON event), or --slack-action ACTION_ID, "
            'or --slack-command "/name text"',
            file=sys.stderr,
        )
        return 2
    settings, state = companion_settings(redis=False)
    path = Path(args.event)
    body, payload = read_json(path)
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
        body = json.dumps(as_cloudevents(payload, source, msg_id)).encode()
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
    print(redacted(f"{response.status_code} {response.text}", settings))
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


def _elsewhere(settings: Settings, state: DevState | None, command: str) -> str:
    """What to add when a look-up found nothing: not beside `bridge dev` and no REDIS_URL,
    the default Redis asked may be another bridge's (or none), so say which it was and what
    to do; '' when the Redis is the one meant (dev's, or REDIS_URL)."""
    from bridge.cli.dev_state import shown_url

    if state is not None or settings.redis_url_set:
        return ""
    return (
        f" in the Redis at {shown_url(settings.redis_url)} (REDIS_URL unset); "
        f"run bridge {command} in the folder of `bridge dev`, or set REDIS_URL"
    )


def cmd_trace(args: argparse.Namespace) -> int:
    from bridge.cli.report import trace_lines
    from bridge.operate.admin import event_with_trace

    settings, state = companion_settings()
    found = with_context(lambda ctx: event_with_trace(ctx, args.event_id), settings)
    elsewhere = _elsewhere(settings, state, "trace")
    if found is None and elsewhere:
        print(f"no event {args.event_id!r}{elsewhere}", file=sys.stderr)
        return 1
    if found is None:
        print(
            f"no event {args.event_id!r} is stored (unknown, or older than BRIDGE_TRACE_TTL)",
            file=sys.stderr,
        )
        return 1
    print(redacted("\n".join(trace_lines(*found)), settings))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from bridge.operate.admin import replay

    settings, state = companion_settings()
    run = with_context(lambda ctx: replay(ctx, args.event_id), settings)
    if run is None:
        elsewhere = _elsewhere(settings, state, "replay")
        print(f"no event {args.event_id!r}{elsewhere or ' is stored'}", file=sys.stderr)
        return 1
    print(f"event {args.event_id} queued again as run {run}; see: bridge trace {args.event_id}")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from bridge.cli.report import table
    from bridge.operate import admin

    settings, state = companion_settings()
    elsewhere = _elsewhere(settings, state, f"dlq {args.action}")
    if args.action == "list":
        letters = with_context(lambda ctx: admin.dead_letters(ctx, args.limit), settings)
        if not letters:
            print(f"no dead letters{elsewhere}")
            return 0
        rows = [
            (
                dl.id,
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(dl.failed_at)),
                dl.event_id,
                dl.rule_id + (f"@{dl.run}" if dl.run else ""),
                f"{dl.step} ({dl.uses})",
                dl.attempts,
                _short(redacted(dl.error, settings), 70),
            )
            for dl in letters
        ]
        headers = ("ID", "FAILED (UTC)", "EVENT", "RULE", "STEP", "TRIES", "ERROR")
        print(redacted(table(headers, rows), settings))
        return 0
    if not args.id:
        print(
            f"bridge dlq {args.action} needs the ID that `bridge dlq list` shows", file=sys.stderr
        )
        return 2
    if args.action == "retry":
        letter = with_context(lambda ctx: admin.retry_dead_letter(ctx, args.id), settings)
        if letter is None:
            print(f"no dead letter {args.id!r}{elsewhere}", file=sys.stderr)
            return 1
        shown = f"retrying {letter.rule_id} for event {letter.event_id} from step {letter.step}"
        print(redacted(shown, settings))
        return 0
    dropped = with_context(lambda ctx: admin.drop_dead_letter(ctx, args.id), settings)
    if not dropped:
        print(f"no dead letter {args.id!r}{elsewhere}", file=sys.stderr)
        return 1
    print(f"dropped {args.id}")
    return 0


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
