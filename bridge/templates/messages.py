"""Template errors a person can act on: the missing field, the line, the cause (templates)."""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.utils import missing

from bridge.templates.budget import BudgetExceeded

# The context being rendered, so that a message can name where a missing field was read.
current_context: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "bridge_template_context", default=None
)


def _path_of(target: object) -> str | None:
    """The dotted name under which `target` sits in the context being rendered, if only one."""
    context = current_context.get()
    if context is None:
        return None
    queue: list[tuple[str, Any]] = [(k, v) for k, v in context.items() if k != "now"]
    found: list[str] = []
    seen = 0
    # Small ints, short strings and None are shared objects: a name is given only when
    # exactly one place holds the object, so the message never names the wrong field.
    while queue and seen < 500 and len(found) < 2:
        name, value = queue.pop(0)
        seen += 1
        if value is target:
            found.append(name)
        if isinstance(value, Mapping) and name.count(".") < 4:
            queue.extend((f"{name}.{k}", v) for k, v in value.items() if isinstance(k, str))
    return found[0] if len(found) == 1 else None


class NamedUndefined(StrictUndefined):
    """Strict undefined whose message names the variable: "'data' has no attribute 'asset'"."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint or self._undefined_obj is missing:
            return str(super()._undefined_message)
        owner = _path_of(self._undefined_obj)
        if owner is None:
            return str(super()._undefined_message)
        if isinstance(self._undefined_name, str):
            return f"{owner!r} has no attribute {self._undefined_name!r}"
        return f"{owner!r} has no element {self._undefined_name!r}"


def short(source: str) -> str:
    """A template's source as a message quotes it: at most 60 characters."""
    return source if len(source) <= 60 else source[:57] + "..."


def error_line(exc: BaseException, filename: str | None) -> int | None:
    """The template line where a render error happened, from Jinja's rewritten traceback."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if filename is not None and tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def message_of(exc: BaseException) -> str:
    """What went wrong in a render, without Jinja's internals."""
    if isinstance(exc, UndefinedError | SecurityError | TemplateSyntaxError | BudgetExceeded):
        return str(exc.message if isinstance(exc, TemplateSyntaxError) else exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
