"""`POST /hooks/slack`: Slack button presses and slash commands become events (ingress).

Slack posts a form (`application/x-www-form-urlencoded`): interactivity as one field,
`payload`, holding JSON (`type: block_actions`, with `actions[]`), and slash commands as
plain fields (`command`, `text`, `user_id`, …). Each request is signed with the app's
signing secret (`X-Slack-Signature: v0=…` over `v0:{timestamp}:{raw body}`); Slack wants
an answer within 3 seconds, so the events are stored and the answer goes at once: the
rules run on the worker like for any event.

Checks, cheapest and least trusting first: endpoint configured (404), content type (415),
size (413), signature (401), form and payload (400), durable storage (503).

Event types: `slack.action.<action_id>` (one per entry of `actions`) and
`slack.command.<name>` (the command without its `/`). Slack allows any character in an
action id, rules' `on:` only some, so the id is written in lower case with every
character but `a-z`, `0-9`, `_` and `-` as `_` (`Push to Lytics!` → `push_to_lytics_`);
an id over MAX_WORD characters keeps its start and a hash of the whole. The id as Slack
sent it stays in `data.action_id`.

Ids are hashes of fields that a redelivery repeats (team, trigger id, action id, block id,
action time), so a retried delivery is a duplicate and stores nothing new.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.errors import EventError, StoreUnavailable
from bridge.events import Event, stable_id, utc_now
from bridge.ingress.checks import check_attribute, check_value
from bridge.ingress.normalize import MAX_EVENTS_PER_REQUEST
from bridge.ingress.signatures import SignatureError, verify_slack
from bridge.ingress.webhooks import (
    Ingress,
    body_or_error,
    error,
    parse_json,
    refusals,
    stored_size,
)
from bridge.operate import metrics

logger = logging.getLogger(__name__)

SOURCE = "slack"
ACTION_PREFIX = "slack.action."
COMMAND_PREFIX = "slack.command."
# The longest action id or command name kept as it is in a type (Slack allows 255).
MAX_WORD = 200
FORM = "application/x-www-form-urlencoded"
_UNSAFE = re.compile(r"[^a-z0-9_-]")


def type_word(raw: str) -> str:
    """An action id or command name as the last word of an event type: lower case, each
    character but `a-z 0-9 _ -` as `_`, at most MAX_WORD characters."""
    word = _UNSAFE.sub("_", raw.lower())
    if len(word) > MAX_WORD:
        digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        word = f"{word[: MAX_WORD - 9]}_{digest}"
    return word


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _time(stamp: Any) -> str:
    """Slack's `action_ts` (`"1712345678.123456"`) as RFC 3339; now when there is none."""
    try:
        seconds = float(stamp)
        return (
            datetime.fromtimestamp(seconds, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
    except (TypeError, ValueError, OverflowError, OSError):
        return utc_now()


# What a menu or picker sends as its choice, for `data.value` when there is no `value`.
_CHOICES = (
    "selected_date",
    "selected_time",
    "selected_date_time",
    "selected_user",
    "selected_channel",
    "selected_conversation",
    "selected_users",
    "selected_channels",
    "selected_conversations",
)


def chosen(action: Mapping[str, Any]) -> Any:
    """A button's `value`; for a menu or picker, what was chosen (an option's value, the
    values of several options, a date, a user id, …)."""
    if action.get("value") is not None:
        return action["value"]
    if isinstance(action.get("selected_option"), Mapping):
        return action["selected_option"].get("value")
    if isinstance(action.get("selected_options"), list):
        return [_obj(option).get("value") for option in action["selected_options"]]
    for name in _CHOICES:
        if action.get(name) is not None:
            return action[name]
    return None


def action_events(payload: Mapping[str, Any]) -> list[Event]:
    """The events of a `block_actions` payload: one per entry of `actions`. EventError
    for a payload that is not one."""
    kind = payload.get("type")
    if kind != "block_actions":
        raise EventError(
            f"payload type {kind!r} is not supported; lytbridge takes block_actions "
            "(buttons, menus) and slash commands"
        )
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions:
        raise EventError("the payload's 'actions' must be a non-empty array")
    if len(actions) > MAX_EVENTS_PER_REQUEST:
        raise EventError(f"the payload holds {len(actions)} actions; at most 1000")
    user, team = _obj(payload.get("user")), _obj(payload.get("team"))
    channel, container = _obj(payload.get("channel")), _obj(payload.get("container"))
    channel_id = _str(channel.get("id")) or _str(container.get("channel_id"))
    message_ts = _str(container.get("message_ts")) or _str(_obj(payload.get("message")).get("ts"))
    trigger_id = _str(payload.get("trigger_id"))
    events = []
    for index, action in enumerate(actions):
        if not isinstance(action, Mapping):
            raise EventError(f"actions[{index}] must be an object")
        action_id = action.get("action_id")
        if not isinstance(action_id, str) or not action_id:
            raise EventError(f"actions[{index}] has no 'action_id'")
        data = {
            "action_id": action_id,
            "block_id": action.get("block_id"),
            "value": chosen(action),
            "text": _obj(action.get("text")).get("text"),
            "action_type": action.get("type"),
            "user": {"id": user.get("id"), "name": user.get("username") or user.get("name")},
            "channel": {"id": channel_id, "name": channel.get("name")},
            "message_ts": message_ts,
            "response_url": payload.get("response_url"),
            "trigger_id": trigger_id,
            "team": {"id": team.get("id"), "domain": team.get("domain")},
        }
        check_value(data, "data", None)
        subject = f"{channel_id}/{message_ts}" if channel_id and message_ts else None
        subject = subject or _str(user.get("id")) or action_id
        event_id = stable_id(
            SOURCE,
            "action",
            team.get("id"),
            trigger_id,
            action_id,
            action.get("block_id"),
            action.get("action_ts"),
            message_ts,
            user.get("id"),
            index,
        )
        events.append(
            Event(
                id=event_id,
                source=SOURCE,
                type=ACTION_PREFIX + type_word(action_id),
                subject=check_attribute(subject[:256], "subject", None),
                time=_time(action.get("action_ts")),
                data=data,
            )
        )
    return events


def command_event(form: Mapping[str, str]) -> Event:
    """The event of a slash command's form. EventError for one without a command."""
    command = form.get("command", "")
    name = command.removeprefix("/")
    if not command.startswith("/") or not name:
        raise EventError(f"'command' must be a slash command such as /deploy, got {command!r}")
    data = {
        "command": command,
        "text": form.get("text", ""),
        "user": {"id": form.get("user_id"), "name": form.get("user_name")},
        "channel": {"id": form.get("channel_id"), "name": form.get("channel_name")},
        "response_url": form.get("response_url"),
        "trigger_id": form.get("trigger_id"),
        "team": {"id": form.get("team_id"), "domain": form.get("team_domain")},
    }
    subject = form.get("channel_id") or form.get("user_id") or name
    event_id = stable_id(
        SOURCE,
        "command",
        form.get("team_id"),
        form.get("trigger_id"),
        command,
        form.get("text"),
        form.get("user_id"),
        form.get("channel_id"),
    )
    return Event(
        id=event_id,
        source=SOURCE,
        type=COMMAND_PREFIX + type_word(name),
        subject=check_attribute(subject[:256], "subject", None),
        data=data,
    )


def parse_form(body: bytes) -> dict[str, str]:
    """The fields of a form body (the first of a repeated name). EventError if it is none."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=100)
    except UnicodeDecodeError:
        raise EventError("the body is not valid UTF-8") from None
    except ValueError:
        raise EventError("the form has more than 100 fields") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


def events_of(form: Mapping[str, str]) -> list[Event]:
    """The events of a verified form: an interactivity payload or a slash command."""
    if "payload" in form:
        try:
            payload = parse_json(form["payload"].encode("utf-8"))
        except EventError as exc:
            raise EventError(f"the form field 'payload' holds no valid JSON: {exc}") from None
        if not isinstance(payload, Mapping):
            raise EventError("the form field 'payload' must hold a JSON object")
        return action_events(payload)  # each event's data walked by check_value
    if "command" in form:
        return [command_event(form)]
    raise EventError(
        "the form has neither 'payload' (a button press) nor 'command' (a slash command)"
    )


def _is_ssl_check(body: bytes) -> bool:
    """Whether the body is Slack's certificate check (`ssl_check=1`, sent unsigned when a
    slash command's URL is saved): answered 200, and nothing is stored."""
    try:
        form = parse_form(body)
    except EventError:
        return False
    return form.get("ssl_check") == "1" and "payload" not in form and "command" not in form


def _ephemeral(event: Event, ids: str) -> JSONResponse:
    """The answer to a slash command: shown only to the person who typed it."""
    data = _obj(event.data)
    return JSONResponse(
        {
            "response_type": "ephemeral",
            "text": f"Received {data.get('command')}: lytbridge runs the rules on {event.type}.",
        },
        headers={"x-bridge-events": ids},
    )


async def receive(request: Request) -> Response:
    """POST /hooks/slack."""
    ingress: Ingress = request.app.state.ingress
    settings = ingress.settings
    secret = settings.slack_signing_secret
    if secret is None:
        return error(
            404,
            "unknown_source",
            "POST /hooks/slack is off: set SLACK_SIGNING_SECRET to your Slack app's "
            "signing secret (docs/slack.md)",
        )
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != FORM:
        return error(
            415,
            "unsupported_media_type",
            f"content type {content_type or '(none)'!r} is not what Slack sends; expected {FORM}",
        )
    limit = settings.max_body_bytes
    body = await body_or_error(request, limit)
    if not isinstance(body, bytes):
        return body
    if b"ssl_check=1" in body and _is_ssl_check(body):
        return Response(status_code=200)  # Slack checking the certificate: nothing to store
    try:
        verify_slack(secret.get(), request.headers, body)
    except SignatureError as exc:
        refusals.warn(SOURCE, str(exc))
        return error(401, "bad_signature", str(exc))
    request.scope[metrics.VERIFIED] = True
    try:
        events = events_of(parse_form(body))
    except EventError as exc:
        return error(400, "bad_event", str(exc))
    if len(events) > 1 and stored_size(events, 2 * limit) > 2 * limit:
        return error(413, "events_too_large", "the actions of this payload are too large to store")
    try:
        admitted = await ingress.store.admit(events)
    except StoreUnavailable as exc:
        logger.error("Slack request not stored: %s", exc)
        return error(503, "store_unavailable", "events cannot be stored right now; retry later")
    accepted = [a.id for a in admitted if a.new]
    metrics.webhook_events(ingress.metrics, SOURCE, len(accepted), len(admitted) - len(accepted))
    # The ids the events are stored under (for `bridge send`); Slack ignores the header.
    ids = " ".join(a.id for a in admitted)
    if events[0].type.startswith(COMMAND_PREFIX):
        return _ephemeral(events[0], ids)
    return Response(status_code=200, headers={"x-bridge-events": ids})
