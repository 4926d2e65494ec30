"""The Lytho dialect a sandbox speaks: paths, pages, field names, and override files (sandbox).

Written from Lytho's documents (api-docs/lytho-*.txt) and the profile's default values
(PROFILE.md), never from the client's tables, so a sandbox started with another dialect
shows whether the client really follows its profile. An override file has the profile's
format: the same keys, nested or dotted, plain values.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode

from bridge.sandbox.lytho_keys import KEYS, check_routes

__all__ = ["LythoDialect", "Operation", "Pages"]


@dataclass(frozen=True)
class Operation:
    """A DAM write (or metadata read): its method, path and where its id list goes."""

    name: str
    method: str
    path: str
    ids_in: str | None  # "body", "query" or None
    ids_name: str | None


@dataclass(frozen=True)
class Pages:
    """How one API pages a list: query parameters and the keys of a page's answer."""

    page_param: str
    size_param: str
    first_page: int
    max_size: int
    sizes: tuple[int, ...]  # the only sizes allowed; () = any from 1 to max_size
    items: str  # "list": the answer is a bare JSON list
    total: str  # "" = left out
    total_pages: str
    last: str


@dataclass(frozen=True)
class LythoDialect:
    """Every key of the profile with the value this sandbox uses (defaults unless overridden)."""

    values: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({k: s.default for k, s in KEYS.items()})
    )
    overridden: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, origin: str = "") -> LythoDialect:
        """The defaults with `data`'s entries (nested or dotted keys) over them; ValueError."""
        found: dict[str, tuple[Any, str]] = {}
        if data is not None:
            if not isinstance(data, Mapping):
                raise ValueError(f"{origin or 'the dialect'}: expected a mapping of profile keys")
            _walk(data, "", _DictTree(origin), found)
        return cls._build(found)

    @classmethod
    def from_file(cls, path: str | Path) -> LythoDialect:
        """The defaults with a YAML override file's entries over them; ValueError file:line:col."""
        name = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{name}: cannot read the dialect file ({exc})") from None
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
            problem = getattr(exc, "problem", None) or str(exc)
            raise ValueError(f"{where}: {problem}") from None
        found: dict[str, tuple[Any, str]] = {}
        if root is not None and not (isinstance(root, ScalarNode) and root.value == ""):
            tree = _YamlTree(name)
            if not isinstance(root, MappingNode):
                raise ValueError(f"{tree.where(root)}: expected a mapping of profile keys")
            _walk(root, "", tree, found)
        return cls._build(found)

    @classmethod
    def _build(cls, found: dict[str, tuple[Any, str]]) -> LythoDialect:
        values = {k: spec.default for k, spec in KEYS.items()}
        for key, (value, where) in found.items():
            spec = KEYS[key]
            try:
                values[key] = spec.check(value)
            except ValueError as exc:
                prefix = f"{where}: " if where else ""
                raise ValueError(f"{prefix}{key} ({spec.meaning}): {exc}") from None
        clash = check_routes(values)
        if clash is not None:
            key, other, what = clash
            if key not in found:  # name the entry the override set
                key, other = other, key
            where = found.get(key, (None, ""))[1]
            prefix = f"{where}: " if where else ""
            raise ValueError(f"{prefix}{key}: {what} is also {other}")
        return cls(MappingProxyType(values), tuple(sorted(found)))

    # What the sandboxes read.

    def value(self, key: str) -> Any:
        return self.values[key]

    def op(self, name: str) -> Operation:
        base = f"dam.operations.{name}"
        ids_in = self.values.get(f"{base}.ids.in")
        return Operation(
            name,
            self.values[f"{base}.method"],
            self.values[f"{base}.path"],
            ids_in,
            self.values.get(f"{base}.ids.name") if ids_in else None,
        )

    def dam_path(self, name: str) -> str:
        path: str = self.values[f"dam.paths.{name}"]
        return path

    def workflow_path(self, name: str) -> str:
        path: str = self.values[f"workflow.paths.{name}"]
        return path

    @property
    def dam_pages(self) -> Pages:
        return self._pages("dam", int(self.values["dam.pages.max_size"]), ())

    @property
    def workflow_pages(self) -> Pages:
        sizes = tuple(self.values["workflow.pages.sizes"])
        return self._pages("workflow", max(sizes), sizes)

    def _pages(self, api: str, max_size: int, sizes: tuple[int, ...]) -> Pages:
        v = self.values
        return Pages(
            v[f"{api}.pages.page_param"],
            v[f"{api}.pages.size_param"],
            v[f"{api}.pages.first_page"],
            max_size,
            sizes,
            v[f"{api}.pages.items"],
            v[f"{api}.pages.total"],
            v[f"{api}.pages.total_pages"],
            v[f"{api}.pages.last"],
        )

    @property
    def asset_fields(self) -> dict[str, str]:
        """The sandbox's own name of an asset field → the dialect's name of it."""
        names = ("tags", "metadata", "version", "modificationDate", "name", "fileName")
        keys = ("tags", "metadata", "version", "modified", "name", "file_name")
        return {n: self.values[f"dam.fields.asset_{k}"] for n, k in zip(names, keys, strict=True)}

    @property
    def workflow_fields(self) -> dict[str, str]:
        """`id`, `modifiedAt`, `status` → the dialect's names of them."""
        v = self.values
        return {
            "id": v["workflow.fields.id"],
            "modifiedAt": v["workflow.fields.modified"],
            "status": v["workflow.fields.status"],
        }

    @property
    def kinds(self) -> dict[str, str]:
        """Each Workflow kind → its path segment."""
        return {
            k.rsplit(".", 1)[1]: v
            for k, v in self.values.items()
            if k.startswith("workflow.kinds.")
        }


