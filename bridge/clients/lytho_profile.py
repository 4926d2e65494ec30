"""The Lytho API profile: every assumption about Lytho's APIs, with its source (clients).

Lytho's documents name operations but give few paths, no page shapes and no field lists,
so what lytbridge sends and reads is written down here once, each entry with where it
comes from (lytho_profile.yaml beside this module). A team whose tenant differs overrides
entries with a file (`BRIDGE_LYTHO_PROFILE`), checked at start-up with `file:line:col`
errors; `bridge doctor` says which entries its tenant confirms. docs/lytho-api.md lists
them all.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml

from bridge.clients.ids import path_segment
from bridge.errors import ConfigError
from bridge.settings import parse_rate_limits

DEFAULTS: Final = Path(__file__).with_name("lytho_profile.yaml")
METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
ITEM_KEYS: Final = ("content", "items", "data", "results")  # the common page shapes
LIST: Final = "list"  # `pages.items: list`: the answer is a bare JSON list
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Entry:
    """One assumption: its key, value, where the value comes from, and who set it."""

    key: str
    value: Any
    source: str
    origin: str = "default"  # or "path.yaml:LINE" when an override file set it


@dataclass(frozen=True)
class Operation:
    """How one operation is called: method, path, and where a list of ids goes."""

    name: str
    method: str
    path: str
    ids_in: str | None = None  # "body" (a JSON field) or "query" (repeated parameter)
    ids_name: str | None = None


@dataclass(frozen=True)
class PageStyle:
    """How one API pages its lists."""

    page_param: str
    size_param: str
    first_page: int
    sizes: tuple[int, ...]  # accepted sizes (DAM: 1…max_size, as one entry: the maximum)
    items: str
    total: str
    total_pages: str
    last: str

    @property
    def size(self) -> int:
        """The page size lytbridge asks for: the largest the API accepts."""
        return max(self.sizes)


class LythoProfile:
    """Every entry of the profile, defaults overlaid with an override file's."""

    def __init__(self, entries: Mapping[str, Entry], path: Path | None = None) -> None:
        self.entries: Mapping[str, Entry] = MappingProxyType(dict(sorted(entries.items())))
        self.path = path
        v = self.value
        self.dam_pages = PageStyle(
            v("dam.pages.page_param"),
            v("dam.pages.size_param"),
            v("dam.pages.first_page"),
            (v("dam.pages.max_size"),),
            v("dam.pages.items"),
            v("dam.pages.total"),
            v("dam.pages.total_pages"),
            v("dam.pages.last"),
        )
        self.workflow_pages = PageStyle(
            v("workflow.pages.page_param"),
            v("workflow.pages.size_param"),
            v("workflow.pages.first_page"),
            tuple(v("workflow.pages.sizes")),
            v("workflow.pages.items"),
            v("workflow.pages.total"),
            v("workflow.pages.total_pages"),
            v("workflow.pages.last"),
        )

    def entry(self, key: str) -> Entry:
        try:
            return self.entries[key]
        except KeyError:
            raise KeyError(f"the Lytho profile has no entry {key!r}") from None

    def value(self, key: str) -> Any:
        return self.entry(key).value

    @property
    def overridden(self) -> tuple[str, ...]:
        """The keys an override file set."""
        return tuple(k for k, e in self.entries.items() if e.origin != "default")

    def op(self, name: str) -> Operation:
        spec = self.value(f"dam.operations.{name}")
        ids = spec.get("ids") or {}
        return Operation(name, spec["method"], spec["path"], ids.get("in"), ids.get("name"))

    def dam_path(self, name: str, **ids: str | int) -> str:
        """The path of `dam.paths.<name>` or of operation `name`, placeholders URL-quoted."""
        key = f"dam.paths.{name}"
        template = self.value(key) if key in self.entries else self.op(name).path
        return _fill(template, ids)

    def workflow_kind(self, kind: str) -> str:
        return str(self.value(f"workflow.kinds.{kind}"))

    def workflow_path(self, name: str, *, kind: str, id: str | int | None = None) -> str:
        """The path of `workflow.paths.<name>` for `kind` (and `id`), URL-quoted."""
        ids: dict[str, str | int] = {"kind": self.workflow_kind(kind)}
        if id is not None:
            ids["id"] = id
        return _fill(self.value(f"workflow.paths.{name}"), ids)

    def rate_limits(self, api: str) -> tuple[tuple[int, float, int | None], ...]:
        """`dam` or `workflow` limits as (count, period, burst) tuples."""
        key = f"{api}.rate_limits"
        return parse_rate_limits(key, self.value(key))


