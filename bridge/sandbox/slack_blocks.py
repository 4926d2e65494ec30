"""What a person sees of a Slack message's Block Kit blocks, as lines of text (sandbox)."""

from __future__ import annotations

from typing import Any


def _text_of(value: Any) -> str:
    """The text of a Block Kit text object (or of a plain string)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return str(value["text"])
    return ""


def _element_text(element: Any) -> str:
    if not isinstance(element, dict):
        return ""
    kind = element.get("type")
    if kind == "image":
        return f"[image: {element.get('alt_text', '')}]"
    if kind in ("button", "static_select", "overflow", "datepicker", "users_select"):
        label = _text_of(element.get("text")) or _text_of(element.get("placeholder"))
        return f"[{label or kind}]"
    return _text_of(element)


def _rich_text(value: Any) -> str:
    """The characters of a rich_text element tree."""
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            return str(value["text"])
        if value.get("type") == "link":
            return str(value.get("url", ""))
        if value.get("type") in ("user", "channel", "usergroup"):
            return "@" + str(value.get("user_id") or value.get("channel_id") or "")
        if value.get("type") == "emoji":
            return f":{value.get('name', '')}:"
        return _rich_text(value.get("elements", []))
    if isinstance(value, list):
        return "".join(_rich_text(item) for item in value)
    return ""


def block_lines(block: Any) -> list[str]:
    """The text a person sees in one Block Kit block, line by line."""
    if not isinstance(block, dict):
        return []
    kind = block.get("type")
    lines: list[str] = []
    if kind in ("section", "header"):
        lines += _text_of(block.get("text")).splitlines()
        for item in block.get("fields") or []:
            lines.append(" ".join(_text_of(item).split("\n")))
        accessory = _element_text(block.get("accessory"))
        if accessory:
            lines.append(accessory)
    elif kind == "context":
        lines.append(" · ".join(filter(None, map(_element_text, block.get("elements") or []))))
    elif kind == "actions":
        lines.append(" ".join(filter(None, map(_element_text, block.get("elements") or []))))
    elif kind == "divider":
        lines.append("─" * 24)
    elif kind == "image":
        title = _text_of(block.get("title"))
        lines.append(f"[image: {block.get('alt_text', '')}]" + (f" {title}" if title else ""))
    elif kind == "rich_text":
        lines += _rich_text(block.get("elements", [])).splitlines()
    else:
        lines.append(f"[{kind} block]")
    return lines
