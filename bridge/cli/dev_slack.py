"""`bridge dev`'s Slack page: a message with buttons, as Slack would show it, to press.

`GET /dev/slack` renders a Block Kit template (any `*.json.j2` in the templates folder
with a button, for an example event; or a demo message) as a plain imitation of a Slack
message. Pressing a button sends what Slack would: a `block_actions` payload, signed with
the bridge's signing secret, to the bridge's own `POST /hooks/slack`. The page then shows,
and the terminal prints, the event it became and what the rules did with it.

Only `bridge dev` serves it. A token made at start guards the press (another web page
the person has open cannot press buttons on their bridge).
"""

from __future__ import annotations

import asyncio
import html
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bridge.cli.slack_send import DEV_CHANNEL, action_body, block_actions_payload, signed_headers
from bridge.errors import BridgeError
from bridge.events import Event
from bridge.ingress.slack import parse_form
from bridge.rules.model import event_context
from bridge.templates.environment import Templates

if TYPE_CHECKING:
    from bridge.operate.context import Context
    from bridge.web.app import WebApp

PATH = "/dev/slack"
EXAMPLE_EVENTS = Path("examples/events")
# What the page shows when no template has a button: a message to try the flow with.
DEMO_MESSAGE: dict[str, Any] = {
    "text": "Asset ready: Spring hero",
    "blocks": [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "*Spring hero* is ready (asset 1001)"},
        },
        {
            "type": "actions",
            "block_id": "asset-actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": "push_to_lytics",
                    "text": {"type": "plain_text", "text": "Push to Lytics"},
                    "value": "1001",
                    "style": "primary",
                },
                {
                    "type": "button",
                    "action_id": "dismiss",
                    "text": {"type": "plain_text", "text": "Dismiss"},
                    "value": "1001",
                },
            ],
        },
    ],
}
DEMO_EVENT = Event(
    id="dev-slack-demo",
    source="lytho",
    type="lytho.asset.tagged",
    subject="1001",
    data={"id": 1001, "name": "Spring hero", "fileName": "spring-hero.jpg", "tags": []},
)
STYLE = (
    "body{font:15px/1.45 sans-serif;margin:2em auto;max-width:46em;color:#1d1c1d}"
    ".msg{border:1px solid #ddd;border-radius:8px;padding:1em 1.2em;margin:1em 0}"
    ".who{font-weight:700}.ctx{color:#616061;font-size:13px}.text{white-space:pre-wrap}"
    "button{border:1px solid #bbb;background:#fff;border-radius:4px;padding:.35em .9em;"
    "margin:.3em .4em 0 0;font-weight:700;cursor:pointer}"
    "button.primary{background:#007a5a;color:#fff;border-color:#007a5a}"
    "button.danger{background:#e01e5a;color:#fff;border-color:#e01e5a}"
    "pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:13px}.err{color:#b00}"
)


def button_templates(templates_dir: Path) -> list[str]:
    """The Block Kit templates (`*.json.j2`) that hold a button, by name."""
    if not templates_dir.is_dir():
        return []
    found = []
    for path in sorted(templates_dir.rglob("*.json.j2")):
        try:
            if '"button"' in path.read_text(encoding="utf-8"):
                found.append(path.relative_to(templates_dir).as_posix())
        except (OSError, UnicodeDecodeError):
            continue
    return found


def example_event(name: str | None) -> Event:
    """An event of examples/events/ (by file name), else the demo event."""
    from bridge.cli.event_files import read_event_file

    if name:
        path = EXAMPLE_EVENTS / Path(name).name
        if path.is_file():
            events = read_event_file(path)
            if events:
                first: Event = events[0]
                return first
    return DEMO_EVENT


def _text(node: Any) -> str:
    """The text of a Block Kit text object (or of a plain string)."""
    if isinstance(node, dict):
        return str(node.get("text", ""))
    return "" if node is None else str(node)


def _button(element: dict[str, Any], block_id: str, token: str, context: str) -> str:
    style = html.escape(str(element.get("style", "")))
    fields = {
        "token": token,
        "action_id": element.get("action_id", ""),
        "value": element.get("value", ""),
        "block_id": block_id,
        "text": _text(element.get("text")),
        "back": context,
    }
    hidden = "".join(
        f'<input type="hidden" name="{k}" value="{html.escape(str(v))}">' for k, v in fields.items()
    )
    label = html.escape(_text(element.get("text")) or str(element.get("action_id", "")))
    return (
        f'<form method="post" action="{PATH}/press" style="display:inline">{hidden}'
        f'<button class="{style}" type="submit">{label}</button></form>'
    )


def render_message(message: Any, token: str, context: str) -> str:
    """A rendered `slack.post` message (`{text, blocks}`) as plain HTML with live buttons."""
    if not isinstance(message, dict):
        return f'<div class="text">{html.escape(str(message))}</div>'
    blocks = message.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        return f'<div class="text">{html.escape(_text(message.get("text")))}</div>'
    parts = []
    for index, block in enumerate(blocks):
        if not isinstance(block, dict):
            continue
        kind, block_id = block.get("type"), str(block.get("block_id") or f"block-{index}")
        if kind in ("section", "header"):
            text = html.escape(_text(block.get("text")))
            tag = "b" if kind == "header" else "span"
            parts.append(f'<div class="text"><{tag}>{text}</{tag}></div>')
            accessory = block.get("accessory")
            if isinstance(accessory, dict) and accessory.get("type") == "button":
                parts.append(_button(accessory, block_id, token, context))
        elif kind == "context":
            texts = [_text(e) for e in block.get("elements") or [] if isinstance(e, dict)]
            parts.append(f'<div class="ctx">{html.escape(" · ".join(texts))}</div>')
        elif kind == "actions":
            buttons = [
                _button(e, block_id, token, context)
                for e in block.get("elements") or []
                if isinstance(e, dict) and e.get("type") == "button"
            ]
            parts.append("<div>" + "".join(buttons) + "</div>")
        elif kind == "divider":
            parts.append("<hr>")
    return "\n".join(parts)


