"""slack.post: post a message (text and/or Block Kit) to a channel or thread."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.actions.action import Action, ActionDeps, StepCall
from bridge.clients.slack import post_message
from bridge.errors import PermanentError, TemplateError
from bridge.schema import ActionSchema, Param

SCHEMA = ActionSchema(
    name="slack.post",
    description="Post a message to a Slack channel (chat.postMessage).",
    params={
        "channel": Param("channel", ("string",), required=True, description="#name or C… id"),
        "text": Param(
            "text",
            ("string",),
            description="message text (mrkdwn); the notification fallback when blocks are sent",
        ),
        "template": Param(
            "template",
            ("string",),
            description="a template file: *.json.j2 renders Block Kit JSON, other *.j2 render text",
        ),
        "blocks": Param("blocks", ("array",), description="Block Kit blocks"),
        "thread_ts": Param("thread_ts", ("string", "number"), description="reply in a thread"),
        "unfurl_links": Param("unfurl_links", ("boolean",)),
    },
    one_of=(("text", "template", "blocks"),),
    escape="slack",
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
    for key in ("thread_ts", "unfurl_links"):
        if key in params and params[key] not in (None, ""):
            out[key] = str(params[key]) if key == "thread_ts" else params[key]
    return out


async def run(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
    client = deps.slack
    if client is None:
        raise PermanentError("slack.post needs SLACK_BOT_TOKEN to be set")
    params = message_params(call)
    # Paced per channel, shared by every worker: a step re-queued to wait for its turn
    # keeps the slot it booked (the ticket is the step's identity).
    ticket = "\0".join((call.event_id, call.rule_id, call.step_key))
    return await post_message(client, limiter=deps.limiter, ticket=ticket, **params)


POST = Action(SCHEMA, run)
