"""Condition paths (`data.asset.tags.0`) compiled into readers of an event (rules → decide)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from bridge.rules.model import MISSING
from bridge.rules.values import OperandError

EVENT_FIELDS = ("id", "type", "source", "subject", "time")
ROOTS = ("data", "changes", "event", *EVENT_FIELDS)

Getter = Callable[[Any], Any]  # event -> value or MISSING


def _step(value: Any, key: str, index: int | None) -> Any:
    if isinstance(value, Mapping):
        return value.get(key, MISSING)
    if index is not None and isinstance(value, list | tuple):
        try:
            return value[index]
        except IndexError:
            return MISSING
    return MISSING


def compile_path(path: str) -> Getter:
    """A function reading `path` from an event; raises OperandError for a malformed path."""
    if not isinstance(path, str) or not path.strip():
        raise OperandError(f"path must be a dotted string such as data.status, not {path!r}")
    if "[" in path or "]" in path:
        raise OperandError(
            f"path {path!r} uses brackets; write list indexes as segments (data.items.0.id)"
        )
    root, *rest = path.split(".")
    if any(not part for part in rest) or not root:
        raise OperandError(f"path {path!r} has an empty segment")
    if root not in ROOTS:
        raise OperandError(f"path {path!r} must start with one of {', '.join(ROOTS)}")
    base: Getter
    if root == "event":
        if not rest or rest[0] not in EVENT_FIELDS:
            raise OperandError(f"path {path!r}: event has the fields {', '.join(EVENT_FIELDS)}")
        root, *rest = rest
    if root in ("data", "changes", *EVENT_FIELDS):
        base = operator.attrgetter(root)
    if root in EVENT_FIELDS and rest:
        raise OperandError(f"path {path!r}: event.{root} is a string and has no fields")
    segments = tuple((part, _index(part)) for part in rest)
    if not segments:
        return base
    if len(segments) == 1:
        key, index = segments[0]

        def get_one(event: Any) -> Any:
            value = base(event)
            if type(value) is dict:
                return value.get(key, MISSING)
            return _step(value, key, index)

        return get_one

    def get(event: Any) -> Any:
        value = base(event)
        for key, index in segments:
            value = _step(value, key, index)
            if value is MISSING:
                return MISSING
        return value

    return get


def _index(part: str) -> int | None:
    try:
        return int(part)
    except ValueError:
        return None
