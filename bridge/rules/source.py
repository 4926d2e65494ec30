"""Read rule files as YAML nodes that remember their line and column (rules → decide).

PyYAML follows YAML 1.1, where an unquoted `on:` key is the boolean True and `yes`, `no`,
`off` are booleans too; dates become `date` objects. Rule files are read with only `true`
and `false` as booleans and dates left as strings (events carry them as JSON strings).
Duplicate keys are reported, never silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

_BOOL_TAG = "tag:yaml.org,2002:bool"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
MAX_NODES = 100_000  # a guard against alias bombs ("billion laughs")


class RuleFileLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-style booleans (`true`/`false` only) and no timestamps."""


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


@dataclass(frozen=True)
class SourceProblem:
    """A problem found while reading YAML, before the file's name is attached."""

    line: int
    column: int
    message: str


def parse(text: str) -> tuple[Node | None, list[SourceProblem]]:
    """The document as Nodes (None when empty), and the problems found reading it."""
    try:
        root = yaml.compose(text, Loader=RuleFileLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark is not None:
            what += f" ({exc.context} at line {exc.context_mark.line + 1})"
        return None, [SourceProblem(line, column, f"invalid YAML: {what}")]
    except yaml.YAMLError as exc:
        return None, [SourceProblem(1, 1, f"invalid YAML: {exc}")]
    if root is None:
        return None, []
    builder = _Builder()
    node = builder.build(root)
    return node, builder.problems


class _Builder:
    def __init__(self) -> None:
        self.problems: list[SourceProblem] = []
        self.count = 0
        self.constructor = RuleFileLoader("")

    def build(self, node: yaml.Node) -> Node:
        self.count += 1
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        if self.count > MAX_NODES:
            if self.count == MAX_NODES + 1:
                self.problems.append(
                    SourceProblem(line, column, f"file has more than {MAX_NODES} values (aliases?)")
                )
            return Node(None, line, column)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, line, column)
        if isinstance(node, yaml.SequenceNode):
            return Node([self.build(item) for item in node.value], line, column)
        try:
            value = self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self.problems.append(SourceProblem(line, column, f"invalid YAML: {exc.problem}"))
            value = None
        return Node(value, line, column)

    def _mapping(self, node: yaml.MappingNode, line: int, column: int) -> Node:
        values: dict[str, Node] = {}
        keys: dict[str, Node] = {}
        self.constructor.flatten_mapping(node)  # resolves `<<: *anchor` merges
        for key_node, value_node in node.value:
            key = self.build(key_node)
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
            values[key.value] = self.build(value_node)
        return Node(values, line, column, keys)
