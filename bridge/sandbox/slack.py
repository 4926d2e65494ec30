"""A local Slack Web API (chat.postMessage with threads, chat.update, chat.getPermalink,
auth.test) that answers as Slack does.

Shapes follow Slack's documentation: errors are HTTP 200 with `{"ok": false, "error"}`;
rate limits are HTTP 429 with `Retry-After`. Scenarios (rate limits, server errors, a
given Slack error) are queued through `/_sandbox/scenario`; `/_sandbox/messages` lists what
was posted (edited messages with their `edited` mark and earlier versions in `history`),
`DELETE /_sandbox/messages/{channel}/{ts}` deletes one as a person would, and
`POST /_sandbox/messages` adds one written by a person (bridge/sandbox/slack_chat.py).
`POST /_sandbox/press` presses a button of a posted message: the sandbox sends the app's
Request URL the signed callback Slack would (bridge/sandbox/slack_press.py).

A strict sandbox (the default, for tests) knows a fixed set of channels and answers
`channel_not_found` for any other, as Slack does for a channel the bot is not in; an open one
(`bridge dev`) creates a channel on its first post, so a newcomer's own rule just works.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.sandbox.slack_blocks import block_lines
from bridge.sandbox.slack_chat import (
    PERSON,
    ChatMethods,
    arguments,
    auth_error,
    fail,
    new_record,
)
from bridge.sandbox.slack_press import Interactivity

DEFAULT_TOKEN = "xoxb-sandbox-token"  # noqa: S105 - the sandbox's own demo token
DEFAULT_CHANNELS = ("general", "random", "creative", "marketing", "sales", "alerts", "ops")
ARCHIVED_CHANNELS = ("old-campaigns",)
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
    # The Web API method it is for; None: chat.postMessage.
    method: str | None = None


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
    # Interactivity (bridge/sandbox/slack_press.py): where a button press is sent (the app's
    # Request URL), the signing secret it is signed with, and how long Slack waits (3 s).
    interactivity_url: str | None = None
    signing_secret: str | None = field(default=None, repr=False)
    interactivity_timeout: float = 3.0
    # Called with the request log entry of each callback sent and its answer.
    on_callback: Callable[[dict[str, Any]], None] | None = None
    # What the app posted to the response_url of a press, in order.
    responses: list[dict[str, Any]] = field(default_factory=list)
    response_urls: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_callback: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    # Messages deleted through the sandbox control, as they were when deleted.
    deleted: list[dict[str, Any]] = field(default_factory=list)
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

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    def is_channel_id(self, value: str) -> bool:
        with self._lock:
            return value in self._ids.values()

    def find_locked(self, channel_id: str, ts: str) -> dict[str, Any] | None:
        """The live message `ts` of a channel (the caller holds `lock`)."""
        found = [m for m in self.messages if m["ts"] == ts and m["channel"] == channel_id]
        return found[-1] if found else None

    def find(self, channel_id: str, ts: str) -> dict[str, Any] | None:
        """A copy of the live message `ts` of a channel (an id), or None."""
        with self._lock:
            found = self.find_locked(channel_id, ts)
            return None if found is None else {**found}

    def delete(self, channel: str, ts: str) -> bool:
        """Delete a message (channel as `#name` or id), as a person would in Slack."""
        cid = self.channel_id(channel)
        with self._lock:
            found = None if cid is None else self.find_locked(cid, ts)
            if found is None:
                return False
            self.messages.remove(found)
            self.deleted.append(found)
        return True

    def add_message(self, channel: str, text: str, user: Any = None) -> dict[str, Any] | None:
        """A message a person (not the bot) posted; None for an unknown channel."""
        cid = self.channel_id(channel)
        if cid is None:
            return None
        record = new_record(cid, channel, self.next_ts(), text, str(user or PERSON))
        with self._lock:
            self.messages.append(record)
        return dict(record)

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
        thread = ""
        if message.get("thread_ts") not in (None, message["ts"]):
            broadcast = message.get("subtype") == "thread_broadcast"
            also = ", also sent to the channel" if broadcast else ""
            thread = f" (thread {message['thread_ts']}{also})"
        if message.get("edited"):
            thread += " (edited)"
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

    def next_ts_locked(self) -> str:
        seq = next(iter(self._ts))
        return f"{int(time.time())}.{seq % 1_000_000:06d}"

    def next_ts(self) -> str:
        with self._lock:
            return self.next_ts_locked()

    def take_scenario(
        self, channel: str | None, method: str = "chat.postMessage"
    ) -> Scenario | None:
        with self._lock:
            for scenario in self.scenarios:
                if (scenario.method or "chat.postMessage") != method:
                    continue
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
            found = [dict(m) for m in self.messages]
        if channel is None:
            return found
        cid = self.channel_id(channel)
        return [m for m in found if m["channel"] == cid]

    def reset(self) -> None:
        with self._lock:
            self.messages.clear()
            self.deleted.clear()
            self.requests.clear()
            self.scenarios.clear()
            self._buckets.clear()
            self.responses.clear()
            self.response_urls.clear()
            self.last_callback = None


def create_slack_app(sandbox: SlackSandbox | None = None) -> Starlette:
    """The sandbox as a Starlette app; its state is `app.state.sandbox`."""
    state = sandbox or SlackSandbox()

    def log(request: Request, response: Response) -> None:
        """One request log entry; an answered message's channel and ts with it."""
        body = bytes(response.body)
        answer = json.loads(body) if body.startswith(b"{") else {}
        entry = {
            "at": time.time(),
            "method": request.method,
            "path": request.url.path,
            "status": response.status_code,
            "error": answer.get("error"),
        }
        if answer.get("ok") and answer.get("ts"):
            entry.update(channel=answer.get("channel"), ts=answer["ts"])
        with state._lock:
            state.requests.append(entry)

    chat = ChatMethods(state, log)
    interactivity = Interactivity(state)

    async def auth_test(request: Request) -> Response:
        args = await arguments(request)
        error = auth_error(state, request, args)
        if error:
            return fail(error)
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

    async def responses(request: Request) -> Response:
        with state._lock:
            return JSONResponse({"responses": list(state.responses)})

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
            method=str(raw["method"]) if raw.get("method") else None,
        )
        with state._lock:
            state.scenarios.append(item)
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/api/chat.postMessage", chat.post_message, methods=["POST"]),
            Route("/api/chat.update", chat.update, methods=["POST"]),
            Route("/api/chat.getPermalink", chat.get_permalink, methods=["GET", "POST"]),
            Route("/api/auth.test", auth_test, methods=["POST", "GET"]),
            Route("/_sandbox/messages", messages, methods=["GET", "DELETE"]),
            Route("/_sandbox/messages", chat.person_control, methods=["POST"]),
            Route("/_sandbox/messages/{channel}/{ts}", chat.delete_control, methods=["DELETE"]),
            Route("/_sandbox/requests", requests_log, methods=["GET"]),
            Route("/_sandbox/scenario", scenario, methods=["POST"]),
            Route("/_sandbox/interactivity", interactivity.configure, methods=["GET", "POST"]),
            Route("/_sandbox/press", interactivity.press, methods=["POST"]),
            Route("/_sandbox/press/retry", interactivity.retry, methods=["POST"]),
            Route("/_sandbox/respond/{token}", interactivity.respond, methods=["POST"]),
            Route("/_sandbox/responses", responses, methods=["GET"]),
        ]
    )
    app.state.sandbox = state
    return app
