"""The Slack sandbox's request parsing and its message methods beyond posting: threads,
chat.update, chat.getPermalink, and the controls that delete a message or post one as a
person (so tests can delete a thread's parent, or meet a message the bot may not edit).

Shapes follow Slack's documentation: `chat.update` needs the channel *id* and the message
`ts` and answers `{ok, channel, ts, text, message}`; `chat.getPermalink` answers
`{ok, channel, permalink}`; errors are HTTP 200 `{ok: false, error}`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

if TYPE_CHECKING:
    from bridge.sandbox.slack import Scenario, SlackSandbox

BOT_USER = "U0LYTBRIDGE"
BOT_ID = "B0LYTBRIDGE"
PERSON = "U0PERSON1"
MAX_TEXT = 40_000
MAX_BLOCKS = 50
PERMALINK_BASE = "https://sandbox.slack.local/archives"


def fail(error: str, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"ok": False, "error": error}, status_code=status, headers=headers)


async def arguments(request: Request) -> dict[str, Any]:
    """A Web API call's arguments: a JSON body, or form fields and the query string."""
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


def token_of(request: Request, args: dict[str, Any]) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    token = args.get("token")
    return str(token) if token else None


def auth_error(state: SlackSandbox, request: Request, args: dict[str, Any]) -> str | None:
    """Slack's error for a call's token (or its unreadable body), None when it may proceed."""
    if args.get("__invalid__"):
        return "invalid_json"
    token = token_of(request, args)
    if not token:
        return "not_authed"
    return None if token in state.tokens else "invalid_auth"


def blocks_of(blocks: Any) -> list[Any] | None:
    """Blocks as a list (Slack takes them as JSON text too); None when they are not a list."""
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except ValueError:
            return None
    return blocks if isinstance(blocks, list) else None


def valid_blocks(blocks: Any, *, empty_ok: bool = False) -> bool:
    found = blocks_of(blocks)
    return (
        found is not None
        and (empty_ok or len(found) > 0)
        and len(found) <= MAX_BLOCKS
        and all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in found)
    )


def content_error(text: Any, blocks: Any, *, update: bool = False) -> str | None:
    """Slack's error for a message's text and blocks, None when they are fine."""
    if not text and not blocks_of(blocks):
        # chat.update may clear the blocks with [] while it sets the text.
        return "no_text"
    if blocks is not None and not valid_blocks(blocks, empty_ok=update):
        return "invalid_blocks"
    if text is not None and len(str(text)) > MAX_TEXT:
        return "msg_too_long"
    return None


def permalink(channel_id: str, ts: str, thread_ts: str | None = None) -> str:
    """Slack's link form: `…/archives/C…/p<ts without the dot>`, a reply's with its thread."""
    link = f"{PERMALINK_BASE}/{channel_id}/p{ts.replace('.', '')}"
    if thread_ts and thread_ts != ts:
        link += f"?thread_ts={thread_ts}&cid={channel_id}"
    return link


def thread_parent(state: SlackSandbox, channel_id: str, thread_ts: str) -> dict[str, Any] | None:
    """The live top-level message a reply's `thread_ts` names (a reply's ts names its
    thread's parent, as in Slack), or None: the reply is then `thread_not_found`.
    The caller holds the sandbox's lock."""
    found = state.find_locked(channel_id, thread_ts)
    if found is not None and found.get("thread_ts") not in (None, found["ts"]):
        found = state.find_locked(channel_id, str(found["thread_ts"]))
    return found


def note_reply(parent: dict[str, Any], reply: dict[str, Any]) -> None:
    """What Slack shows on a thread's parent once it has replies (call with the lock held)."""
    parent["thread_ts"] = parent["ts"]
    parent["reply_count"] = int(parent.get("reply_count", 0)) + 1
    parent["latest_reply"] = reply["ts"]
    users = parent.setdefault("reply_users", [])
    if reply["user"] not in users:
        users.append(reply["user"])


