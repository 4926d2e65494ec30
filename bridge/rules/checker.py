"""The base of rule-file checking: report a problem at a YAML node, common value checks."""

from __future__ import annotations

import difflib
import fnmatch
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2

from bridge.errors import Problem
from bridge.rules.source import Node
from bridge.rules.values import OperandError
from bridge.schema import ActionSchema, type_name
from bridge.templates.environment import Templates

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION_HINT = "expected seconds or a duration such as 30s, 5m, 24h, 7d"


def parse_duration(value: Any) -> float:
    """Seconds from `30`, `30s`, `5m`, `24h`, `7d` or `1h30m`; OperandError otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or _DURATION.sub("", text).strip():
                raise OperandError(f"bad duration {value!r}; {DURATION_HINT}") from None
            seconds = sum(float(n) * _UNITS[unit] for n, unit in parts)
    else:
        raise OperandError(f"bad duration {value!r}; {DURATION_HINT}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise OperandError(f"duration {value!r} must be more than zero; {DURATION_HINT}")
    return seconds


def suggest(
    word: str,
    options: Iterable[str],
    synonyms: Mapping[str, str] | None = None,
    *,
    cutoff: float = 0.6,
) -> str:
    """`"did you mean 'x'? "` for a near miss, or an empty string."""
    options = list(options)
    if synonyms and word.lower() in synonyms:
        return f"did you mean {synonyms[word.lower()]!r}? "
    close = difflib.get_close_matches(word, options, n=1, cutoff=cutoff)
    return f"did you mean {close[0]!r}? " if close else ""


_SINGLE_EQUALS = re.compile(r"(?<![=!<>])=(?!=)")
_LEXER = jinja2.Environment(autoescape=False)  # noqa: S701 - only tokenizes, never renders


def _assigns(expression: str) -> bool:
    """Whether the expression holds a lone `=` (an assignment where a comparison was meant)."""
    source = expression.strip()
    if not source.startswith("{{"):
        source = "{{ " + source + " }}"
    try:
        return any(kind == "operator" and value == "=" for _, kind, value in _LEXER.lex(source))
    except jinja2.TemplateSyntaxError:
        return False


def comment_fix(name: str, node: Node) -> str:
    """For a value YAML read as empty because of `#`: say so and show the quoted form."""
    return (
        f"{node.comment!r} after '{name}:' is a YAML comment, not the value (' #' starts a "
        f'comment); quote it: {name}: "{node.comment}"'
    )


@dataclass(frozen=True)
class EventTypes:
    """The event types the sources emit, for checking `on:` (docs/events.md lists them).

    `prefixes` cover open families such as `slack.action.` (any action id); `namespaces`
    are the first words of our own types (`lytho`, `lytics`): a type there that is not
    known is a typo, while another namespace belongs to a generic source.
    """

    types: frozenset[str]
    prefixes: tuple[str, ...] = ()
    # For a type: the JSON type of each documented `data.<path>` ("array", "string", …).
    fields: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def namespaces(self) -> frozenset[str]:
        return frozenset(t.split(".", 1)[0] for t in (*self.types, *self.prefixes))

    def emits(self, pattern: str) -> bool:
        """Whether the type, or some type the glob matches, is one a source emits."""
        if any(c in pattern for c in "*?["):
            match = re.compile(fnmatch.translate(pattern)).match
            return any(match(t) for t in self.types) or any(
                match(p + "x") or fnmatch.fnmatch(p, pattern) for p in self.prefixes
            )
        return pattern in self.types or pattern.startswith(self.prefixes)

    def field_type(self, patterns: Iterable[str], path: str) -> str | None:
        """The documented JSON type of `path` for every type the patterns match, if one."""
        found: set[str] = set()
        for pattern in patterns:
            names = [t for t in self.types if fnmatch.fnmatchcase(t, pattern)]
            if not names:
                return None
            for name in names:
                kind = self.fields.get(name, {}).get(path)
                if kind is None:
                    return None
                found.add(kind)
        return found.pop() if len(found) == 1 else None


class Checker:
    """Collects every problem of one file, each with its place and the rule it belongs to."""

    def __init__(
        self,
        file: str,
        *,
        templates: Templates,
        actions: Mapping[str, ActionSchema],
        event_types: EventTypes | None = None,
    ) -> None:
        self.file = file
        self.templates = templates
        self.actions = actions
        self.catalogue = event_types
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.on: tuple[str, ...] = ()  # the `on:` of the rule being checked
        self.rule_id: str | None = None
        self.ids: list[tuple[str, Node]] = []
        self.earlier: list[str] = []  # keys of the steps before the one being checked
        # The declared result types of those steps, by key (`steps.<key>.<field>`).
        self.result_types: dict[str, Mapping[str, str]] = {}
        # The variables the file's templates may read (bridge/rules/vars.py), as `vars.<name>`.
        self.vars: Mapping[str, Any] = {}

    # -- reporting --

    def error(self, node: Node, message: str) -> None:
        self.problems.append(Problem(self.file, node.line, node.column, message))

    def warn(self, node: Node, message: str) -> None:
        """Something that is probably a mistake but loads: shown, never fatal."""
        self.warnings.append(Problem(self.file, node.line, node.column, f"warning: {message}"))

    @property
    def in_rule(self) -> str:
        return f" in rule {self.rule_id!r}" if self.rule_id else ""

    @property
    def of_rule(self) -> str:
        return f" (rule {self.rule_id!r})" if self.rule_id else ""

    def unknown_keys(self, node: Node, allowed: tuple[str, ...], what: str | None) -> None:
        where = f" in {what}" if what else ""
        for key, key_node in node.keys.items():
            if key not in allowed:
                self.error(
                    key_node,
                    f"unknown key {key!r}{where}{self.in_rule}; "
                    f"{suggest(key, allowed)}expected one of {', '.join(allowed)}",
                )

    # -- files and rules --

    def scalar(self, node: Node | None, kind: type, name: str, default: Any) -> Any:
        if node is None:
            return default
        value = node.value
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            if isinstance(value, str):
                self.cut_by_comment(node, name)
            return value
        if value is None and node.comment:
            self.error(node, f"{name!r}{self.in_rule} is empty: {comment_fix(name, node)}")
            return default
        want = {bool: "true or false", int: "an integer", str: "a string"}[kind]
        self.error(
            node,
            f"{name!r}{self.in_rule} must be {want}, "
            f"not {type_name(node.plain())} {node.plain()!r}",
        )
        return default

    def cut_by_comment(self, node: Node, name: str) -> None:
        """Warn when an unquoted value stops at ` #word`: the rest became a YAML comment."""
        comment = node.comment
        if comment and len(comment) > 1 and not comment[1].isspace() and comment[1] != "#":
            self.warn(
                node,
                f"{name}{self.in_rule} reads {node.value!r}: the rest of the line "
                f"({comment!r}) is a YAML comment, because ' #' starts one; if it belongs "
                f"to the value, quote the whole value "
                f'({name.rsplit(".", 1)[-1]}: "{node.value} {comment}"); '
                "if it is a comment, put a space after '#'",
            )

    def expression_problem(self, expression: str) -> str | None:
        """What is wrong with an expression, with the fix for the usual slips."""
        problem = self.templates.check_expression(expression)
        if problem and _assigns(expression):
            fixed = _SINGLE_EQUALS.sub("==", expression)
            return f"'=' sets a value; to compare, write '==' ({fixed})"
        return problem

    def duration(self, node: Node | None, name: str, owner: Node) -> float | None:
        if node is None:
            self.error(owner, f"{name} is required{self.in_rule}; {DURATION_HINT}")
            return None
        try:
            return parse_duration(node.value)
        except OperandError:
            self.error(
                node, f"bad duration {node.value!r} for {name}{self.in_rule}; {DURATION_HINT}"
            )
            return None

    def template_string(self, node: Node | None, name: str, owner: Node) -> str | None:
        if node is None:
            self.error(owner, f"{name} is required{self.in_rule}")
            return None
        if not isinstance(node.value, str | int) or isinstance(node.value, bool):
            self.error(
                node,
                f"{name}{self.in_rule} must be a string (a template), not {type_name(node.value)}",
            )
            return None
        text = str(node.value)
        problem = self.templates.check_template(text)
        if problem:
            self.error(node, f"invalid template in {name}{self.in_rule}: {problem}")
            return None
        return text
