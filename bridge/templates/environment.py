"""The sandboxed Jinja environment that renders action parameters, templates and conditions.

Templates and expressions run in Jinja's immutable sandbox with strict undefined: no access
to Python internals, files, network or the environment. Output is capped at 64 KiB, and the
operations that could build a huge value from a small template (``*``, ``**``, ``%``, ``+``,
``~``, padding, ``replace``, ``range``) are bounded on the way. Each render has a budget
(bridge.templates.bounds): a number of operations, a deadline (the caller's, such as the end of
its step, or `MAX_SECONDS` from its start) and a number of bytes it may build in all; past
any of them it stops with a TemplateError that says which.

In ``*.json.j2`` templates every value written with ``{{ … }}`` is JSON-escaped and
Slack-escaped (``&``, ``<``, ``>``), so event data can neither break the JSON nor trigger an
``<!channel>`` mention; ``| safe`` writes a value exactly as it is.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import re
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    Undefined,
)
from jinja2.environment import Template, TemplateExpression
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.utils import missing
from markupsafe import Markup

from bridge.errors import TemplateError
from bridge.templates.bounds import (
    MAX_BUILT,
    MAX_OPERATIONS,
    MAX_OUTPUT,
    MAX_SECONDS,
    BoundedNamespace,
    BoundedSandbox,
    Budget,
    BudgetExceeded,
    bounded_filter,
    bounded_range,
    budgeted_filter,
    budgeted_test,
    check_size,
    end_budget,
    start_budget,
)

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
_SLUG_STRIP = re.compile(r"[^\w\s-]")
_SLUG_JOIN = re.compile(r"[-\s_]+")


# --- helpers exposed as filters and globals ---------------------------------------------


def now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def slack_escape(value: Any) -> str:
    """Escape `&`, `<` and `>` so text cannot form Slack links or mentions (`<!channel>`)."""
    if isinstance(value, SlackText):
        return value
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return SlackText(text)


class SlackText(str):
    """A string already escaped for Slack (not escaped twice in JSON templates)."""

    __slots__ = ()


def _slack_deep(value: Any) -> Any:
    """The value with every string inside escaped for Slack."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return slack_escape(value)
    if isinstance(value, Mapping):
        return {k: _slack_deep(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_slack_deep(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def tojson(value: Any, indent: int | None = None) -> Markup:
    """The value as JSON (non-ASCII kept, datetimes as ISO 8601)."""
    text = json.dumps(value, ensure_ascii=False, indent=indent, default=_json_default)
    return Markup(text)  # noqa: S704 - JSON text, never HTML


def _tojson_for_slack(value: Any, indent: int | None = None) -> Markup:
    return tojson(_slack_deep(value), indent)


def _to_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"datetimeformat cannot read {value!r} as a date") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValueError(f"datetimeformat cannot read {value!r} ({type(value).__name__}) as a date")


def datetimeformat(value: Any, fmt: str = "%Y-%m-%d %H:%M UTC", tz: str = "UTC") -> str:
    """Format a datetime, an ISO 8601 string or epoch seconds (UTC unless `tz` names a zone)."""
    moment = _to_datetime(value)
    if tz != "UTC":
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            moment = moment.astimezone(ZoneInfo(tz))
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"datetimeformat: unknown time zone {tz!r}") from None
    else:
        moment = moment.astimezone(UTC)
    return moment.strftime(fmt)


def slugify(value: Any) -> str:
    """`"Hero Banner (v2)"` → `"hero-banner-v2"`."""
    text = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode()
    text = _SLUG_STRIP.sub("", text).strip().lower()
    return _SLUG_JOIN.sub("-", text).strip("-")


# --- messages a person can act on -------------------------------------------------------

_current_context: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "bridge_template_context", default=None
)
# The deadline set by `Templates.deadline()` for the renders inside it.
_scope_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "bridge_template_deadline", default=None
)


def _path_of(target: object) -> str | None:
    """The dotted name under which `target` sits in the context being rendered, if only one."""
    context = _current_context.get()
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


class _Undefined(StrictUndefined):
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


# --- the template directory -------------------------------------------------------------


