"""A local Slack Web API (chat.postMessage, auth.test) that answers as Slack does.

Shapes follow Slack's documentation: errors are HTTP 200 with `{"ok": false, "error"}`;
rate limits are HTTP 429 with `Retry-After`. Scenarios (rate limits, server errors, a
given Slack error) are queued through `/_sandbox/scenario`; `/_sandbox/messages` lists what
was posted.

A strict sandbox (the default, for tests) knows a fixed set of channels and answers
`channel_not_found` for any other, as Slack does for a channel the bot is not in; an open one
(`bridge dev`) creates a channel on its first post, so a newcomer's own rule just works.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.sandbox.slack_blocks import block_lines

DEFAULT_TOKEN = "xoxb-sandbox-token"  # noqa: S105 - the sandbox's own demo token
DEFAULT_CHANNELS = ("general", "random", "creative", "marketing", "sales", "alerts", "ops")
ARCHIVED_CHANNELS = ("old-campaigns",)
MAX_TEXT = 40_000
MAX_BLOCKS = 50
SCENARIOS = ("rate_limit", "status", "error", "hang", "delay")
# What an open sandbox takes for a channel name (Slack's own rules are stricter).
_CHANNEL_NAME = re.compile(r"^[^\s#,]{1,80}$")
# How much of a message the printed form shows.
MAX_LINE, MAX_LINES = 300, 40


@dataclass
class Scenario:
    """A queued misbehaviour: the next `count` calls answer this way."""

    kind: str  # "rate_limit", "status", "error", "hang" or "delay"
    count: int = 1
    retry_after: int = 1
    status: int = 500
    error: str = "internal_error"
    channel: str | None = None
    seconds: float = 30.0


@dataclass
class SlackSandbox:
    """State of the sandbox: channels, posted messages, the request log, scenarios."""

    tokens: tuple[str, ...] = (DEFAULT_TOKEN,)
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    archived: tuple[str, ...] = ARCHIVED_CHANNELS
    # Strict: unknown channels are `channel_not_found`. Open: created on their first post.
    strict: bool = True
    # Messages per second allowed per channel (Slack: about 1, short bursts tolerated);
    # None lets everything through.
    per_channel_rate: float | None = None
    per_channel_burst: int = 5
    on_message: Callable[[dict[str, Any]], None] | None = None
    # Called with (name, id) when an open sandbox creates a channel.
    on_channel: Callable[[str, str], None] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=10_000))
    scenarios: list[Scenario] = field(default_factory=list)
    # Requests held open by a "hang" scenario right now.
    hanging: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ts: Iterable[int] = field(default_factory=itertools.count)
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Channel name → id, in the order the channels came to exist.
    _ids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in (*self.channels, *self.archived):
            self._ids.setdefault(name, f"C{len(self._ids) + 1:08d}")

    def channel_id(self, name: str) -> str | None:
        """The C… id of a channel given as `#name`, `name` or its id; None if unknown."""
        bare = name.lstrip("#")
        with self._lock:
            if bare in self._ids:
                return self._ids[bare]
            return bare if bare in self._ids.values() else None

    def channel_name(self, channel_id: str) -> str:
        """`#name` of a channel id (the id itself if unknown)."""
        with self._lock:
            for name, cid in self._ids.items():
                if cid == channel_id:
                    return f"#{name}"
        return channel_id

    def open_channel(self, name: str) -> str | None:
        """The id of a channel; an open sandbox creates one it does not know yet."""
        known = self.channel_id(name)
        if known is not None or self.strict:
            return known
        bare = name.lstrip("#")
        if not _CHANNEL_NAME.match(bare):
            return None
        with self._lock:
            created = bare not in self._ids
            cid = self._ids.setdefault(bare, f"C{len(self._ids) + 1:08d}")
            if created:
                self.channels = (*self.channels, bare)
        if created and self.on_channel is not None:
            self.on_channel(bare, cid)
        return cid

    def is_archived(self, channel_id: str) -> bool:
        return any(self._ids.get(name) == channel_id for name in self.archived)

    def describe(self, message: dict[str, Any]) -> list[str]:
        """A posted message as a person reads it: channel and text, then its blocks' text."""
        thread = f" (thread {message['thread_ts']})" if message.get("thread_ts") else ""
        first, *rest = str(message.get("text") or "").splitlines() or [""]
        head = f"{self.channel_name(message['channel'])}{thread}: {first}"
        lines = [head.rstrip(), *("  " + line for line in rest)]
        blocks = message.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except ValueError:
                blocks = None
        for block in blocks if isinstance(blocks, list) else []:
            lines += ["  │ " + line for line in block_lines(block)]
        shown = [line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…" for line in lines]
        if len(shown) > MAX_LINES:
            shown = [*shown[: MAX_LINES - 1], f"  │ … {len(shown) - MAX_LINES + 1} more lines"]
        return shown

    def next_ts(self) -> str:
        with self._lock:
            seq = next(iter(self._ts))
        return f"{int(time.time())}.{seq % 1_000_000:06d}"

    def take_scenario(self, channel: str | None) -> Scenario | None:
        with self._lock:
            for scenario in self.scenarios:
                if scenario.channel in (None, channel):
                    scenario.count -= 1
                    if scenario.count <= 0:
                        self.scenarios.remove(scenario)
                    return scenario
        return None

    def admit(self, channel_id: str) -> float:
        """0 when a message may go to the channel now, else the seconds to wait."""
        if self.per_channel_rate is None:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(channel_id, (float(self.per_channel_burst), now))
            tokens = min(self.per_channel_burst, tokens + (now - last) * self.per_channel_rate)
            if tokens < 1:
                self._buckets[channel_id] = (tokens, now)
                return (1 - tokens) / self.per_channel_rate
            self._buckets[channel_id] = (tokens - 1, now)
            return 0.0

    def received(self, channel: str | None = None) -> list[dict[str, Any]]:
        """A copy of the posted messages, optionally of one channel (`#name` or id)."""
        with self._lock:
            found = list(self.messages)
        if channel is None:
            return found
        cid = self.channel_id(channel)
        return [m for m in found if m["channel"] == cid]

    def reset(self) -> None:
        with self._lock:
            self.messages.clear()
            self.requests.clear()
            self.scenarios.clear()
            self._buckets.clear()


def _fail(error: str, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"ok": False, "error": error}, status_code=status, headers=headers)


