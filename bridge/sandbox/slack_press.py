"""The Slack sandbox as Slack's interactivity sender: a person presses a button of a stored
message, and the sandbox posts what Slack would to the app's Request URL.

That is a `block_actions` payload (docs.slack.dev, "block_actions payloads"), sent as a
form (`payload=<JSON>`) with `X-Slack-Request-Timestamp` and `X-Slack-Signature` (`v0=` and
the hex HMAC-SHA256 of `v0:{timestamp}:{body}` with the app's signing secret). The answer
(status, body) goes to the request log. Controls:

- `POST /_sandbox/interactivity {url, signing_secret}`: the Request URL and signing secret
  (also the sandbox's own arguments); `GET` shows the URL and whether a secret is set;
- `POST /_sandbox/press {channel, ts, action_id, user?}`: press that button;
- `POST /_sandbox/press/retry {reason?}`: deliver the last callback again as Slack's retry
  of a slow or failed delivery (the same body, signed anew, with `X-Slack-Retry-Num` and
  `X-Slack-Retry-Reason`);
- the payload's `response_url`, `POST /_sandbox/respond/{token}`, takes what the app sends
  there (listed by `GET /_sandbox/responses`): `replace_original` edits the message,
  `delete_original` deletes it, `response_type: in_channel` posts a new one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.sandbox.slack_chat import BOT_USER, PERSON, blocks_of, new_record

if TYPE_CHECKING:
    from bridge.sandbox.slack import SlackSandbox

TEAM = {"id": "T0SANDBOX", "domain": "sandbox"}
APP_ID = "A0LYTBRIDGE"
# Slack's legacy verification token travels in every payload; deprecated, and fake here.
VERIFICATION_TOKEN = "sandbox-verification-token"  # noqa: S105
PERSON_NAME = "person"
FORM = "application/x-www-form-urlencoded"
# Why Slack retries a delivery (X-Slack-Retry-Reason).
RETRY_REASONS = ("http_timeout", "http_error", "connection_failed", "ssl_error", "unknown_error")
# A response_url takes at most this many posts (Slack: 5 within 30 minutes).
RESPONSE_USES = 5
MAX_BODY_LOGGED = 2000
PRESS_USAGE = "send JSON: {channel, ts, action_id, user}"
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """Slack's `X-Slack-Signature` of a body: `v0=` + hex HMAC-SHA256 of `v0:{ts}:{body}`."""
    signed = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def block_id_of(block: dict[str, Any], ts: str, index: int) -> str:
    """A block's `block_id`; Slack makes one up for a block sent without (stable here)."""
    if isinstance(block.get("block_id"), str) and block["block_id"]:
        return str(block["block_id"])
    digest = hashlib.sha256(f"{ts}:{index}".encode()).digest()
    return base64.b32encode(digest).decode()[:5]


def buttons(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The buttons of a message as (block_id, element): in actions blocks and as accessories."""
    found: list[tuple[str, dict[str, Any]]] = []
    for index, block in enumerate(blocks_of(message.get("blocks")) or []):
        if not isinstance(block, dict):
            continue
        elements = block.get("elements") if block.get("type") == "actions" else None
        candidates = elements if isinstance(elements, list) else [block.get("accessory")]
        for element in candidates:
            if isinstance(element, dict) and element.get("type") == "button":
                found.append((block_id_of(block, str(message.get("ts")), index), element))
    return found


def person(raw: Any) -> dict[str, str] | None:
    """Who presses, as Slack's `user`: a name, a U… id, or {id, name}; None if unreadable."""
    if raw is None:
        user_id, name = PERSON, PERSON_NAME
    elif isinstance(raw, str) and raw.strip():
        text = raw.strip()
        user_id = text if _USER_ID.match(text) else ""
        name = text.lower() if user_id else text
    elif isinstance(raw, dict) and (raw.get("id") or raw.get("name") or raw.get("username")):
        user_id = str(raw.get("id") or "")
        name = str(raw.get("name") or raw.get("username") or user_id.lower())
    else:
        return None
    if not user_id:  # the same name is always the same person
        user_id = "U0" + hashlib.sha256(name.encode()).hexdigest()[:8].upper()
    return {"id": user_id, "username": name, "name": name, "team_id": TEAM["id"]}


def shown_message(message: dict[str, Any]) -> dict[str, Any]:
    """A stored message as Slack puts it in a payload (its blocks as a list)."""
    shown = {k: v for k, v in message.items() if k not in ("channel", "channel_name", "history")}
    blocks = blocks_of(message.get("blocks"))
    if blocks is not None:
        shown["blocks"] = blocks
    shown.setdefault("team", TEAM["id"])
    if message.get("user") == BOT_USER:
        shown.setdefault("app_id", APP_ID)
    return shown


def block_actions(
    message: dict[str, Any],
    block_id: str,
    button: dict[str, Any],
    user: dict[str, str],
    channel_name: str,
    response_url: str,
) -> dict[str, Any]:
    """The `block_actions` payload of one press of `button` on `message`."""
    now = time.time()
    action: dict[str, Any] = {
        "action_id": button.get("action_id"),
        "block_id": block_id,
        "text": button.get("text"),
        "type": "button",
        "action_ts": f"{now:.6f}",
    }
    for name in ("value", "style"):
        if button.get(name) is not None:
            action[name] = button[name]
    return {
        "type": "block_actions",
        "user": user,
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": message["channel"],
            "is_ephemeral": False,
        },
        "trigger_id": f"{int(now)}.{secrets.randbelow(10**11)}.{secrets.token_hex(16)}",
        "team": TEAM,
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": message["channel"], "name": channel_name.lstrip("#")},
        "message": shown_message(message),
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status)


