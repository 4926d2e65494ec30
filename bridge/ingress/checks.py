"""Refuse at the door what cannot be stored and shown faithfully (ingress → events).

An event is stored as JSON, shown on the dashboard and the admin API, printed by the CLI
and written to logs. Some values survive `json.loads` but not that trip: a lone surrogate
(`"\\ud800"`) is not Unicode and cannot be encoded as UTF-8, `1e999` parses to infinity
(which JSON cannot hold), a control character in an id or a type forges lines in a text
log, and nesting hundreds of levels deep exhausts the recursion of every reader. Each is a
400 that names the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from bridge.errors import EventError

# Deeper than any real payload (Lytho assets nest 4 levels, Lytics profiles 3), shallow
# enough for every recursive reader (the dashboard, redaction, the template context).
MAX_DEPTH = 64

# Escapes that decode to a UTF-16 surrogate: the only way JSON text that is valid UTF-8
# can yield a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def may_need_walk(body: bytes) -> bool:
    """Whether a parsed body could hold a lone surrogate or nest past MAX_DEPTH.

    Most bodies hold neither a surrogate escape nor MAX_DEPTH brackets; for those the
    walk over every value (`check_value`) can be skipped. Infinite numbers are caught
    while parsing (see `FloatGuard`).
    """
    if _SURROGATE_ESCAPE.search(body) is not None:
        return True
    return body.count(b"[") + body.count(b"{") > MAX_DEPTH


class FloatGuard:
    """A `parse_float` for json.loads that remembers whether a number overflowed."""

    __slots__ = ("overflowed",)

    def __init__(self) -> None:
        self.overflowed = False

    def __call__(self, text: str) -> float:
        value = float(text)
        if math.isinf(value):
            self.overflowed = True
        return value


def where(index: int | None) -> str:
    """The prefix of a message about one item of a batch."""
    return "" if index is None else f"item {index}: "


def member(path: str, key: str) -> str:
    """`path.key`, or `path["key"]` where the key is not a plain name (escaped, so the
    message itself is always printable)."""
    if _IDENTIFIER.match(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def _has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def check_value(value: Any, path: str, index: int | None, depth: int = 0) -> None:
    """Raise EventError naming the first value under `path` that cannot be stored
    faithfully: a lone surrogate (in a string or a key), a number that is not finite, or
    nesting deeper than MAX_DEPTH."""
    if isinstance(value, str):
        if _has_surrogate(value):
            raise EventError(
                f"{where(index)}'{path}' holds a lone surrogate (such as \\ud800); "
                "strings must be valid Unicode"
            )
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EventError(
                f"{where(index)}'{path}' is a number too large to store (it overflows to infinity)"
            )
        return
    if isinstance(value, Mapping | list):
        if depth >= MAX_DEPTH:
            raise EventError(f"{where(index)}'{path}' is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, Mapping):
            for key, item in value.items():
                if _has_surrogate(key):
                    raise EventError(
                        f"{where(index)}'{path}' has a key holding a lone surrogate (such "
                        "as \\ud800); strings must be valid Unicode"
                    )
                check_value(item, member(path, key), index, depth + 1)
        else:
            for position, item in enumerate(value):
                check_value(item, f"{path}[{position}]", index, depth + 1)


def check_attribute(text: str, name: str, index: int | None) -> str:
    """An id, type, subject, source or time that can be stored, logged and shown as it is:
    valid Unicode and no control characters (line breaks would forge log lines)."""
    if _has_surrogate(text):
        raise EventError(
            f"{where(index)}'{name}' holds a lone surrogate (such as \\ud800); "
            "it must be valid Unicode"
        )
    control = _CONTROL.search(text)
    if control is not None:
        raise EventError(
            f"{where(index)}'{name}' holds the control character "
            f"{json.dumps(control.group())}; control characters are not allowed"
        )
    return text


# Event types lytbridge emits itself (`bridge.schedule`, a scheduled rule's tick): from
# outside, such an event would run a scheduled rule at will with a made-up tick.
RESERVED_TYPE_PREFIX = "bridge."


def check_not_reserved(types: Sequence[str], batch: bool) -> None:
    """Raise EventError for the first type lytbridge keeps for its own events (the webhook
    door; `bridge fire`, the operator's own, may send them to test a scheduled rule)."""
    for index, kind in enumerate(types):
        if kind.lower().startswith(RESERVED_TYPE_PREFIX):
            raise EventError(
                f"{where(index if batch else None)}type {kind!r} is reserved for "
                "lytbridge's own events"
            )
