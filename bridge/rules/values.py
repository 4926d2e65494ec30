"""How conditions see values: strict equality across types, and values shown in messages.

A number never equals a string, and `true` never equals `1` (rules → decide).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


class OperandError(ValueError):
    """A condition's operand is unusable; the message says what was expected."""


def kind_of(value: Any) -> str:
    """The kind of a value as messages name it: null, bool, number, str, object, list."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def show(value: Any) -> str:
    """A value as a message shows it: YAML's true/false/null, Python's repr otherwise."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_a(value: Any) -> str:
    """`'abc' is str`, or `value is null` (there is no point in saying `null is NoneType`)."""
    if value is None:
        return "value is null"
    return f"{show(value)} is {type(value).__name__}"


def mismatch(actual: Any, expected: Any) -> str:
    """Why values of two types never compare: `type mismatch: 7 is int, '7' is str`."""
    return f"type mismatch: {is_a(actual)}, {is_a(expected)}"


def same(a: Any, b: Any) -> bool:
    """Equality without Python's cross-type surprises (`True == 1`, `1 == "1"` stays False)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def equals(expected: Any) -> Callable[[Any], bool]:
    """A test for equality with `expected`, specialised by its type."""
    if isinstance(expected, bool) or expected is None:
        return lambda actual: actual is expected
    if isinstance(expected, str):
        return lambda actual: actual == expected and isinstance(actual, str)
    if isinstance(expected, int | float):
        return lambda actual: actual == expected and not isinstance(actual, bool | str)
    return lambda actual: same(actual, expected)


def is_number(value: Any) -> bool:
    """An int or float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)
