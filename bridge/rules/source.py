"""Read rule files as YAML nodes that remember their line and column (rules → decide).

PyYAML follows YAML 1.1, where an unquoted `on:` key is the boolean True and `yes`, `no`,
`off` are booleans too; dates become `date` objects. Rule files are read with only `true`
and `false` as booleans and dates left as strings (events carry them as JSON strings).
Duplicate keys are reported, never silently dropped. Syntax errors are told in plain
words (what to change, on which line); a file indented with tabs, or a `rules:` list with
one broken rule, is read again without the broken part so that its other problems are
reported too. Nesting is bounded, so a hostile file cannot exhaust the stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from bridge.rules.syntax import (
    SourceProblem,
    describe_yaml_error,
    expand_tabs,
    tab_problems,
    without_rule_at,
)

_BOOL_TAG = "tag:yaml.org,2002:bool"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
MAX_NODES = 100_000  # a guard against alias bombs ("billion laughs")
MAX_DEPTH = 64  # nesting levels; a rule needs a handful, deep files would exhaust the stack
_RECOVERY_TRIES = 20

__all__ = ["MAX_DEPTH", "MAX_NODES", "Node", "RuleFileLoader", "SourceProblem", "parse"]


class RuleFileLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-style booleans (`true`/`false` only) and no timestamps."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"values are nested more than {MAX_DEPTH} levels deep; "
                    "a rule needs only a few levels: flatten this part of the file",
                    mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


RuleFileLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _TIMESTAMP_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RuleFileLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass
class Node:
    """A YAML value with its place (1-based line and column)."""

    value: Any  # a plain Python value for scalars; dict/list of Node for collections
    line: int
    column: int
    keys: dict[str, Node] = field(default_factory=dict)  # mapping keys, for their positions
    # For an unquoted scalar: a `# …` comment on the same line right after it, which is
    # often part of the value the author meant (`channel: #creative` is null).
    comment: str | None = None

    @property
    def is_mapping(self) -> bool:
        return isinstance(self.value, dict)

    @property
    def is_sequence(self) -> bool:
        return isinstance(self.value, list)

    def plain(self) -> Any:
        """The value with every Node unwrapped."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


def parse(text: str) -> tuple[Node | None, list[SourceProblem]]:
    """The document as Nodes (None when empty), and the problems found reading it.

    Lines indented with tabs are reported and the file is read again with the tabs as
    spaces; a syntax error inside one item of a `rules:` list is reported and the file is
    read again without that item. Either way the rest of the file is still checked.
    """
    problems = tab_problems(text)
    if problems:
        for width in (2, 4, 8):
            expanded = expand_tabs(text, width)
            if _syntax_problem(expanded) is None:
                text = expanded
                break
    reported = {(p.line, p.column) for p in problems}
    for _ in range(_RECOVERY_TRIES):
        try:
            root = yaml.compose(text, Loader=RuleFileLoader)
        except yaml.YAMLError as exc:
            problem = describe_yaml_error(exc, text)
            if (problem.line, problem.column) not in reported:
                problems.append(problem)
            reported.add((problem.line, problem.column))
            opened = _opened_line(exc, problem.line)
            without = without_rule_at(text, min(opened, problem.line), problem.line)
            if without is None:
                return None, problems
            text = without
            continue
        except RecursionError:  # bounded by MAX_DEPTH; a last guard all the same
            problems.append(SourceProblem(1, 1, "invalid YAML: the file is nested too deeply"))
            return None, problems
        if root is None:
            return None, problems
        builder = _Builder(text)
        try:
            node = builder.build(root)
        except _TooDeep as exc:
            return None, [*problems, exc.problem]
        return node, problems + builder.problems
    return None, problems


def _opened_line(exc: yaml.YAMLError, line: int) -> int:
    context_mark = getattr(exc, "context_mark", None)
    return context_mark.line + 1 if context_mark is not None else line


def _syntax_problem(text: str) -> yaml.YAMLError | None:
    try:
        yaml.compose(text, Loader=RuleFileLoader)
    except yaml.YAMLError as exc:
        return exc
    except RecursionError:
        return yaml.YAMLError("nested too deeply")
    return None


class _TooDeep(Exception):
    def __init__(self, problem: SourceProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class _Builder:
    def __init__(self, text: str = "") -> None:
        self.problems: list[SourceProblem] = []
        self.count = 0
        self.constructor = RuleFileLoader("")
        self.lines = text.splitlines()

    def build(self, node: yaml.Node, depth: int = 0) -> Node:
        self.count += 1
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        if depth > MAX_DEPTH:  # aliases can nest deeper than the text itself
            raise _TooDeep(
                SourceProblem(
                    line,
                    column,
                    f"invalid YAML: values are nested more than {MAX_DEPTH} levels deep "
                    "(through aliases); a rule needs only a few levels: flatten this part",
                )
            )
        if self.count > MAX_NODES:
            if self.count == MAX_NODES + 1:
                self.problems.append(
                    SourceProblem(line, column, f"file has more than {MAX_NODES} values (aliases?)")
                )
            return Node(None, line, column)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, line, column, depth)
        if isinstance(node, yaml.SequenceNode):
            return Node([self.build(item, depth + 1) for item in node.value], line, column)
        try:
            value = self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self.problems.append(SourceProblem(line, column, f"invalid YAML: {exc.problem}"))
            value = None
        return Node(value, line, column, comment=self._comment_after(node))

    def _comment_after(self, node: yaml.Node) -> str | None:
        """The `# …` right after an unquoted one-line scalar, on its line."""
        if getattr(node, "style", "") is not None:
            return None
        start, end = node.start_mark, node.end_mark
        if start.line != end.line or not 0 <= end.line < len(self.lines):
            return None
        rest = self.lines[end.line][end.column :]
        stripped = rest.lstrip()
        if not stripped.startswith("#") or (rest == stripped and node.value != ""):
            return None
        return stripped

    def _mapping(self, node: yaml.MappingNode, line: int, column: int, depth: int) -> Node:
        values: dict[str, Node] = {}
        keys: dict[str, Node] = {}
        self.constructor.flatten_mapping(node)  # resolves `<<: *anchor` merges
        for key_node, value_node in node.value:
            key = self.build(key_node, depth + 1)
            if not isinstance(key.value, str):
                self.problems.append(
                    SourceProblem(
                        key.line,
                        key.column,
                        f"key {key.value!r} must be a string; quote it",
                    )
                )
                continue
            if key.value in keys:
                first = keys[key.value]
                self.problems.append(
                    SourceProblem(
                        key.line,
                        key.column,
                        f"duplicate key {key.value!r} (first at line {first.line}); "
                        "a duplicated key would silently drop a value",
                    )
                )
                continue
            keys[key.value] = key
            values[key.value] = self.build(value_node, depth + 1)
        return Node(values, line, column, keys)