async def _arguments(request: Request) -> dict[str, Any]:
    media = request.headers.get("content-type", "").split(";")[0].strip()
    body = await request.body()
    if media == "application/json":
        try:
            value = json.loads(body or b"{}")
        except ValueError:
            return {"__invalid__": True}
        return value if isinstance(value, dict) else {"__invalid__": True}
    form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    form.update({k: v for k, v in request.query_params.items() if k not in form})
    return form


def _token(request: Request, args: dict[str, Any]) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    token = args.get("token")
    return str(token) if token else None


def _valid_blocks(blocks: Any) -> bool:
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except ValueError:
            return False
    return (
        isinstance(blocks, list)
        and 0 < len(blocks) <= MAX_BLOCKS
        and all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks)
    )


def create_slack_app(sandbox: SlackSandbox | None = None) -> Starlette:
    """The sandbox as a Starlette app; its state is `app.state.sandbox`."""
    state = sandbox or SlackSandbox()

    def log(request: Request, status: int, error: str | None) -> None:
        entry = {
            "at": time.time(),
            "method": request.method,
            "path": request.url.path,
            "status": status,
            "error": error,
        }
        with state._lock:
            state.requests.append(entry)

    async def post_message(request: Request) -> Response:
        args = await _arguments(request)
        channel = args.get("channel")
        cid = state.channel_id(str(channel)) if channel else None
        scenario = state.take_scenario(cid)
        if scenario is not None and scenario.kind == "delay":
            # A slow Slack: the message is posted, after `seconds`.
            await asyncio.sleep(min(scenario.seconds, 120))
            response: Response = _post_message(request, args, None)
        elif scenario is not None and scenario.kind == "hang":
            # A request that never completes in time: the client gives up or dies first.
            with state._lock:
                state.hanging += 1
            try:
                await asyncio.sleep(min(scenario.seconds, 120))
            finally:
                with state._lock:
                    state.hanging -= 1
            response = Response("gateway timeout", status_code=504)
        else:
            response = _post_message(request, args, scenario)
        body = response.body
        error = None
        if b'"ok":false' in body:
            error = json.loads(bytes(body)).get("error")
        log(request, response.status_code, error)
        return response

    def _post_message(
        request: Request, args: dict[str, Any], scenario: Scenario | None
    ) -> Response:
        if args.get("__invalid__"):
            return _fail("invalid_json")
        token = _token(request, args)
        if not token:
            return _fail("not_authed")
        if token not in state.tokens:
            return _fail("invalid_auth")
        channel = args.get("channel")
        cid = state.open_channel(str(channel)) if channel else None
        if scenario is not None:
            if scenario.kind == "rate_limit":
                return _fail("ratelimited", 429, {"Retry-After": str(scenario.retry_after)})
            if scenario.kind == "status":
                return Response("upstream failure", status_code=scenario.status)
            return _fail(scenario.error)
        if cid is None:
            return _fail("channel_not_found")
        if state.is_archived(cid):
            return _fail("is_archived")
        text = args.get("text")
        blocks = args.get("blocks")
        if not text and not blocks:
            return _fail("no_text")
        if blocks is not None and not _valid_blocks(blocks):
            return _fail("invalid_blocks")
        if text is not None and len(str(text)) > MAX_TEXT:
            return _fail("msg_too_long")
        wait = state.admit(cid)
        if wait > 0:
            return _fail("ratelimited", 429, {"Retry-After": str(max(1, round(wait)))})
        ts = state.next_ts()
        message: dict[str, Any] = {
            "type": "message",
            "user": "U0LYTBRIDGE",
            "bot_id": "B0LYTBRIDGE",
            "text": text or "",
            "ts": ts,
        }
        if blocks is not None:
            message["blocks"] = blocks
        if args.get("thread_ts"):
            message["thread_ts"] = str(args["thread_ts"])
        record = {"channel": cid, "channel_name": str(channel), **message}
        with state._lock:
            state.messages.append(record)
        if state.on_message is not None:
            state.on_message(record)
        return JSONResponse({"ok": True, "channel": cid, "ts": ts, "message": message})

    async def auth_test(request: Request) -> Response:
        args = await _arguments(request)
        token = _token(request, args)
        if not token:
            return _fail("not_authed")
        if token not in state.tokens:
            return _fail("invalid_auth")
        return JSONResponse(
            {
                "ok": True,
                "url": "https://sandbox.slack.local/",
                "team": "Sandbox",
                "user": "lytbridge",
                "team_id": "T0SANDBOX",
                "user_id": "U0LYTBRIDGE",
                "bot_id": "B0LYTBRIDGE",
            }
        )

    async def messages(request: Request) -> Response:
        if request.method == "DELETE":
            state.reset()
            return JSONResponse({"ok": True})
        return JSONResponse({"messages": state.received(request.query_params.get("channel"))})

    async def requests_log(request: Request) -> Response:
        with state._lock:
            return JSONResponse({"requests": list(state.requests)})

    async def scenario(request: Request) -> Response:
        raw = await request.json()
        kind = raw.get("kind")
        if kind not in SCENARIOS:
            return JSONResponse({"error": "kind must be one of " + ", ".join(SCENARIOS)}, 400)
        channel = raw.get("channel")
        item = Scenario(
            kind=kind,
            count=int(raw.get("count", 1)),
            retry_after=int(raw.get("retry_after", 1)),
            status=int(raw.get("status", 500)),
            error=str(raw.get("error", "internal_error")),
            channel=state.channel_id(channel) if channel else None,
            seconds=float(raw.get("seconds", 30)),
        )
        with state._lock:
            state.scenarios.append(item)
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/api/chat.postMessage", post_message, methods=["POST"]),
            Route("/api/auth.test", auth_test, methods=["POST", "GET"]),
            Route("/_sandbox/messages", messages, methods=["GET", "DELETE"]),
            Route("/_sandbox/requests", requests_log, methods=["GET"]),
            Route("/_sandbox/scenario", scenario, methods=["POST"]),
        ]
    )
    app.state.sandbox = state
    return app
