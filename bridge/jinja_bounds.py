"""Bounds on what a template may build: Jinja's immutable sandbox, limited in size.

A small template must not build a huge value: ``*``, ``**``, ``%``, ``+``, ``~``, padding,
``replace``, ``range`` and ``namespace`` are checked on the way, and every result is held
to 64 KiB (strings) or 10,000 items (lists). Used by bridge.templates.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

MAX_OUTPUT = 64 * 1024  # bytes of rendered output; characters of any string built on the way
MAX_RANGE = 10_000  # items of range(); Jinja's own sandbox allows 100,000
# Python refuses to print an integer of more than 4,300 digits (about 14,280 bits).
MAX_INT_BITS = 14_000

# A %-format width or precision of a million or more, or taken from the arguments (`*`).
_WIDTH = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(?:\*|\d{6,}|\d*\.(?:\*|\d{6,}))")


def bounded_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise OverflowError(f"range of {len(rng)} items; the sandbox allows {MAX_RANGE}")
    return rng


def _too_big(what: str) -> SecurityError:
    return SecurityError(f"{what} would exceed the {MAX_OUTPUT // 1024} KiB limit")


def check_size(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise SecurityError("the number would exceed 4,000 digits")
    if isinstance(value, str) and len(value) > MAX_OUTPUT:
        raise _too_big("the string")
    if isinstance(value, list | tuple) and len(value) > MAX_RANGE:
        raise _too_big("the list")
    return value


def _check_format(fmt: Any) -> None:
    if isinstance(fmt, str) and _WIDTH.search(fmt):
        raise SecurityError("format widths of a million or more (or *) are not allowed")


def _checked_concat(parts: tuple[Any, ...]) -> str:
    text = "".join(str(p) for p in parts)
    return str(check_size(text))


class BoundedNamespace(Namespace):
    """`namespace()` whose attributes cannot hold oversized strings."""

    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(name, check_size(value))


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator with `~` concatenation routed through a size check."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat_checked((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


_PADDING = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs"})


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, bounded in size, reading dict keys before dict methods."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _CodeGenerator

    @staticmethod
    def concat_checked(parts: tuple[Any, ...]) -> str:
        return _checked_concat(parts)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and _is_int(left) and _is_int(right):
            if right > 0 and abs(left) > 1 and right * abs(left).bit_length() > MAX_INT_BITS:
                raise SecurityError("the number would exceed 4,000 digits")
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and _is_int(times):
                    limit = MAX_OUTPUT if isinstance(seq, str) else MAX_RANGE
                    if len(seq) * times > limit:
                        raise _too_big("the repetition")
        elif operator == "%":
            _check_format(left)
        return check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            if name in _PADDING and any(_is_int(a) and a > MAX_OUTPUT for a in args):
                raise _too_big(f"str.{name}()")
            if name == "replace" and len(args) >= 2:
                old, new = str(args[0]), str(args[1])
                grows = (len(owner) + 1) * len(new) if not old else owner.count(old) * len(new)
                if grows > MAX_OUTPUT:
                    raise _too_big("str.replace()")
        return check_size(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Event data is JSON: `data.items` means the key "items", not dict.items().
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        if isinstance(obj, str) and attribute in ("format", "format_map"):
            return self.unsafe_undefined(obj, attribute)
        return super().getattr(obj, attribute)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_WIDTH_FILTERS = frozenset({"do_center", "do_indent", "do_truncate", "do_wordwrap"})


def bounded_filter(func: Callable[..., Any], *, check_format: bool = False) -> Callable[..., Any]:
    # functools.wraps also copies Jinja's pass_context/pass_environment marker.
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if check_format and args:
            _check_format(args[0])
        widths = args[1:]
        if func.__name__ in _WIDTH_FILTERS and any(_is_int(a) and a > MAX_OUTPUT for a in widths):
            raise _too_big(f"the {func.__name__[3:]} filter")
        if func.__name__ == "do_replace" and len(args) >= 4:
            source, old, new = str(args[1]), str(args[2]), str(args[3])
            if (source.count(old) if old else len(source) + 1) * len(new) > MAX_OUTPUT:
                raise _too_big("the replace filter")
        return check_size(func(*args, **kwargs))

    return functools.wraps(func)(bounded)