def _fill(template: str, ids: Mapping[str, str | int]) -> str:
    """`template` with each id as one quoted path segment ('..' and the like refused)."""
    return template.format(**{k: path_segment(k, v) for k, v in ids.items()})


# Validation of one value against the default it replaces: returns the value to keep, or
# raises ValueError with what is wrong.


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _path(value: Any, default: str) -> str:
    if not isinstance(value, str) or not value.strip() or value.startswith("/") or "://" in value:
        raise ValueError("must be a path relative to the API's base URL, like 'assets/{asset_id}'")
    try:
        found = _placeholders(value)
    except ValueError as exc:
        raise ValueError(f"is not a valid path template ({exc})") from None
    wanted = _placeholders(default)
    if found != wanted:
        names = ", ".join("{" + n + "}" for n in sorted(wanted)) or "no placeholder"
        raise ValueError(f"must use exactly {names} (as the default {default!r} does)")
    return value


def _text(value: Any, default: Any, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise ValueError("must be a " + ("string" if empty else "non-empty string"))
    return value


def _integer(value: Any, default: Any, *, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"must be a whole number of at least {low}")
    return value


def _choice(*choices: str) -> Callable[[Any, Any], str]:
    def check(value: Any, default: Any) -> str:
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(repr(c) for c in choices))
        return str(value)

    return check


def _names(value: Any, default: Any) -> list[Any]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a non-empty list of field names")
    return value


def _sizes(value: Any, default: Any) -> list[int]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError("must be a non-empty list of page sizes, like [10, 20, 30]")
    return value


def _limits(value: Any, default: Any) -> str:
    try:
        if not isinstance(value, str):
            raise ConfigError("not text")
        parse_rate_limits("this entry", value)
    except ConfigError:
        raise ValueError(
            "must be limits like '20/1m:1,30000/1d' (count/period[:burst], period in s, m, "
            f"h or d; a burst at most its count), not {value!r}"
        ) from None
    return value


def _operation(value: Any, default: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping like {method: POST, path: 'assets/{asset_id}/tags'}")
    unknown = set(value) - {"method", "path", "ids"}
    if unknown:
        raise ValueError(f"has unknown keys {sorted(unknown)}; expected method, path, ids")
    merged = {**default, **value}
    method = str(merged["method"]).upper()
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(sorted(METHODS))}, not {method!r}")
    merged["method"] = method
    merged["path"] = _path(merged["path"], default["path"])
    if "ids" in default:
        ids = merged["ids"]
        if (
            not isinstance(ids, Mapping)
            or set(ids) != {"in", "name"}
            or ids["in"] not in ("body", "query")
            or not isinstance(ids["name"], str)
            or not ids["name"]
        ):
            raise ValueError("ids must be {in: body or query, name: the field or parameter name}")
    elif "ids" in value:
        raise ValueError("takes no ids (it sends no list of ids)")
    return merged


def _checker(key: str) -> Callable[[Any, Any], Any]:
    last = key.rsplit(".", 1)[-1]
    if ".operations." in key:
        return _operation
    if ".paths." in key:
        return _path
    if key.endswith(".rate_limits"):
        return _limits
    if ".compared." in key:
        return _names
    if key == "workflow.pages.sizes":
        return _sizes
    if last == "first_page":
        return _integer
    if last == "max_size":
        return lambda v, d: _integer(v, d, low=1)
    if key == "workflow.auth.token_auth":
        return _choice("basic", "body")
    if key == "dam.upload.method":
        return _choice("PUT", "POST")
    if (
        last in ("scheme", "total", "total_pages", "last")
        or key == "workflow.search.modified_since"
    ):
        return _text  # "" means: none
    return lambda v, d: _text(v, d, empty=False)