class _DirectoryLoader(BaseLoader):
    """Loads `*.j2` files from one directory; names never escape it (`..`, symlinks)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get_source(self, environment: Any, template: str) -> tuple[str, str, Callable[[], bool]]:
        path = self.resolve(template)
        if path is None or not path.is_file():
            raise TemplateNotFound(template)
        mtime = path.stat().st_mtime
        source = path.read_text(encoding="utf-8")
        return source, template, lambda: path.is_file() and path.stat().st_mtime == mtime

    def resolve(self, name: str) -> Path | None:
        if not name.endswith(".j2") or "\\" in name or name.startswith("/"):
            return None
        root = self.directory.resolve()
        path = (root / name).resolve()
        return path if path.is_relative_to(root) else None


# --- Templates ------------------------------------------------------------------------


def _build_env(
    loader: BaseLoader | None, *, for_json: bool, for_slack: bool = False
) -> BoundedSandbox:
    env = BoundedSandbox(
        undefined=_Undefined,
        autoescape=False,
        loader=loader,
        keep_trailing_newline=True,
        auto_reload=True,
        finalize=_finalize_json if for_json else (_finalize_slack if for_slack else None),
    )
    env.globals.clear()
    env.globals.update(
        {"range": bounded_range, "dict": dict, "namespace": BoundedNamespace, "now": now}
    )
    for name in ("center", "indent", "truncate", "wordwrap", "replace", "join", "format"):
        env.filters[name] = bounded_filter(env.filters[name], check_format=name == "format")
    env.filters.update(
        {
            "tojson": _tojson_for_slack if for_json else tojson,
            "datetimeformat": datetimeformat,
            "dateformat": datetimeformat,
            "slugify": slugify,
            "slack_escape": slack_escape,
        }
    )
    for name, func in env.filters.items():
        env.filters[name] = budgeted_filter(func, name)
    for name, test in env.tests.items():
        env.tests[name] = budgeted_test(test)
    return env


def _finalize_slack(value: Any) -> Any:
    """How `{{ value }}` is written into Slack mrkdwn given inline: escaped, unless `| safe`."""
    if isinstance(value, (Markup, Undefined)):
        return value
    return slack_escape(value)


def _finalize_json(value: Any) -> Any:
    """How `{{ value }}` is written into a JSON template."""
    if isinstance(value, (Markup, Undefined)):
        return value
    if isinstance(value, str):
        text = value if isinstance(value, SlackText) else slack_escape(value)
        return json.dumps(text, ensure_ascii=False)[1:-1]
    return json.dumps(_slack_deep(value), ensure_ascii=False, default=_json_default)


def _native(value: Any) -> Any:
    """A rendered value as JSON-able data: tuples become lists, datetimes ISO strings."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if value is None or isinstance(value, bool | int | float | dict | list):
        return value
    if isinstance(value, str):
        return str(check_size(str(value)))
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _short(source: str) -> str:
    return source if len(source) <= 60 else source[:57] + "..."


def _error_line(exc: BaseException, filename: str | None) -> int | None:
    """The template line where a render error happened, from Jinja's rewritten traceback."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if filename is not None and tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _message(exc: BaseException) -> str:
    if isinstance(exc, UndefinedError | SecurityError | TemplateSyntaxError | BudgetExceeded):
        return str(exc.message if isinstance(exc, TemplateSyntaxError) else exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
        loader = _DirectoryLoader(templates_dir) if templates_dir is not None else None
        self._loader = loader
        self._env = _build_env(loader, for_json=False)
        self._json_env = _build_env(loader, for_json=True)
        self._slack_env = _build_env(loader, for_json=False, for_slack=True)
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
        token = _current_context.set(context)
        budget = start_budget(self._budget(deadline))
        try:
            return self._render_value(value, context, escape)
        finally:
            end_budget(budget)
            _current_context.reset(token)

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
                    value = _native(raw)
                except Exception as exc:
                    raise TemplateError(f"template {_short(source)!r}: {_message(exc)}") from exc
                if escape == "slack" and not isinstance(raw, Markup | SlackText):
                    value = _slack_deep(value)
                return value
        try:
            template = self._template(source, escape)
        except TemplateSyntaxError as exc:
            raise TemplateError(self._syntax_message(exc, source)) from exc
        where = f"template {_short(source)!r}"
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
            line = _error_line(exc, template.filename)
            if line is None:
                at = where
            elif inline:
                at = f"{where} (line {line})" if "\n" in (template_source or "") else where
            else:
                at = f"{where}:{line}"
            raise TemplateError(f"{at}: {_message(exc)}") from exc
        return "".join(chunks)

    def render_file(
        self, name: str, context: Mapping[str, Any], *, deadline: float | None = None
    ) -> Any:
        """Render a template file; `*.json.j2` output is parsed as JSON, anything else is text."""
        where = self._file_label(name)
        if self._loader is None:
            raise TemplateError(self._not_found(name))
        env = self._json_env if name.endswith(".json.j2") else self._env
        token = _current_context.set(context)
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
            _current_context.reset(token)
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
                f"{_short(shown.strip())!r}"
            ) from None

    def evaluate(
        self, expression: str, context: Mapping[str, Any], *, deadline: float | None = None
    ) -> Any:
        """The value of an expression written without braces (`data.amount > 1000`)."""
        source = self._strip_braces(expression)
        try:
            compiled = self._expression(source)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"expression {_short(source)!r}: {exc.message}") from exc
        token = _current_context.set(context)
        budget = start_budget(self._budget(deadline))
        try:
            return _native(compiled(context))
        except Exception as exc:
            raise TemplateError(f"expression {_short(source)!r}: {_message(exc)}") from exc
        finally:
            end_budget(budget)
            _current_context.reset(token)

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
            return self._syntax_message(exc, source, prefix=False)
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
        return f"template {name!r} not found in {self.templates_dir}"

    @staticmethod
    def _syntax_message(exc: TemplateSyntaxError, source: str, *, prefix: bool = True) -> str:
        where = f" (template line {exc.lineno})" if "\n" in source.strip() else ""
        text = f"{exc.message}{where}"
        return f"template {_short(source)!r}: invalid template: {text}" if prefix else text
