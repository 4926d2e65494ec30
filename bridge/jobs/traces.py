"""Traces: what happened to an event — rules considered, why they matched or not, each step.

Also the two walks every stored or shown value goes through: `redact` (no configured secret,
in a string or a key, at any depth) and `displayable` (what a page, the API or a terminal
can show of any stored value, whatever it holds).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import Redis

from bridge.queue.redis_io import FastScript
from bridge.queue.store import Keys, dumps, loads

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


def unreadable(why: str) -> dict[str, Any]:
    """The trace entry shown in place of one that cannot be decoded."""
    return {"at": 0, "kind": "unreadable", "error": f"this trace entry cannot be read: {why}"}


def decode_entry(raw: bytes | str) -> dict[str, Any]:
    """One stored trace entry; an `unreadable` entry when it is not a JSON object we can read."""
    try:
        entry = loads(raw)
    except RecursionError:
        return unreadable("nested too deep")
    except ValueError as exc:
        return unreadable(f"not JSON ({valid_text(str(exc))[:200]})")
    if not isinstance(entry, dict):
        return unreadable(f"a JSON {type(entry).__name__}, not an object")
    return entry


# KEYS[1]: the trace. ARGV: the entry, the trace's ttl in seconds.
_APPEND = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
"""


class Tracer:
    """Append-only trace entries per event, kept as long as the event."""

    def __init__(self, redis: Redis, keys: Keys, ttl: int, secrets: Iterable[str] = ()) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = ttl
        self._secrets = [s for s in secrets if s]
        # A secret inside a JSON string is written escaped: look for both forms.
        self._needles = sorted(
            {form.encode() for s in self._secrets for form in (s, json.dumps(s)[1:-1])},
            key=len,
            reverse=True,
        )
        self._append = FastScript(redis, _APPEND)

    async def record(self, event_id: str, kind: str, **fields: Any) -> None:
        """Append one entry ({"at", "kind", …fields}) to the event's trace, secrets masked."""
        entry = {"at": round(time.time(), 3), "kind": kind, **fields}
        try:
            encoded = dumps(entry)
        except (ValueError, RecursionError, TypeError):
            # Nested too deep for the encoder, or containing itself: keep what can be shown.
            entry = displayable(entry)
            encoded = dumps(entry)
        # Walking every entry for secrets costs more than writing it; an entry that holds
        # none (nearly all) is written as encoded.
        if any(needle in encoded for needle in self._needles):
            encoded = dumps(redact(entry, self._secrets))
            # What redact() cannot reach (a secret in an object's repr) goes from the text.
            for needle in self._needles:
                encoded = encoded.replace(needle, MASK.encode())
        await self._append([self.keys.trace(event_id)], [encoded, self.ttl])

    async def read(self, event_id: str) -> list[dict[str, Any]]:
        """Every entry of the event's trace, oldest first (undecodable ones as `unreadable`)."""
        raw = await self.redis.lrange(self.keys.trace(event_id), 0, -1)  # type: ignore[misc]
        return [decode_entry(item) for item in raw]