# Loading.


@cache
def _defaults() -> Mapping[str, Entry]:
    raw = yaml.safe_load(DEFAULTS.read_text(encoding="utf-8"))
    return {key: Entry(key, spec["value"], spec["source"]) for key, spec in sorted(raw.items())}


def default_profile() -> LythoProfile:
    return _cached(None, 0.0)


def load_profile(path: Path | str | None) -> LythoProfile:
    """The defaults overlaid with the file at `path` (None: the defaults alone).

    Raises ConfigError listing every problem as `path:line:col: message`.
    """
    if path is None or str(path) == "":
        return default_profile()
    file = Path(path)
    try:
        stamp = file.stat().st_mtime
    except OSError as exc:
        raise ConfigError(
            f"BRIDGE_LYTHO_PROFILE names {file}, which cannot be read ({exc.strerror}); "
            "fix the path or unset it"
        ) from None
    return _cached(file, stamp)


@cache
def _cached(file: Path | None, stamp: float) -> LythoProfile:
    entries = dict(_defaults())
    if file is not None:
        entries.update(_overrides(file, entries))
    return LythoProfile(entries, file)


def _overrides(file: Path, defaults: Mapping[str, Entry]) -> dict[str, Entry]:
    try:
        text = file.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot be read as UTF-8 text ({exc})") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem}") from None
    if root is None:
        return {}
    found: dict[str, Entry] = {}
    places: dict[str, str] = {}  # where each key was set, to refuse a second setting
    problems: list[str] = []

    def at(node: yaml.Node) -> str:
        return f"{file}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"

    def walk(node: yaml.Node, prefix: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            problems.append(f"{at(node)}: expected a mapping of profile keys here")
            return
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else ""
            if not isinstance(name, str) or not _KEY.match(name):
                problems.append(f"{at(key_node)}: {name!r} is not a profile key")
                continue
            key = f"{prefix}{name}"
            if key in defaults:
                if key in places:  # nested and dotted, or a duplicate YAML key
                    first, again = places[key], at(key_node)
                    problems.append(f"{again}: {key} is set twice: at {first} and {again}")
                    continue
                places[key] = at(key_node)
                place = at(value_node)
                default = defaults[key]
                try:
                    value = yaml.safe_load(yaml.serialize(value_node))
                    checked = _checker(key)(value, default.value)
                except ValueError as exc:
                    problems.append(f"{place}: {key} {exc}")
                    continue
                origin = place.rsplit(":", 1)[0]
                found[key] = Entry(key, checked, default.source, origin)
            elif any(k.startswith(key + ".") for k in defaults):
                walk(value_node, key + ".")
            else:
                near = sorted(k for k in defaults if k.startswith(prefix))[:6]
                hint = f"; keys here: {', '.join(near)}" if near else ""
                problems.append(f"{at(key_node)}: unknown profile key {key!r}{hint}")

    walk(root, "")
    if problems:
        raise ConfigError("the Lytho profile override has problems:\n" + "\n".join(problems))
    return found


def markdown_table(profile: LythoProfile) -> str:
    """Every entry as a Markdown table (docs/lytho-api.md holds it; a test keeps it current)."""
    rows = ["| key | default | source |", "| --- | --- | --- |"]
    for entry in profile.entries.values():
        value = entry.value
        if isinstance(value, Mapping):
            shown = " ".join(
                f"{k}: {v['in']} {v['name']}" if isinstance(v, Mapping) else str(v)
                for k, v in value.items()
                if k != "method"
            )
            shown = (
                f"{value['method']} {shown.removeprefix('path: ')}" if "method" in value else shown
            )
        elif isinstance(value, list):
            shown = ", ".join(map(str, value))
        else:
            shown = str(value) if value != "" else '""'
        cell = shown.replace("|", "\\|")
        rows.append(f"| `{entry.key}` | `{cell}` | {entry.source.replace('|', '/')} |")
    return "\n".join(rows) + "\n"
