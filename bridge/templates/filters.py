"""What a template may call, how its output is escaped, and the sandbox offering it (templates).

In ``*.json.j2`` templates every value written with ``{{ … }}`` is JSON-escaped and
Slack-escaped (``&``, ``<``, ``>``), so event data can neither break the JSON nor trigger an
``<!channel>`` mention; ``| safe`` writes a value exactly as it is.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from jinja2 import BaseLoader, Undefined
from markupsafe import Markup

from bridge.templates.bounds import BoundedNamespace, bounded_filter, bounded_range, check_size
from bridge.templates.budget import budgeted_filter, budgeted_test
from bridge.templates.messages import NamedUndefined
from bridge.templates.sandbox import BoundedSandbox
from bridge.templates.unknown import Unknown

_SLUG_STRIP = re.compile(r"[^\w\s-]")
_SLUG_JOIN = re.compile(r"[-\s_]+")


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


def slack_deep(value: Any) -> Any:
    """The value with every string inside escaped for Slack."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return slack_escape(value)
    if isinstance(value, Mapping):
        return {k: slack_deep(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [slack_deep(v) for v in value]
    return value


def json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def tojson(value: Any, indent: int | None = None) -> Markup:
    """The value as JSON (non-ASCII kept, datetimes as ISO 8601)."""
    text = json.dumps(value, ensure_ascii=False, indent=indent, default=json_default)
    return Markup(text)  # noqa: S704 - JSON text, never HTML


def _tojson_for_slack(value: Any, indent: int | None = None) -> Markup:
    return tojson(slack_deep(value), indent)


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


def build_env(
    loader: BaseLoader | None, *, for_json: bool, for_slack: bool = False
) -> BoundedSandbox:
    env = BoundedSandbox(
        undefined=NamedUndefined,
        autoescape=False,
        loader=loader,
        keep_trailing_newline=True,
        auto_reload=True,
        finalize=finalize_json if for_json else (finalize_slack if for_slack else None),
    )
    env.globals.clear()
    env.globals.update(
        {"range": bounded_range, "dict": dict, "namespace": BoundedNamespace, "now": now}
    )
    for name in ("center", "indent", "truncate", "wordwrap", "replace", "join", "format"):
        env.filters[name] = bounded_filter(env.filters[name], check_format=name == "format")
    env.filters["join"] = _joined_placeholder(env.filters["join"])
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


def _joined_placeholder(join: Callable[..., Any]) -> Callable[..., Any]:
    """`join`, but a placeholder (a dry run's earlier step result) joins as the placeholder
    of its items, still a placeholder (`<steps.proof.user_names[*]>`), not as text."""

    def joined(eval_ctx: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, Unknown):
            return value.each()
        return join(eval_ctx, value, *args, **kwargs)

    return functools.wraps(join)(joined)  # keeps Jinja's pass_eval_context marker


def finalize_slack(value: Any) -> Any:
    """How `{{ value }}` is written into Slack mrkdwn given inline: escaped, unless `| safe`."""
    if isinstance(value, (Markup, Undefined)):
        return value
    return slack_escape(value)


def finalize_json(value: Any) -> Any:
    """How `{{ value }}` is written into a JSON template."""
    if isinstance(value, (Markup, Undefined)):
        return value
    if isinstance(value, str):
        text = value if isinstance(value, SlackText) else slack_escape(value)
        return json.dumps(text, ensure_ascii=False)[1:-1]
    return json.dumps(slack_deep(value), ensure_ascii=False, default=json_default)


def native(value: Any) -> Any:
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
