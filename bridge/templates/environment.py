"""The sandboxed Jinja environment that renders action parameters, templates and conditions.

Templates and expressions run in Jinja's immutable sandbox with strict undefined: no access
to Python internals, files, network or the environment. Output is capped at 64 KiB, and the
operations that could build a huge value from a small template (``*``, ``**``, ``%``, ``+``,
``~``, padding, ``replace``, ``range``) are bounded on the way. Each render has a budget
(bridge.templates.budget): a number of operations, a deadline (the caller's, such as the end of
its step, or `MAX_SECONDS` from its start) and a number of bytes it may build in all; past
any of them it stops with a TemplateError that says which. What a template may call, and
how ``*.json.j2`` output is escaped: bridge.templates.filters.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from jinja2 import TemplateNotFound, TemplateSyntaxError
from jinja2.environment import Template, TemplateExpression
from markupsafe import Markup

from bridge.errors import TemplateError
from bridge.templates.bounds import MAX_OUTPUT
from bridge.templates.budget import (
    MAX_BUILT,
    MAX_OPERATIONS,
    MAX_SECONDS,
    Budget,
    BudgetExceeded,
    end_budget,
    start_budget,
)
from bridge.templates.files import DirectoryLoader
from bridge.templates.filters import (
    SlackText,
    build_env,
    datetimeformat,
    native,
    now,
    slack_deep,
    slack_escape,
    slugify,
    tojson,
)
from bridge.templates.messages import current_context, error_line, message_of, short

__all__ = [
    "MAX_BUILT",
    "MAX_OPERATIONS",
    "MAX_OUTPUT",
    "MAX_SECONDS",
    "BudgetExceeded",
    "SlackText",
    "Templates",
    "datetimeformat",
    "now",
    "slack_escape",
    "slugify",
    "tojson",
]

_CACHE_LIMIT = 4096  # compiled templates and expressions kept per Templates

# A string that is exactly one `{{ … }}` keeps the native type of its value.
_LONE = re.compile(r"\A\{\{-?(?P<expr>(?:(?!\}\}|\{\{).)*?)-?\}\}\Z", re.DOTALL)

# The deadline set by `Templates.deadline()` for the renders inside it.
_scope_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "bridge_template_deadline", default=None
)


class Templates:
    """Compiles and renders templates and expressions; compiled forms are cached.

    Every render has a budget: `max_operations` operations, `max_built` bytes built, and
    until its deadline (the `deadline=` given, a `time.monotonic()` instant, or the one of
    an enclosing `with templates.deadline(…)`, or else `max_seconds` from its start).
    """

    def __init__(
        self,
        templates_dir: Path | None = None,
        *,
        max_operations: int = MAX_OPERATIONS,
        max_seconds: float = MAX_SECONDS,
        max_built: int = MAX_BUILT,
    ) -> None:
        self.templates_dir = templates_dir
        self.max_operations = max_operations
        self.max_seconds = max_seconds
        self.max_built = max_built
        loader = DirectoryLoader(templates_dir) if templates_dir is not None else None
        self._loader = loader
        self._env = build_env(loader, for_json=False)
        self._json_env = build_env(loader, for_json=True)
        self._slack_env = build_env(loader, for_json=False, for_slack=True)
        self._templates: dict[str, Template] = {}
        self._slack_templates: dict[str, Template] = {}
        self._expressions: dict[str, TemplateExpression] = {}

    # -- compiling (cached) --

    def _template(self, source: str, escape: str | None = None) -> Template:
        cache, env = (
            (self._slack_templates, self._slack_env)
            if escape == "slack"
            else (self._templates, self._env)
        )
        compiled = cache.get(source)
        if compiled is None:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            compiled = cache[source] = env.from_string(source)
        return compiled

    def _expression(self, source: str) -> TemplateExpression:
        compiled = self._expressions.get(source)
        if compiled is None:
            if len(self._expressions) >= _CACHE_LIMIT:
                self._expressions.clear()
            compiled = self._env.compile_expression(source, undefined_to_none=False)
            self._expressions[source] = compiled
        return compiled

    @staticmethod
    def _strip_braces(expression: str) -> str:
        lone = _LONE.match(expression.strip())
        return lone.group("expr").strip() if lone else expression.strip()

    # -- budgets --

    @contextlib.contextmanager
    def deadline(self, deadline: float | None) -> Iterator[None]:
        """Renders inside the block stop at `deadline` (a `time.monotonic()` instant).

        For a caller that renders through others (a step's `if:`, its parameters, its
        action's template file): `with templates.deadline(step_deadline): …`. A render given
        an earlier `deadline=` of its own stops at that one.
        """
        token = _scope_deadline.set(deadline)
        try:
            yield
        finally:
            _scope_deadline.reset(token)

    def _budget(self, deadline: float | None) -> Budget:
        began = time.monotonic()
        scoped = _scope_deadline.get()
        if deadline is None or (scoped is not None and scoped < deadline):
            deadline = scoped
        given = deadline is not None
        if deadline is None:
            deadline = began + self.max_seconds
        return Budget(deadline, began, self.max_operations, self.max_built, given)

    # -- rendering --

    def render_value(
        self,
        value: Any,
        context: Mapping[str, Any],
        *,
        escape: str | None = None,
        deadline: float | None = None,
    ) -> Any:
        """Render each string in `value` (dicts, lists walked); a lone `{{ x }}` keeps x's type.

        With `escape="slack"` every inserted value is escaped for Slack mrkdwn (`&`, `<`,
        `>`), so event data cannot form mentions or links; the template's own text and
        values marked `| safe` are left as written. All the strings share one budget; past
        `deadline` (a `time.monotonic()` instant) the render stops with a TemplateError.
        """
        token = current_context.set(context)
        budget = start_budget(self._budget(deadline))
        try:
            return self._render_value(value, context, escape)
        finally:
            end_budget(budget)
            current_context.reset(token)

    def _render_value(self, value: Any, context: Mapping[str, Any], escape: str | None) -> Any:
        if isinstance(value, str):
            return self._render_string(value, context, escape)
        if isinstance(value, Mapping):
            return {k: self._render_value(v, context, escape) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._render_value(v, context, escape) for v in value]
        return value

    def _render_string(
        self, source: str, context: Mapping[str, Any], escape: str | None = None
    ) -> Any:
        if "{" not in source:
            return source
        lone = _LONE.match(source)
        if lone is not None:
            try:
                expression = self._expression(lone.group("expr").strip())
            except TemplateSyntaxError:
                pass  # Not a lone expression after all; the template path reports errors.
            else:
                try:
                    raw = expression(context)
                    value = native(raw)
                except Exception as exc:
                    raise TemplateError(f"template {short(source)!r}: {message_of(exc)}") from exc
                if escape == "slack" and not isinstance(raw, Markup | SlackText):
                    value = slack_deep(value)
                return value
        try:
            template = self._template(source, escape)
        except TemplateSyntaxError as exc:
            raise TemplateError(self._syntaxmessage_of(exc, source)) from exc
        where = f"template {short(source)!r}"
        return self._render(template, context, where, inline=True, template_source=source)

    def _render(
        self,
        template: Template,
        context: Mapping[str, Any],
        where: str,
        *,
        inline: bool = False,
        template_source: str | None = None,
    ) -> str:
        chunks: list[str] = []
        chars = size = 0
        exact = False  # UTF-8 bytes are counted once the text could reach the limit
        try:
            for chunk in template.generate(context):
                chunks.append(chunk)
                chars += len(chunk)
                if exact:
                    size += len(chunk.encode("utf-8", "surrogatepass"))
                elif chars * 4 > MAX_OUTPUT:
                    exact = True
                    size = sum(len(c.encode("utf-8", "surrogatepass")) for c in chunks)
                if size > MAX_OUTPUT:
                    raise TemplateError(
                        f"{where}: output exceeds the {MAX_OUTPUT // 1024} KiB limit"
                    )
        except TemplateError:
            raise
        except Exception as exc:
            line = error_line(exc, template.filename)
            if line is None:
                at = where
            elif inline:
                at = f"{where} (line {line})" if "\n" in (template_source or "") else where
            else:
                at = f"{where}:{line}"
            raise TemplateError(f"{at}: {message_of(exc)}") from exc
        return "".join(chunks)

    def render_file(
        self, name: str, context: Mapping[str, Any], *, deadline: float | None = None
    ) -> Any:
        """Render a template file; `*.json.j2` output is parsed as JSON, anything else is text."""
        where = self._file_label(name)
        if self._loader is None:
            raise TemplateError(self._not_found(name))
        env = self._json_env if name.endswith(".json.j2") else self._env
        token = current_context.set(context)
        budget = start_budget(self._budget(deadline))
        try:
            try:
                template = env.get_template(name)
            except TemplateNotFound:
                raise TemplateError(self._not_found(name)) from None
            except TemplateSyntaxError as exc:
                raise TemplateError(f"{where}:{exc.lineno}: {exc.message}") from exc
            text = self._render(template, context, where)
        finally:
            end_budget(budget)
            current_context.reset(token)
        if env is not self._json_env:
            return text
        try:
            return json.loads(text)
        except ValueError as exc:
            problem = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            line = exc.lineno if isinstance(exc, json.JSONDecodeError) else 1
            shown = text.splitlines()[line - 1] if text.splitlines() else ""
            raise TemplateError(
                f"{where}: output is not valid JSON: {problem} at output line {line}: "
                f"{short(shown.strip())!r}"
            ) from None

    def evaluate(
        self, expression: str, context: Mapping[str, Any], *, deadline: float | None = None
    ) -> Any:
        """The value of an expression written without braces (`data.amount > 1000`)."""
        source = self._strip_braces(expression)
        try:
            compiled = self._expression(source)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"expression {short(source)!r}: {exc.message}") from exc
        token = current_context.set(context)
        budget = start_budget(self._budget(deadline))
        try:
            return native(compiled(context))
        except Exception as exc:
            raise TemplateError(f"expression {short(source)!r}: {message_of(exc)}") from exc
        finally:
            end_budget(budget)
            current_context.reset(token)

    # -- checking (for the loader and `bridge validate`) --

    def check_template(self, source: str) -> str | None:
        """What is wrong with a template string, or None when it compiles."""
        if "{" not in source:
            return None
        lone = _LONE.match(source)
        if lone is not None:
            try:
                self._expression(lone.group("expr").strip())
                return None
            except TemplateSyntaxError:
                pass
        try:
            self._template(source)
        except TemplateSyntaxError as exc:
            return self._syntaxmessage_of(exc, source, prefix=False)
        return None

    def check_expression(self, expression: str) -> str | None:
        """What is wrong with an expression, or None when it compiles."""
        source = self._strip_braces(expression)
        if not source:
            return "empty expression"
        try:
            self._expression(source)
        except TemplateSyntaxError as exc:
            return str(exc.message)
        return None

    def check_file(self, name: str) -> str | None:
        """What is wrong with a template file (missing, outside the directory, bad syntax)."""
        if self._loader is None:
            return f"template {name!r} given but no templates directory is configured"
        env = self._json_env if name.endswith(".json.j2") else self._env
        try:
            env.get_template(name)
        except TemplateNotFound:
            return self._not_found(name)
        except TemplateSyntaxError as exc:
            return f"{self._file_label(name)}:{exc.lineno}: {exc.message}"
        return None

    def names(self) -> Iterator[str]:
        """The template files available, relative to the templates directory."""
        if self.templates_dir is None or not self.templates_dir.is_dir():
            return
        for path in sorted(self.templates_dir.rglob("*.j2")):
            yield path.relative_to(self.templates_dir).as_posix()

    # -- messages --

    def _file_label(self, name: str) -> str:
        if self.templates_dir is None:
            return name
        return (self.templates_dir / name).as_posix()

    def _not_found(self, name: str) -> str:
        if self._loader is None:
            return f"template {name!r} given but no templates directory is configured"
        if self._loader.resolve(name) is None:
            return (
                f"template name {name!r} is not allowed; expected a *.j2 file inside "
                f"{self.templates_dir}"
            )
        if self.templates_dir is not None and not self.templates_dir.is_dir():
            return (
                f"template {name!r} not found: the templates directory {self.templates_dir} "
                "does not exist"
            )
        return f"template {name!r} not found in {self.templates_dir}"

    @staticmethod
    def _syntaxmessage_of(exc: TemplateSyntaxError, source: str, *, prefix: bool = True) -> str:
        where = f" (template line {exc.lineno})" if "\n" in source.strip() else ""
        text = f"{exc.message}{where}"
        return f"template {short(source)!r}: invalid template: {text}" if prefix else text
