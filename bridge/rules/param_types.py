"""Whether a step's parameter has the type its action declares, and what to say when not.

One message for every place a wrong type shows (rules → decide): `bridge validate` (a
literal, or a template whose type is known ahead: a documented event field, a filter
such as `| length`, a list literal), `bridge fire --dry-run` and `bridge test` (the
value rendered for the given event), and the worker (the value rendered at run time):

    asset_id expects a string or integer, but data.tags is a list (lytho.tag_asset);
    to act on each item use for_each (docs/rules.md#loops)

`bridge validate`, the dry run and rule tests put the value's place first
(`rules/shop.yaml:6:22: asset_id expects …`); the worker, with no rule file at hand, does not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bridge.errors import TemplateError
from bridge.rules.source import Node, parse
from bridge.rules.template_analysis import step_references
from bridge.schema import ActionSchema, Param, type_name

# How a JSON type is named to a rule author.
WORDS = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "array": "list",
    "object": "object",
    "null": "null",
}
LOOPS = "docs/rules.md#loops"
_SHAPES = {"object": "a mapping ({name: value})", "array": "a list ([a, b])"}
_PATH = re.compile(r"\A\{\{-?\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_0-9]+)*)\s*-?\}\}\Z")
# How a dry run shows an earlier step's result (dryrun._StepResult), after rendering.
_PLACEHOLDER = re.compile(r"\A<steps\.[^<>]*>\Z")


class ParamTypeError(TemplateError):
    """A rendered parameter (`key`) has a type its action does not take; `params` as rendered."""

    def __init__(self, message: str, params: Mapping[str, Any], key: str = "") -> None:
        super().__init__(message)
        self.params = dict(params)
        self.key = key


def word(kind: str) -> str:
    """`list` for "array", and so on: the name a rule author reads."""
    return WORDS.get(kind, kind)


def type_words(types: tuple[str, ...]) -> str:
    """A parameter's types as docs/actions.md shows them: `string or integer`, `any`."""
    return " or ".join(word(t) for t in types)


def _article(text: str) -> str:
    return f"{'an' if text[:1] in 'aeiou' else 'a'} {text}"


def fits(types: tuple[str, ...], kind: str, *, exact: bool = True) -> bool:
    """Whether a value of JSON type `kind` fits `types` (an integer is a number).

    Not `exact` (a type told ahead, where a documented "number" may be a whole one), a
    number also fits an integer parameter.
    """
    if "any" in types or kind in types:
        return True
    if kind == "integer" and "number" in types:
        return True
    return not exact and kind == "number" and "integer" in types


def subject(source: Any) -> str:
    """What the author wrote, as the message names it: `data.tags`, or the value quoted."""
    if isinstance(source, str):
        path = _PATH.match(source.strip())
        if path is not None:
            return path.group(1)
        return repr(source if len(source) <= 60 else source[:57] + "...")
    shown = json.dumps(source, ensure_ascii=False, default=str)  # as YAML would read it
    return shown if len(shown) <= 60 else shown[:57] + "..."


def type_problem(
    schema: ActionSchema, key: str, kind: str, source: Any, rule: str = "", item: str = ""
) -> str:
    """The one message for a parameter given a value of the wrong type, with its fix.

    `source` is what the rule wrote (a template or a literal); `rule` is ` in rule 'x'`
    where the rule is not otherwise named; `item` is the name of the item (`as`) in a
    step that already loops (for_each), so the fix for a list is that item, not a loop.
    """
    param = schema.params[key]
    expected = _article(type_words(param.types))
    if kind == "null":
        return f"{key} is empty ({schema.name}{rule}); it expects {expected}"
    return (
        f"{key} expects {expected}, but {subject(source)} is {_article(word(kind))} "
        f"({schema.name}{rule}){_fix(schema, key, param, kind, source, item)}"
    )