Log = Callable[[Request, Response], None]


class ChatMethods:
    """chat.update, chat.getPermalink and the message controls of one sandbox."""

    def __init__(self, state: SlackSandbox, log: Log) -> None:
        self.state, self.log = state, log

    async def hold(self, scenario: Scenario) -> bool:
        """A slow Slack ("delay": True afterwards means answer as usual) or one that never
        answers in time ("hang": the caller answers 504, if its client is still there)."""
        if scenario.kind == "delay":
            await asyncio.sleep(min(scenario.seconds, 120))
            return False
        with self.state.lock:
            self.state.hanging += 1
        try:
            await asyncio.sleep(min(scenario.seconds, 120))
        finally:
            with self.state.lock:
                self.state.hanging -= 1
        return True

    @staticmethod
    def misbehave(scenario: Scenario) -> Response:
        """The answer of a rate_limit, status or error scenario."""
        if scenario.kind == "rate_limit":
            return fail("ratelimited", 429, {"Retry-After": str(scenario.retry_after)})
        if scenario.kind == "status":
            return Response("upstream failure", status_code=scenario.status)
        return fail(scenario.error)

    async def _call(
        self, request: Request, method: str, answer: Callable[[dict[str, Any]], Response]
    ) -> Response:
        """Run one Web API method: its queued scenario first, then `answer`; logged."""
        args = await arguments(request)
        channel = str(args.get("channel") or "")
        scenario = self.state.take_scenario(self.state.channel_id(channel), method)
        response: Response
        if scenario is not None and scenario.kind in ("delay", "hang"):
            hung = await self.hold(scenario)
            response = Response("gateway timeout", 504) if hung else answer(args)
        elif scenario is not None and auth_error(self.state, request, args) is None:
            response = self.misbehave(scenario)
        else:
            response = answer(args)
        self.log(request, response)
        return response

    async def post_message(self, request: Request) -> Response:
        return await self._call(request, "chat.postMessage", lambda a: self._post(request, a))

    def _post(self, request: Request, args: dict[str, Any]) -> Response:
        state = self.state
        error = auth_error(state, request, args)
        if error:
            return fail(error)
        channel = args.get("channel")
        cid = state.open_channel(str(channel)) if channel else None
        if cid is None:
            return fail("channel_not_found")
        if state.is_archived(cid):
            return fail("is_archived")
        text, blocks = args.get("text"), args.get("blocks")
        problem = content_error(text, blocks)
        if problem:
            return fail(problem)
        thread_ts = str(args["thread_ts"]) if args.get("thread_ts") else None
        if thread_ts is not None:
            with state.lock:
                if thread_parent(state, cid, thread_ts) is None:
                    return fail("thread_not_found")
        wait = state.admit(cid)
        if wait > 0:
            return fail("ratelimited", 429, {"Retry-After": str(max(1, round(wait)))})
        with state.lock:
            record = new_record(cid, str(channel), state.next_ts_locked(), text)
            if blocks is not None:
                record["blocks"] = blocks
            if thread_ts is not None:
                # Checked again under the lock: the parent may have been deleted meanwhile.
                parent = thread_parent(state, cid, thread_ts)
                if parent is None:
                    return fail("thread_not_found")
                record["thread_ts"] = parent["ts"]
                record["parent_user_id"] = parent["user"]
                if args.get("reply_broadcast") in (True, "true", "1", 1):
                    record["subtype"] = "thread_broadcast"
                note_reply(parent, record)
            state.messages.append(record)
            stored = {**record}
        message = {k: v for k, v in stored.items() if k not in ("channel", "channel_name")}
        if state.on_message is not None:
            state.on_message(stored)
            # What a hook adds is served with the message (the benchmarks stamp
            # `received_at`), never in Slack's answer.
            added = {k: v for k, v in stored.items() if k not in record}
            if added:
                with state.lock:
                    record.update(added)
        return JSONResponse({"ok": True, "channel": cid, "ts": stored["ts"], "message": message})

    async def update(self, request: Request) -> Response:
        return await self._call(request, "chat.update", lambda a: self._update(request, a))

    def _update(self, request: Request, args: dict[str, Any]) -> Response:
        state = self.state
        error = auth_error(state, request, args)
        if error:
            return fail(error)
        channel, ts = str(args.get("channel") or ""), str(args.get("ts") or "")
        # chat.update takes the channel id that chat.postMessage answered, not a #name.
        if not state.is_channel_id(channel):
            return fail("channel_not_found")
        if not ts:
            return fail("message_not_found")
        text, blocks = args.get("text"), args.get("blocks")
        problem = content_error(text, blocks, update=True)
        if problem:
            return fail(problem)
        with state.lock:
            message = state.find_locked(channel, ts)
            if message is None:
                return fail("message_not_found")
            if message.get("user") != BOT_USER:
                return fail("cant_update_message")
            before = {k: message[k] for k in ("text", "blocks") if k in message}
            message.setdefault("history", []).append(before)
            message["text"] = str(text or "")
            if blocks is not None:
                found = blocks_of(blocks) or []
                if found:
                    message["blocks"] = found
                else:
                    message.pop("blocks", None)
            message["edited"] = {"user": BOT_USER, "ts": state.next_ts_locked()}
            record = dict(message)
        if state.on_message is not None:
            state.on_message(record)
        shown = {k: v for k, v in record.items() if k not in ("channel", "channel_name", "history")}
        return JSONResponse(
            {"ok": True, "channel": channel, "ts": ts, "text": record["text"], "message": shown}
        )

    async def get_permalink(self, request: Request) -> Response:
        return await self._call(request, "chat.getPermalink", lambda a: self._permalink(request, a))

    def _permalink(self, request: Request, args: dict[str, Any]) -> Response:
        state = self.state
        error = auth_error(state, request, args)
        if error:
            return fail(error)
        channel = str(args.get("channel") or "")
        if not state.is_channel_id(channel):
            return fail("channel_not_found")
        message = state.find(channel, str(args.get("message_ts") or ""))
        if message is None:
            return fail("message_not_found")
        thread_ts = message.get("thread_ts")
        link = permalink(channel, message["ts"], str(thread_ts) if thread_ts else None)
        return JSONResponse({"ok": True, "channel": channel, "permalink": link})

    async def delete_control(self, request: Request) -> Response:
        """DELETE /_sandbox/messages/{channel}/{ts}: the message is gone, as a person
        deleting it in Slack would leave it (its replies stay)."""
        channel, ts = request.path_params["channel"], request.path_params["ts"]
        if not self.state.delete(channel, ts):
            return JSONResponse({"error": f"no message {ts} in {channel}"}, 404)
        return JSONResponse({"ok": True})

    async def person_control(self, request: Request) -> Response:
        """POST /_sandbox/messages {channel, text, user?}: a message a person wrote."""
        try:
            raw = await request.json()
        except ValueError:
            return JSONResponse({"error": "send JSON: {channel, text, user}"}, 400)
        if not isinstance(raw, dict) or not raw.get("channel") or not raw.get("text"):
            return JSONResponse({"error": "send JSON: {channel, text, user}"}, 400)
        record = self.state.add_message(str(raw["channel"]), str(raw["text"]), raw.get("user"))
        if record is None:
            return JSONResponse({"error": f"no channel {raw['channel']}"}, 404)
        return JSONResponse({"ok": True, "channel": record["channel"], "ts": record["ts"]})


def new_record(
    channel_id: str, channel: str, ts: str, text: Any, user: str = BOT_USER
) -> dict[str, Any]:
    """A stored message: Slack's message object plus the channel it is in."""
    message: dict[str, Any] = {"type": "message", "user": user, "text": text or "", "ts": ts}
    if user == BOT_USER:
        message["bot_id"] = BOT_ID
    return {"channel": channel_id, "channel_name": channel, **message}