async def _json(request: Request) -> dict[str, Any] | None:
    """A control's JSON object body (whatever its content type: curl -d sends a form's)."""
    try:
        raw = json.loads(await request.body() or b"{}")
    except ValueError:
        return None
    return raw if isinstance(raw, dict) else None


class Interactivity:
    """The press, retry, configuration and response_url endpoints of one sandbox."""

    def __init__(self, state: SlackSandbox) -> None:
        self.state = state

    async def configure(self, request: Request) -> Response:
        state = self.state
        if request.method == "POST":
            raw = await _json(request)
            url = raw.get("url") if raw else None
            secret = raw.get("signing_secret") if raw else None
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                return _error("send JSON: {url: the Request URL (http…), signing_secret}", 400)
            if not isinstance(secret, str) or not secret:
                return _error("signing_secret is required: Slack signs every callback", 400)
            with state.lock:
                state.interactivity_url, state.signing_secret = url, secret
        return JSONResponse(
            {
                "url": state.interactivity_url,
                "signing_secret": "set" if state.signing_secret else None,
            }
        )

    async def press(self, request: Request) -> Response:
        """POST /_sandbox/press: a person presses a button; Slack's callback goes out."""
        state = self.state
        raw = await _json(request)
        if raw is None or not all(isinstance(raw.get(k), str) for k in ("channel", "ts")):
            return _error(PRESS_USAGE, 400)
        action_id = raw.get("action_id")
        if not isinstance(action_id, str) or not action_id:
            return _error(PRESS_USAGE, 400)
        user = person(raw.get("user"))
        if user is None:
            return _error("user must be a name, a U… id or {id, name}", 400)
        channel, ts = raw["channel"], raw["ts"]
        cid = state.channel_id(channel)
        message = None if cid is None else state.find(cid, ts)
        if message is None:
            return _error(f"no message {ts} in {channel}", 404)
        found = [(b, e) for b, e in buttons(message) if e.get("action_id") == action_id]
        if not found:
            names = ", ".join(str(e.get("action_id")) for _, e in buttons(message)) or "none"
            return _error(
                f"message {ts} in {channel} has no button {action_id!r} (its buttons: {names})",
                404,
            )
        problem = self.not_ready()
        if problem:
            return _error(problem, 409)
        token = secrets.token_urlsafe(12)
        base = str(request.base_url).rstrip("/")
        response_url = f"{base}/_sandbox/respond/{token}"
        block_id, button = found[0]
        name = state.channel_name(message["channel"])
        payload = block_actions(message, block_id, button, user, name, response_url)
        body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()
        with state.lock:
            state.response_urls[token] = {"channel": message["channel"], "ts": ts, "uses": 0}
            state.last_callback = {"body": body, "action_id": action_id, "retries": 0}
        delivery = await self.deliver(body, action_id)
        return JSONResponse({**delivery, "payload": payload})

    async def retry(self, request: Request) -> Response:
        """POST /_sandbox/press/retry: Slack delivers the last callback once more."""
        raw = await _json(request)
        reason = (raw or {}).get("reason", "http_timeout")
        if raw is None or reason not in RETRY_REASONS:
            return _error("send JSON: {reason}, one of " + ", ".join(RETRY_REASONS), 400)
        with self.state.lock:
            last = self.state.last_callback
            if last is not None:
                last["retries"] += 1
                last = dict(last)
        if last is None:
            return _error("no callback sent yet: press a button first (POST /_sandbox/press)", 409)
        problem = self.not_ready()
        if problem:
            return _error(problem, 409)
        delivery = await self.deliver(last["body"], last["action_id"], last["retries"], reason)
        return JSONResponse(delivery)

    def not_ready(self) -> str | None:
        if not self.state.interactivity_url:
            return "no Request URL: POST /_sandbox/interactivity {url, signing_secret} first"
        if not self.state.signing_secret:
            return "no signing secret: POST /_sandbox/interactivity {url, signing_secret} first"
        return None

    async def deliver(
        self, body: bytes, action_id: str, retry: int = 0, reason: str = ""
    ) -> dict[str, Any]:
        """Send one signed callback; the log entry of its answer."""
        state = self.state
        url, secret = str(state.interactivity_url), str(state.signing_secret)
        stamp = int(time.time())
        headers = {
            "content-type": FORM,
            "user-agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "x-slack-request-timestamp": str(stamp),
            "x-slack-signature": sign(secret, stamp, body),
        }
        if retry:
            headers.update({"x-slack-retry-num": str(retry), "x-slack-retry-reason": reason})
        entry: dict[str, Any] = {
            "at": time.time(),
            "method": "POST",
            "path": url,
            "direction": "out",
            "kind": "block_actions",
            "action_id": action_id,
            "retry_num": retry,
            "status": None,
            "body": "",
            "error": None,
        }
        timeout = state.interactivity_timeout
        try:
            async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
                answer = await client.post(url, content=body, headers=headers)
            entry.update(
                status=answer.status_code,
                body=answer.text[:MAX_BODY_LOGGED],
                headers={k: v for k, v in answer.headers.items() if k.startswith("x-")},
            )
        except httpx.TimeoutException:
            entry["error"] = f"no answer within {timeout:g} s: Slack shows the person an error"
        except httpx.HTTPError as exc:
            entry["error"] = f"the Request URL could not be reached: {exc or type(exc).__name__}"
        entry["ok"] = entry["status"] is not None and 200 <= entry["status"] < 300
        with state.lock:
            state.requests.append(entry)
        if state.on_callback is not None:
            state.on_callback(entry)
        return {k: v for k, v in entry.items() if k not in ("at", "method", "direction", "kind")}

    async def respond(self, request: Request) -> Response:
        """POST /_sandbox/respond/{token}: what the app sends to a press's response_url."""
        state = self.state
        token = request.path_params["token"]
        raw = await _json(request)
        if raw is None:
            return JSONResponse({"ok": False, "error": "invalid_payload"}, 400)
        with state.lock:
            hook = state.response_urls.get(token)
            spent = hook is not None and hook["uses"] >= RESPONSE_USES
            if hook is not None and not spent:
                hook["uses"] += 1
        if hook is None:
            return JSONResponse({"ok": False, "error": "expired_url"}, 404)
        if spent:
            return JSONResponse({"ok": False, "error": "used_url"}, 410)
        error = self.apply(hook["channel"], hook["ts"], raw)
        with state.lock:
            state.responses.append(
                {"at": time.time(), "channel": hook["channel"], "ts": hook["ts"], "body": raw}
            )
        if error:
            return JSONResponse({"ok": False, "error": error}, 404 if "found" in error else 400)
        return JSONResponse({"ok": True})

    def apply(self, channel_id: str, ts: str, raw: dict[str, Any]) -> str | None:
        """What a response does to the conversation; Slack's error, or None."""
        state = self.state
        if raw.get("delete_original") in (True, "true"):
            return None if state.delete(channel_id, ts) else "message_not_found"
        text, blocks = raw.get("text"), blocks_of(raw.get("blocks"))
        if not text and not blocks:
            return "no_text"
        if raw.get("replace_original") in (True, "true"):
            with state.lock:
                message = state.find_locked(channel_id, ts)
                if message is None:
                    return "message_not_found"
                before = {k: message[k] for k in ("text", "blocks") if k in message}
                message.setdefault("history", []).append(before)
                message["text"] = str(text or "")
                if blocks:
                    message["blocks"] = blocks
                else:
                    message.pop("blocks", None)
                message["edited"] = {"user": BOT_USER, "ts": state.next_ts_locked()}
                record = dict(message)
        elif raw.get("response_type") == "in_channel":
            name = state.channel_name(channel_id)
            with state.lock:
                record = new_record(channel_id, name, state.next_ts_locked(), text)
                if blocks:
                    record["blocks"] = blocks
                state.messages.append(record)
                record = dict(record)
        else:
            return None  # ephemeral: only the person who pressed sees it, nothing is kept
        if state.on_message is not None:
            state.on_message(record)
        return None
