"""Masking secrets and showing stored values faithfully (shared by jobs, operate, cli, logs).

`redact` masks every configured secret, in values and in keys, and never raises;
`displayable` turns whatever was stored (lone surrogates, infinities, deep nesting) into
what a page, an API answer or a terminal can show; `printable` escapes control characters.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

MASK = "**********"
# Values nested deeper than this are shown as a note: encoders and page templates recurse,
# and nothing a rule or a person reads is nested this deep.
SHOWN_DEPTH = 64
TOO_DEEP = f"… (nested deeper than {SHOWN_DEPTH} levels; not shown)"
# redact() keeps everything, but a value that contains itself must still end.
_REDACT_DEPTH = 10_000
# Python refuses to turn a longer int into text (sys.get_int_max_str_digits()).
_MAX_INT_BITS = 14_000
_SURROGATE = re.compile("[\ud800-\udfff]")

_Containers = (dict, list, tuple)


def _rebuild(
    value: Any,
    leaf: Callable[[Any], Any],
    key: Callable[[Any], Any],
    max_depth: int,
    too_deep: Any,
) -> Any:
    """A copy of `value` with `leaf` applied to every scalar and `key` to every dict key.

    Iterative, so that no nesting raises RecursionError; containers nested `max_depth`
    levels deep are replaced by `too_deep`. Tuples become lists, as in JSON.
    """
    if not isinstance(value, _Containers):
        return leaf(value)
    root: dict[Any, Any] | list[Any] = {} if isinstance(value, dict) else []
    stack: list[tuple[Any, dict[Any, Any] | list[Any], int]] = [(value, root, 1)]
    while stack:
        source, target, depth = stack.pop()
        pairs = source.items() if isinstance(source, dict) else enumerate(source)
        for name, item in pairs:
            if isinstance(item, _Containers):
                if depth >= max_depth:
                    copy: Any = too_deep
                else:
                    copy = {} if isinstance(item, dict) else []
                    stack.append((item, copy, depth + 1))
            else:
                copy = leaf(item)
            if isinstance(target, dict):
                target[key(name)] = copy
            else:
                target.append(copy)
    return root


def _masker(secrets: Iterable[str]) -> Callable[[str], str] | None:
    """A function masking every secret in a string; None when there is no secret."""
    # The longest first: a secret that contains another is masked whole.
    needles = sorted({s for s in secrets if s}, key=len, reverse=True)
    if not needles:
        return None

    def mask(text: str) -> str:
        for needle in needles:
            text = text.replace(needle, MASK)
        return text

    return mask


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """`value` with every secret replaced by `**********` in strings and dict keys, at any depth.

    Never raises: the walk is iterative, and numbers (infinite ones included) pass as they are.
    """
    mask = _masker(secrets)
    if mask is None:
        return value

    def text(item: Any) -> Any:
        return mask(item) if isinstance(item, str) else item

    return _rebuild(value, text, text, _REDACT_DEPTH, TOO_DEEP)


def valid_text(text: str) -> str:
    """`text` with lone surrogates (which no encoder accepts) replaced by U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


# C0 and C1 controls, DEL, line and paragraph separators, lone surrogates.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return json.dumps(char)[1:-1] if ord(char) < 0x80 else f"\\u{ord(char):04x}"


def printable(text: str) -> str:
    """`text` as one line for a terminal or a log: unprintable characters as escapes.

    A newline becomes `\\n` and an ESC `\\u001b`: stored text cannot start a line of its
    own or move a terminal's cursor.
    """
    return _UNPRINTABLE.sub(_escape, text)


def displayable(value: Any, secrets: Iterable[str] = ()) -> Any:
    """`value` made safe to show anywhere: as JSON, in a page, on a terminal.

    No secret (in strings or keys), no lone surrogate, no infinite number (shown as the text
    `Infinity`, `-Infinity`, `NaN`), nothing nested deeper than SHOWN_DEPTH, only JSON types.
    """
    mask = _masker(secrets)

    def text(item: str) -> str:
        item = valid_text(item)
        return mask(item) if mask is not None else item

    def leaf(item: Any) -> Any:
        if isinstance(item, str):
            return text(item)
        if item is None or isinstance(item, bool):
            return item
        if isinstance(item, int):
            if item.bit_length() > _MAX_INT_BITS:
                return f"… (an integer of {item.bit_length()} bits; not shown)"
            return item
        if isinstance(item, float):
            return item if math.isfinite(item) else json.dumps(item)
        return text(repr(item))

    def key(name: Any) -> Any:
        if isinstance(name, str):
            return text(name)
        if name is None or isinstance(name, bool | int | float):
            return leaf(name)
        return text(repr(name))

    return _rebuild(value, leaf, key, SHOWN_DEPTH, TOO_DEEP)