# Reading an override: one walk over nested or dotted keys, for dicts and YAML nodes alike.

_PREFIXES = {k.rsplit(".", n)[0] for k in KEYS for n in range(1, k.count(".") + 1)}


class _DictTree:
    def __init__(self, origin: str) -> None:
        self.origin = origin

    def items(self, node: Any) -> list[tuple[Any, Any]] | None:
        return list(node.items()) if isinstance(node, Mapping) else None

    def key(self, node: Any) -> Any:
        return node

    def python(self, node: Any) -> Any:
        return node

    def where(self, node: Any) -> str:
        return self.origin


class _YamlTree:
    def __init__(self, name: str) -> None:
        self.name = name

    def items(self, node: Node) -> list[tuple[Node, Node]] | None:
        return list(node.value) if isinstance(node, MappingNode) else None

    def key(self, node: Node) -> Any:
        return node.value if isinstance(node, ScalarNode) else None

    def python(self, node: Node) -> Any:
        try:
            return SafeConstructor().construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise ValueError(f"{self.where(node)}: {getattr(exc, 'problem', exc)}") from None

    def where(self, node: Node) -> str:
        mark = node.start_mark
        return f"{self.name}:{mark.line + 1}:{mark.column + 1}"


Tree = _DictTree | _YamlTree


def _walk(node: Any, prefix: str, tree: Tree, found: dict[str, tuple[Any, str]]) -> None:
    pairs = tree.items(node)
    assert pairs is not None
    for key_node, value_node in pairs:
        name = tree.key(key_node)
        where = tree.where(key_node)
        at = f"{where}: " if where else ""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{at}keys are names like dam.pages.first_page, got {name!r}")
        key = f"{prefix}.{name}" if prefix else name
        if key in KEYS:
            if key in found:
                first = f" (first at {found[key][1]})" if found[key][1] else ""
                raise ValueError(f"{at}{key} is set twice{first}")
            found[key] = (tree.python(value_node), where)
        elif key in _PREFIXES:
            if tree.items(value_node) is None:
                below = sorted(
                    {k[len(key) + 1 :].split(".")[0] for k in KEYS if k.startswith(key + ".")}
                )
                raise ValueError(f"{at}{key}: expected a mapping of {', '.join(below)}")
            _walk(value_node, key, tree, found)
        else:
            raise ValueError(f"{at}{_unknown(key)}")


def _unknown(key: str) -> str:
    if key.startswith("dam.operations.") and key.count(".") >= 3:
        op = ".".join(key.split(".")[:3])
        if op in _PREFIXES:
            fields = sorted(k[len(op) + 1 :] for k in KEYS if k.startswith(op + "."))
            return f"unknown key {key}; {op} has {', '.join(fields)}"
    candidates = sorted(KEYS) + sorted(_PREFIXES)
    close = difflib.get_close_matches(key, candidates, n=1)
    hint = f"; did you mean {close[0]}?" if close else "; the keys are listed in PROFILE.md"
    return f"unknown key {key}{hint}"