def _fix(
    schema: ActionSchema, key: str, param: Param, kind: str, source: Any, item: str = ""
) -> str:
    path = _PATH.match(source.strip()) if isinstance(source, str) else None
    if kind == "array" and item:
        return f"; this step loops already: each item is `{item}` here, use {{{{ {item} }}}}"
    if kind == "array":
        plural = f"{key}s"
        if plural in schema.params and "array" in schema.params[plural].types:
            return f"; use {plural} for a list, or for_each to act on each item ({LOOPS})"
        if "string" in param.types and "integer" not in param.types and path:
            join = f"{{{{ {path.group(1)} | join(', ') }}}}"
            return f"; to act on each item use for_each ({LOOPS}), or make it text: {join}"
        return f"; to act on each item use for_each ({LOOPS})"
    if kind == "object" and "string" in param.types:
        field = f" ({{{{ {path.group(1)}.<field> }}}})" if path else ""
        return f"; use one of its fields{field}"
    if "string" in param.types and kind in ("integer", "number", "boolean"):
        if path:
            return f"; if the value is right, make it text: {{{{ {path.group(1)} | string }}}}"
        if not isinstance(source, str):
            return f'; if the value is right, quote it: {key}: "{json.dumps(source)}"'
        return "; if the value is right, make it text with | string"
    if param.types == ("boolean",) and kind != "boolean":
        if isinstance(source, str) and not _templated(source):
            return f"; write true or false without quotes ({key}: true)"
        return "; give true or false, e.g. a comparison such as {{ data.status == 'approved' }}"
    literal = isinstance(source, str) and not _templated(source)
    if param.types == ("array",) and literal:
        return f"; write it as a list: {key}: [{source}]"
    shapes = [_SHAPES[t] for t in param.types if t in _SHAPES]
    if kind in ("string", "integer", "number", "boolean") and len(shapes) == len(param.types):
        return f"; give {' or '.join(shapes)}, or a template that renders one"
    if kind == "string" and set(param.types) <= {"integer", "number"}:
        return "; give a number, or convert the text: | int"
    return ""


def check_rendered(
    schema: ActionSchema | None,
    sources: Mapping[str, Any],
    params: Mapping[str, Any],
    context: Mapping[str, Any],
    item: str = "",
) -> None:
    """Raise ParamTypeError for the first templated parameter that rendered the wrong type
    (`item`: the item's name in a loop step's run, for type_problem).

    Literals were checked when the rule loaded; an empty (null) value is the action's to
    judge. In a dry run an earlier step's result is a placeholder whose type is unknown,
    so a value that reads one is not judged.
    """
    if schema is None:
        return
    dry = bool(getattr(context.get("steps"), "placeholders", False))
    for key, value in params.items():
        param = schema.params.get(key)
        source = sources.get(key)
        if param is None or value is None or not _templated(source):
            continue
        if dry and (_reads_placeholder(source) or _placeholder(value)):
            continue
        kind = type_name(value)
        if not fits(param.types, kind):
            raise ParamTypeError(type_problem(schema, key, kind, source, item=item), params, key)


def value_place(file: str, step_line: int, uses: str, key: str, written: Any) -> str | None:
    """`file:line:col` of parameter `key`'s value (`written`, as the rule has it) in the step
    at `step_line` with that `uses`: the place `bridge validate` names for it; None if the
    file no longer holds it.

    A loaded rule keeps its file and each step's line, not every value's place: the file is
    read again as the loader reads it (source.parse), only when a value is refused.
    """
    if not file:  # a rule built in code, not read from a file
        return None
    try:
        root, _ = parse(Path(file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
    for node in _mappings(root):
        if node.line != step_line or _scalar(node.value.get("uses")) != uses:
            continue
        given = node.value.get("with")
        value = given.value.get(key) if given is not None and given.is_mapping else None
        if value is not None and value.plain() == written:
            return f"{file}:{value.line}:{value.column}"
    return None


def _mappings(node: Node | None) -> Iterator[Node]:
    if node is None:
        return
    if node.is_mapping:
        yield node
    children = node.value.values() if node.is_mapping else node.value if node.is_sequence else ()
    for child in children:
        yield from _mappings(child)


def _scalar(node: Node | None) -> Any:
    return node.value if node is not None else None


def _templated(source: Any) -> bool:
    if isinstance(source, str):
        return "{{" in source or "{%" in source
    if isinstance(source, Mapping):
        return any(_templated(v) for v in source.values())
    if isinstance(source, list):
        return any(_templated(v) for v in source)
    return False


def _reads_placeholder(source: Any) -> bool:
    return isinstance(source, str) and bool(step_references(source))


def _placeholder(value: Any) -> bool:
    return isinstance(value, str) and bool(_PLACEHOLDER.match(value))
