"""What a rule's templates read and render, known without rendering them (rules → decide).

The loader uses it to report a step that reads a later step's result, and a parameter
whose template can only render a value of the wrong type.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jinja2
from jinja2 import nodes

from bridge.schema import type_name

# The JSON type of an event field, by its dotted path (`data.amount` → "number"), if known.
FieldType = Callable[[str], "str | None"]

_LONE = re.compile(r"\A\{\{-?(?P<expr>(?:(?!\}\}|\{\{).)*?)-?\}\}\Z", re.DOTALL)
# Only parses templates (never renders them), to see what they read and render.
_PARSER = jinja2.Environment(autoescape=False)  # noqa: S701 - nothing is rendered


def step_references(source: str) -> set[str]:
    """The step keys a template reads as `steps.<key>` or `steps['<key>']`."""
    if "steps" not in source:
        return set()
    try:
        tree = _PARSER.parse(source)
    except jinja2.TemplateSyntaxError:
        return set()  # reported by the template check
    found = set()
    for attr in tree.find_all(nodes.Getattr):
        if isinstance(attr.node, nodes.Name) and attr.node.name == "steps":
            found.add(attr.attr)
    for item in tree.find_all(nodes.Getitem):
        key = item.arg
        named = isinstance(key, nodes.Const) and isinstance(key.value, str)
        if named and isinstance(item.node, nodes.Name) and item.node.name == "steps":
            found.add(key.value)  # type: ignore[attr-defined]
    return found


def names_read(expression: str) -> set[str]:
    """The variables an expression (written without braces) reads: `item.id > 0` → {item}."""
    try:
        tree = _PARSER.parse("{{ " + expression + " }}")
    except jinja2.TemplateSyntaxError:
        return set()  # reported by the rule's check
    return {name.name for name in tree.find_all(nodes.Name) if name.ctx == "load"}


def var_paths(source: str) -> dict[tuple[str, ...], int]:
    """Every path a template reads under `vars` (`vars.channels.ops` → ("channels", "ops"),
    names and constant keys), each with its first line in the template (1-based); a path
    read only under a guard (`| default(…)`, `is defined`, `is undefined`), which stands
    for its last name missing, is left out."""
    if "vars" not in source:
        return {}
    try:
        tree = _PARSER.parse(source)
    except jinja2.TemplateSyntaxError:
        return {}  # reported by the template check
    # A guard covers the last name only: what a guarded path reads on its way (`vars.channels`
    # of `vars.channels.x | default(…)`) is its own node, still read.
    guarded = {
        id(node.node)
        for node in tree.find_all((nodes.Filter, nodes.Test))
        if node.name in _GUARDS and node.node is not None
    }
    reads: list[tuple[tuple[str, ...], int]] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        chain = _chain(node)
        if id(node) not in guarded and chain is not None and chain[0] == "vars":
            reads.append((chain[1], node.lineno))
    found: dict[tuple[str, ...], int] = {}
    for path, line in sorted(reads, key=lambda read: read[1]):
        found.setdefault(path, line)
    return found


# Filters and tests that stand for a missing last name.
_GUARDS = frozenset({"default", "d", "defined", "undefined"})


def _chain(expr: nodes.Node) -> tuple[str, tuple[str, ...]] | None:
    """The name a chain of attributes and constant keys starts from, and the names it reads
    (`data['a'].b` → ("data", ("a", "b"))); None for anything else (`vars[x]`, a call)."""
    names: list[str] = []
    while True:
        if isinstance(expr, nodes.Getattr):
            names.append(expr.attr)
            expr = expr.node
        elif (
            isinstance(expr, nodes.Getitem)
            and isinstance(expr.arg, nodes.Const)
            and isinstance(expr.arg.value, str)
        ):
            names.append(expr.arg.value)
            expr = expr.node
        else:
            break
    if isinstance(expr, nodes.Name) and names:
        return expr.name, tuple(reversed(names))
    return None


def _data_path(expr: nodes.Node) -> str | None:
    """`data.a.b` (or `data['a'].b`, or `steps.find.assets`) as a dotted path, or None."""
    chain = _chain(expr)
    if chain is not None and chain[0] in ("data", "steps"):
        return ".".join([chain[0], *chain[1]])
    return None


def rendered_type(source: Any, field_type: FieldType | None = None) -> str | None:
    """The JSON type a lone `{{ expression }}` renders to, when it can be known ahead.

    `field_type` gives the type of an event field (`data.amount`) or of an earlier step's
    result field (`steps.find.assets`) where it is known.
    """
    if not isinstance(source, str):
        return None
    lone = _LONE.match(source.strip())
    if lone is None:
        return None
    try:
        tree = _PARSER.parse(source.strip())
    except jinja2.TemplateSyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts = tree.body[0].nodes
    if len(parts) != 1:
        return None
    return _expression_type(parts[0], field_type)


def _expression_type(expr: nodes.Node, field_type: FieldType | None) -> str | None:
    if isinstance(expr, nodes.List | nodes.Tuple):
        return "array"
    if isinstance(expr, nodes.Dict):
        return "object"
    if isinstance(expr, nodes.Const):
        return type_name(expr.value)
    if isinstance(expr, nodes.Concat):
        return "string"
    if isinstance(expr, nodes.Filter):
        if expr.name in _ARRAY_FILTERS:
            return "array"
        if expr.name in _STRING_FILTERS:
            return "string"
        return _NUMBER_FILTERS.get(expr.name)
    path = _data_path(expr)
    if path is not None and field_type is not None:
        return field_type(path)
    return None


_ARRAY_FILTERS = frozenset(
    [
        "list",
        "sort",
        "unique",
        "map",
        "select",
        "reject",
        "selectattr",
        "rejectattr",
        "batch",
        "slice",
        "dictsort",
        "items",
    ]
)
_STRING_FILTERS = frozenset(
    [
        "join",
        "string",
        "lower",
        "upper",
        "title",
        "capitalize",
        "trim",
        "replace",
        "format",
        "truncate",
        "striptags",
        "urlencode",
        "center",
        "indent",
        "wordwrap",
        "tojson",
        "slugify",
        "datetimeformat",
        "e",
        "escape",
    ]
)
_NUMBER_FILTERS = {"length": "integer", "count": "integer", "int": "integer", "float": "number"}
