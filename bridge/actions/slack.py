"""slack.post: post a message (text and/or Block Kit) to a channel or thread; with
`thread_key`, one thread per key; with `message_key`, one message per key, edited in place
(docs/slack.md; the Redis side is bridge/actions/slack_keys.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from bridge.actions.action import Action, ActionDeps, StepCall
from bridge.actions.slack_keys import SlackKeys, key_text
from bridge.clients.slack import (
    MessageGone,
    channel_scope,
    get_permalink,
    pace,
    post_message,
    update_message,
)
from bridge.errors import ClientError, PermanentError, RateLimited, TemplateError
from bridge.schema import ActionSchema, Param

# A step waits this long in process for the first message of a key that another run is
# posting; after that it goes back to the queue (no try spent) and comes back.
FIRST_POST_WAIT = 2.0
FIRST_POST_POLL = 0.05
# A key's message found gone (deleted) is replaced; a key that keeps changing under the
# step this many times is an error worth a retry.
MAX_ROUNDS = 3

SCHEMA = ActionSchema(
    name="slack.post",
    description="Post a message to a Slack channel (chat.postMessage).",
    params={
        "channel": Param("channel", ("string",), required=True, description="#name or C… id"),
        "text": Param(
            "text",
            ("string", "number"),
            description="message text (mrkdwn); the notification fallback when blocks are sent",
        ),
        "template": Param(
            "template",
            ("string",),
            description="a template file: *.json.j2 renders Block Kit JSON, other *.j2 render text",
        ),
        "blocks": Param("blocks", ("array",), description="Block Kit blocks"),
        "thread_ts": Param("thread_ts", ("string", "number"), description="reply in a thread"),
        "thread_key": Param(
            "thread_key",
            ("string", "number"),
            description="one thread per key: the first message starts it, later ones reply",
        ),
        "reply_broadcast": Param(
            "reply_broadcast",
            ("boolean",),
            description="a reply in a thread is also shown in the channel",
        ),
        "message_key": Param(
            "message_key",
            ("string", "number"),
            description="one message per key: later posts edit it in place (chat.update)",
        ),
        "unfurl_links": Param("unfurl_links", ("boolean",)),
    },
    one_of=(("text", "template", "blocks"),),
    exclusive=(("thread_key", "thread_ts"), ("thread_key", "message_key")),
    escape="slack",
    results={"channel": "string", "ts": "string"},
)


def fallback_text(blocks: list[Any]) -> str:
    """Notification text for blocks: the text of the first block that has some."""
    for block in blocks:
        if isinstance(block, Mapping):
            text = block.get("text")
            if isinstance(text, Mapping) and isinstance(text.get("text"), str):
                return str(text["text"])[:300]
    return "New message"


def message_params(call: StepCall) -> dict[str, Any]:
    """The chat.postMessage arguments of a step: text, blocks (or a template of either)."""
    params = dict(call.params)
    out: dict[str, Any] = {"channel": params["channel"]}
    if "template" in params:
        rendered = call.output
        if isinstance(rendered, str):
            out["text"] = rendered.rstrip("\n")
        elif isinstance(rendered, list):
            out["blocks"] = rendered
        elif isinstance(rendered, Mapping):
            out.update({k: v for k, v in rendered.items() if k in ("text", "blocks")})
        else:
            raise TemplateError(
                f"template {params['template']} must render text, a list of "
                "blocks, or an object with blocks/text"
            )
    if "blocks" in params:
        out["blocks"] = params["blocks"]
    if "text" in params:
        out["text"] = str(params["text"])
    if "blocks" in out and not out.get("text"):
        out["text"] = fallback_text(out["blocks"])
    if not out.get("text") and not out.get("blocks"):
        raise PermanentError("slack.post rendered an empty message; give text, template or blocks")
    for key in ("thread_ts", "unfurl_links", "reply_broadcast"):
        if key in params and params[key] not in (None, ""):
            out[key] = str(params[key]) if key == "thread_ts" else params[key]
    return out


def given(params: Mapping[str, Any], name: str) -> str | None:
    """A key parameter as stored, or None when absent or rendered empty (no key)."""
    value = params.get(name)
    if value is None or isinstance(value, bool) or not str(value).strip():
        return None
    return key_text(value)


def step_id(call: StepCall) -> str:
    """The identity of one step of one run: what it posted is recorded under it."""
    rule = f"{call.rule_id}@{call.run}" if call.run else call.rule_id
    return f"{call.event_id}:{rule}:{call.step_key}"


async def run(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
    client = deps.slack
    if client is None:
        raise PermanentError("slack.post needs SLACK_BOT_TOKEN to be set")
    params = message_params(call)
    thread_key, message_key = given(call.params, "thread_key"), given(call.params, "message_key")
    if thread_key is not None and message_key is not None:
        raise PermanentError("slack.post takes thread_key or message_key, not both")
    if thread_key is not None or message_key is not None:
        if deps.slack_keys is None:
            raise PermanentError("slack.post with thread_key or message_key needs Redis")
        keyed = Keyed(deps, call, params, deps.slack_keys)
        if thread_key is not None:
            return await keyed.in_thread(thread_key)
        assert message_key is not None
        return await keyed.living(message_key)
    if "thread_ts" not in params:
        params.pop("reply_broadcast", None)  # only a reply can be broadcast
    # Paced per channel, shared by every worker: a step re-queued to wait for its turn
    # keeps the slot it booked (the ticket is the step's identity).
    ticket = "\0".join((call.event_id, call.rule_id, call.step_key))
    return await post_message(client, limiter=deps.limiter, ticket=ticket, **params)


class Keyed:
    """One slack.post step with a thread_key or message_key (docs/slack.md)."""

    def __init__(
        self, deps: ActionDeps, call: StepCall, params: dict[str, Any], store: SlackKeys
    ) -> None:
        assert deps.slack is not None
        self.deps, self.client, self.store = deps, deps.slack, store
        self.params = params
        self.channel = str(params["channel"])
        self.scope = channel_scope(self.channel)
        self.step = step_id(call)
        self.ticket = "\0".join((call.event_id, call.rule_id, call.step_key))
        self.paced = False

    async def in_thread(self, key: str) -> dict[str, Any]:
        """Post the key's first message, or reply in its thread (a gone parent: anew)."""
        done = await self.store.step(self.step)
        if done is not None:
            return await self.with_permalink(done, "thread", key)
        await self.pace()
        message = {
            k: v for k, v in self.params.items() if k not in ("reply_broadcast", "thread_ts")
        }
        for _ in range(MAX_ROUNDS):
            parent = await self.store.find("thread", self.scope, key)
            if parent is None:
                started = await self.first(
                    "thread", key, message, lambda p: {**p, "thread_ts": p["ts"], "started": True}
                )
                if started is None:
                    continue  # another run's first message is the thread now
                return await self.with_permalink(started, "thread", key)
            reply = {**message, "channel": parent["channel"], "thread_ts": parent["ts"]}
            if "reply_broadcast" in self.params:
                reply["reply_broadcast"] = self.params["reply_broadcast"]
            try:
                posted = await self.post(reply)
            except MessageGone:
                await self.store.forget("thread", self.scope, key, parent["ts"])
                continue
            result = {**posted, "thread_ts": parent["ts"], "started": False}
            await self.store.record(self.step, result, kind="thread", scope=self.scope, key=key)
            return await self.with_permalink(result, "thread", key)
        raise ClientError(f"slack.post: the thread of {key!r} kept changing; trying again")

    async def living(self, key: str) -> dict[str, Any]:
        """Edit the key's message in place, or post it (none yet, or deleted)."""
        done = await self.store.step(self.step)
        if done is not None:
            return await self.with_permalink(done, "message", key)
        for _ in range(MAX_ROUNDS):
            current = await self.store.find("message", self.scope, key)
            if current is None:
                await self.pace()
                first = dict(self.params)
                if "thread_ts" not in first:
                    first.pop("reply_broadcast", None)  # only a reply can be broadcast
                posted = await self.first("message", key, first, lambda p: {**p, "updated": False})
                if posted is None:
                    continue
                return await self.with_permalink(posted, "message", key)
            content = {
                "text": self.params.get("text") or "",
                # Blocks left out would stay as they were: [] removes them.
                "blocks": self.params.get("blocks") or [],
            }
            try:
                await update_message(
                    self.client, channel=current["channel"], ts=current["ts"], **content
                )
            except MessageGone:
                await self.store.forget("message", self.scope, key, current["ts"])
                continue
            result: dict[str, Any] = {"channel": current["channel"], "ts": current["ts"]}
            if current.get("permalink"):
                result["permalink"] = current["permalink"]
            result["updated"] = True
            await self.store.record(self.step, result, kind="message", scope=self.scope, key=key)
            return await self.with_permalink(result, "message", key)
        raise ClientError(f"slack.post: the message of {key!r} kept changing; trying again")

    async def first(
        self,
        kind: str,
        key: str,
        message: dict[str, Any],
        result: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> dict[str, Any] | None:
        """Post a key's first message; the step's `result` of it is recorded with the key
        before this returns it. None when another run's first message came first (the
        caller then uses that one)."""
        if not await self.store.claim(kind, self.scope, key, self.step):
            if await self.wait_for(kind, key):
                return None
            raise RateLimited(
                f"slack.post waits for the first message of {kind} key {key!r}, "
                "which another run is posting",
                retry_after=1.0,
                status=None,
            )
        if await self.store.find(kind, self.scope, key) is not None:
            await self.store.release(kind, self.scope, key, self.step)
            return None
        try:
            posted = await self.post(message)
        except ClientError:
            # Slack said no: nothing was posted, another run may try now. (A cancelled
            # call keeps the claim until it runs out: Slack may have posted it.)
            await self.store.release(kind, self.scope, key, self.step)
            raise
        where = {"channel": str(posted["channel"]), "ts": str(posted["ts"])}
        done = result(posted)
        await self.store.record(
            self.step, done, kind=kind, scope=self.scope, key=key, message=where, owner=self.step
        )
        return done

    async def wait_for(self, kind: str, key: str) -> bool:
        """Whether another run's first message for the key was recorded within a moment."""
        # Within the step's budget, as the pacing wait is (a third of BRIDGE_STEP_TIMEOUT).
        deadline = time.monotonic() + min(FIRST_POST_WAIT, self.deps.limiter.max_wait)
        while time.monotonic() < deadline:
            await asyncio.sleep(FIRST_POST_POLL)
            if await self.store.find(kind, self.scope, key) is not None:
                return True
        return False

    async def pace(self) -> None:
        """The channel's next message slot, booked once per step (see post_message)."""
        if not self.paced:
            await pace(self.deps.limiter, self.channel, self.ticket)
            self.paced = True

    async def post(self, message: dict[str, Any]) -> dict[str, Any]:
        return await post_message(self.client, limiter=self.deps.limiter, paced=True, **message)

    async def with_permalink(self, result: dict[str, Any], kind: str, key: str) -> dict[str, Any]:
        """The result with the message's permalink, fetched once and kept with the step
        (and with the key when the key names this message)."""
        if result.get("permalink"):
            return result
        try:
            link: str | None = await get_permalink(
                self.client, channel=str(result["channel"]), ts=str(result["ts"])
            )
        except MessageGone:
            link = None  # deleted since: there is nothing to link to
        result = {**result, "permalink": link}
        await self.store.remember(self.step, result)
        if link:
            await self.store.set_permalink(kind, self.scope, key, str(result["ts"]), link)
        return result


POST = Action(SCHEMA, run)