def page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}"
        "</body></html>"
    )


class DevSlackPage:
    """The page's two routes, in front of the bridge's web app (a WebApp)."""

    def __init__(self, app: WebApp) -> None:
        self.app = app
        self.token = secrets.token_urlsafe(16)
        self.pages = Starlette(
            routes=[
                Route(PATH, self.show, methods=["GET"]),
                Route(f"{PATH}/press", self.press, methods=["POST"]),
            ]
        )

    @property
    def context(self) -> Context:
        """The bridge's Context, as the web app hands it out (bridge/web/app.py)."""
        bridge: Context = self.app.state.bridge
        return bridge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in (PATH, f"{PATH}/press"):
            await self.pages(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def show(self, request: Request) -> Response:
        settings = self.context.settings
        choices = button_templates(settings.templates_dir)
        name = request.query_params.get("template") or (choices[0] if choices else "")
        event = example_event(request.query_params.get("event"))
        error = ""
        message: Any = DEMO_MESSAGE
        if name:
            try:
                message = Templates(settings.templates_dir).render_file(name, event_context(event))
            except BridgeError as exc:
                error = f'<p class="err">{html.escape(str(exc))}</p>'
                message = DEMO_MESSAGE
        shown = html.escape(name) if name and not error else "a demo message"
        links = " ".join(
            f'<a href="{PATH}?{html.escape(urlencode({"template": t}))}">{html.escape(t)}</a>'
            for t in choices
        )
        none = f"(none in {html.escape(str(settings.templates_dir))}/)"
        query = {"template": name, "event": request.query_params.get("event", "")}
        back = f"{PATH}?{urlencode(query)}"
        body = (
            f"<nav>templates with buttons: {links or none}</nav>"
            f"<p>{shown}, rendered for event <code>{html.escape(event.type)}</code>; "
            f"pressing a button sends what Slack would (signed) to POST /hooks/slack, "
            f"as <b>dev</b> in #{DEV_CHANNEL['name']}.</p>{error}"
            f'<div class="msg"><div class="who">lytbridge <span class="ctx">APP</span></div>'
            f"{render_message(message, self.token, back)}</div>"
        )
        return page("Slack buttons (bridge dev)", body)

    async def press(self, request: Request) -> Response:
        try:
            form = parse_form(await request.body())
        except BridgeError as exc:
            return page("Not pressed", f'<p class="err">{html.escape(str(exc))}</p>')
        if not secrets.compare_digest(str(form.get("token", "")), self.token):
            return page("Not pressed", '<p class="err">this page is out of date: reload it</p>')
        action_id = str(form.get("action_id", ""))
        value = str(form.get("value", "")) or None
        payload = block_actions_payload(
            action_id, value, text=str(form.get("text", "")), block_id=str(form.get("block_id"))
        )
        body = action_body(payload)
        secret = self.context.settings.slack_signing_secret
        assert secret is not None  # bridge dev always has one
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dev") as client:
            answer = await client.post(
                "/hooks/slack", content=body, headers=signed_headers(secret.get(), body)
            )
        ids = answer.headers.get("x-bridge-events", "").split()
        said = f"[dev slack] dev pressed {action_id!r}" + (f" (value {value!r})" if value else "")
        if answer.status_code != 200 or not ids:
            print(f"{said}: the bridge answered {answer.status_code} {answer.text}", flush=True)
            return page("Not stored", f'<pre class="err">{html.escape(answer.text)}</pre>')
        lines = await self.what_happened(ids[0])
        print(f"{said} → event {ids[0]}", *("  " + line for line in lines), sep="\n", flush=True)
        back = str(form.get("back") or PATH)
        if not back.startswith(PATH):
            back = PATH
        shown = html.escape("\n".join(lines))
        return page(
            "Pressed",
            f"<p>{html.escape(said.removeprefix('[dev slack] '))} → event "
            f"<code>{html.escape(ids[0])}</code> (<code>bridge trace {html.escape(ids[0])}"
            f'</code>)</p><pre>{shown}</pre><p><a href="{html.escape(back)}">back to the '
            "message</a></p>",
        )

    async def what_happened(self, event_id: str, wait: float = 5.0) -> list[str]:
        """The event's trace once every matched rule has run (or after `wait` seconds)."""
        from bridge.cli.report import trace_lines
        from bridge.operate.admin import event_with_trace

        deadline = time.monotonic() + wait
        while True:
            found = await event_with_trace(self.context, event_id)
            if found is not None and (finished(found[1]) or time.monotonic() > deadline):
                return trace_lines(*found, self.context.settings.secrets())[2:]
            if found is None and time.monotonic() > deadline:
                return ["(not stored)"]
            await asyncio.sleep(0.1)


def finished(entries: list[dict[str, Any]]) -> bool:
    """Whether the trace shows the rules evaluated and each matched one run to its end."""
    evaluated = [e for e in entries if e.get("kind") == "evaluated"]
    if not evaluated:
        return False
    held = evaluated[-1].get("suppressed") or {}
    matched = {str(rule) for rule in evaluated[-1].get("matched") or []} - set(held)
    if not matched:
        return True
    ran = {str(e.get("rule")) for e in entries if e.get("kind") == "run"}
    return matched <= ran
