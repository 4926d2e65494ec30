"""The base of rule-file checking: report a problem at a YAML node, common value checks."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from bridge.errors import Problem
from bridge.rules.operators import OperandError
from bridge.rules.source import Node
from bridge.schema import ActionSchema, type_name
from bridge.templates import Templates

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


def suggest(word: str, options: Iterable[str], synonyms: Mapping[str, str] | None = None) -> str:
    """`"did you mean 'x'? "` for a near miss, or an empty string."""
    options = list(options)
    if synonyms and word.lower() in synonyms:
        return f"did you mean {synonyms[word.lower()]!r}? "
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


class Checker:
    """Collects every problem of one file, each with its place and the rule it belongs to."""

    def __init__(
        self, file: str, *, templates: Templates, actions: Mapping[str, ActionSchema]
    ) -> None:
        self.file = file
        self.templates = templates
        self.actions = actions
        self.problems: list[Problem] = []
        self.rule_id: str | None = None
        self.ids: list[tuple[str, Node]] = []
        self.earlier: list[str] = []  # keys of the steps before the one being checked

    # -- reporting --

    def error(self, node: Node, message: str) -> None:
        self.problems.append(Problem(self.file, node.line, node.column, message))

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
            return value
        want = {bool: "true or false", int: "an integer", str: "a string"}[kind]
        self.error(
            node,
            f"{name!r}{self.in_rule} must be {want}, "
            f"not {type_name(node.plain())} {node.plain()!r}",
        )
        return default

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
