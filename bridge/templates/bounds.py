"""Size bounds: a small template must not build a huge value (templates).

``*``, ``**``, ``%``, ``+``, ``~``, padding, ``replace``, ``range`` and ``namespace`` are
checked on the way, and every result is held to 64 KiB (strings) or 10,000 items (lists).
The sandbox (bridge.templates.sandbox) applies them; the budget of a whole render is
bridge.templates.budget.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.utils import Namespace

MAX_OUTPUT = 64 * 1024  # bytes of rendered output; characters of any string built on the way
MAX_RANGE = 10_000  # items of range(); Jinja's own sandbox allows 100,000
# Python refuses to print an integer of more than 4,300 digits (about 14,280 bits).
MAX_INT_BITS = 14_000

# A %-format width or precision of a million or more, or taken from the arguments (`*`).
_WIDTH = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(?:\*|\d{6,}|\d*\.(?:\*|\d{6,}))")


def bounded_range(*args: int) -> range:
    """`range()` of at most `MAX_RANGE` items."""
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise OverflowError(f"range of {len(rng)} items; the sandbox allows {MAX_RANGE}")
    return rng


def too_big(what: str) -> SecurityError:
    """The error for a value that would pass the size limit."""
    return SecurityError(f"{what} would exceed the {MAX_OUTPUT // 1024} KiB limit")


def check_size(value: Any) -> Any:
    """The value, unless it is a string, list or integer past its size limit."""
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise SecurityError("the number would exceed 4,000 digits")
    if isinstance(value, str) and len(value) > MAX_OUTPUT:
        raise too_big("the string")
    if isinstance(value, list | tuple) and len(value) > MAX_RANGE:
        raise too_big("the list")
    return value


def check_format_string(fmt: Any) -> None:
    """Refuse a %-format whose width or precision would build a huge string."""
    if isinstance(fmt, str) and _WIDTH.search(fmt):
        raise SecurityError("format widths of a million or more (or *) are not allowed")


def checked_concat(parts: tuple[Any, ...]) -> str:
    """`a ~ b ~ c`, held to the size limit."""
    text = "".join(str(p) for p in parts)
    return str(check_size(text))


class BoundedNamespace(Namespace):
    """`namespace()` whose attributes cannot hold oversized strings."""

    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(name, check_size(value))


def is_int(value: Any) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


_WIDTH_FILTERS = frozenset({"do_center", "do_indent", "do_truncate", "do_wordwrap"})


def bounded_filter(func: Callable[..., Any], *, check_format: bool = False) -> Callable[..., Any]:
    """The filter, refusing arguments that would build a value past the size limits."""

    # functools.wraps also copies Jinja's pass_context/pass_environment marker.
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if check_format and args:
            check_format_string(args[0])
        widths = args[1:]
        if func.__name__ in _WIDTH_FILTERS and any(is_int(a) and a > MAX_OUTPUT for a in widths):
            raise too_big(f"the {func.__name__[3:]} filter")
        if func.__name__ == "do_replace" and len(args) >= 4:
            source, old, new = str(args[1]), str(args[2]), str(args[3])
            if (source.count(old) if old else len(source) + 1) * len(new) > MAX_OUTPUT:
                raise too_big("the replace filter")
        return check_size(func(*args, **kwargs))

    return functools.wraps(func)(bounded)
