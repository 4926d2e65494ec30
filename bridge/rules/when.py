"""Check `when:` and compile its conditions (rules → decide)."""

from __future__ import annotations

from bridge.rules.checker import Checker, suggest
from bridge.rules.conditions import ExpressionCondition, Group, PathCondition
from bridge.rules.model import Condition
from bridge.rules.operators import OPERATORS, SYNONYMS
from bridge.rules.paths import ROOTS, compile_path
from bridge.rules.source import Node
from bridge.rules.values import OperandError
from bridge.schema import type_name

COMBINATORS = ("all", "any", "not")


class WhenChecker(Checker):
    """Turns `when:` nodes into compiled conditions."""

    def when(self, node: Node | None, rule: Node) -> Condition:
        if node is None:
            return Group("all", [], rule.line)
        if not node.is_sequence:
            if node.is_mapping:
                self.error(
                    node,
                    f"'when'{self.in_rule} must be a list of conditions, not a mapping; "
                    "write each condition as a list item (- {path: …, eq: …}) so that a "
                    "duplicated key cannot drop one",
                )
            else:
                self.error(
                    node,
                    f"'when'{self.in_rule} must be a list of conditions, "
                    f"not {type_name(node.plain())}",
                )
            return Group("all", [], node.line)
        return Group("all", self.conditions(node.value), node.line)

    def conditions(self, nodes: list[Node]) -> list[Condition]:
        found = []
        for item in nodes:
            condition = self.condition(item)
            if condition is not None:
                found.append(condition)
        return found

    def condition(self, node: Node) -> Condition | None:
        value = node.value
        if isinstance(value, str):
            problem = self.expression_problem(value)
            if problem:
                self.error(node, f"invalid expression {value!r}{self.in_rule}: {problem}")
                return None
            return ExpressionCondition(value, node.line)
        expected = "expected {path: …, <operator>: …}, all, any, not, or an expression string"
        if not node.is_mapping:
            self.error(
                node,
                f"a condition{self.in_rule} cannot be {type_name(node.plain())} "
                f"{node.plain()!r}; {expected}",
            )
            return None
        m: dict[str, Node] = value
        combinators = [k for k in m if k in COMBINATORS]
        if combinators:
            return self.group(node, combinators[0])
        if "path" not in m:
            self.pathless(node, expected)
            return None
        path_node = m["path"]
        try:
            compile_path(path_node.value)
        except OperandError as exc:
            self.error(path_node, f"{exc}{self.of_rule}")
            return None
        ops = []
        for key, key_node in node.keys.items():
            if key == "path":
                continue
            if key in OPERATORS:
                ops.append(key)
            else:
                self.error(
                    key_node,
                    f"unknown operator {key!r}{self.in_rule}; {suggest(key, OPERATORS, SYNONYMS)}"
                    f"expected one of {', '.join(OPERATORS)}",
                )
        if len(ops) > 1:
            self.error(
                node,
                f"one operator per condition{self.in_rule}; found {', '.join(ops)} "
                "(write one condition for each)",
            )
            return None
        if not ops:
            if len(m) == 1:  # no unknown operator reported either
                self.error(
                    node,
                    f"condition on {path_node.value!r}{self.in_rule} has no operator; "
                    f"expected one of {', '.join(OPERATORS)}",
                )
            return None
        op = ops[0]
        try:
            return PathCondition(path_node.value, op, m[op].plain(), node.line)
        except OperandError as exc:
            self.error(m[op], f"{exc}{self.of_rule}")
            return None

    def group(self, node: Node, op: str) -> Condition | None:
        m: dict[str, Node] = node.value
        for other in m:
            if other != op:
                self.error(
                    node.keys[other],
                    f"{other!r} cannot sit beside {op!r} in one condition{self.in_rule}; "
                    f"put it inside {op!r} or in its own list item",
                )
        child = m[op]
        if child.is_sequence:
            if not child.value:
                self.error(child, f"{op!r}{self.in_rule} needs at least one condition")
                return None
            return Group(op, self.conditions(child.value), node.line)
        if op == "not":
            inner = self.condition(child)
            return Group("not", [inner], node.line) if inner is not None else None
        self.error(
            child,
            f"{op!r}{self.in_rule} takes a list of conditions, not {type_name(child.plain())}",
        )
        return None

    def pathless(self, node: Node, expected: str) -> None:
        m: dict[str, Node] = node.value
        first = next(iter(m), None)
        if first is not None and first.split(".")[0] in ROOTS and first not in OPERATORS:
            self.error(
                node.keys[first],
                f"condition keyed by path {first!r}{self.in_rule}; write "
                f"{{path: {first}, eq: …}} (conditions are never mappings keyed by path)",
            )
            return
        for key, key_node in node.keys.items():
            if key not in OPERATORS:
                self.error(
                    key_node,
                    f"unknown key {key!r} in condition{self.in_rule}; "
                    f"{suggest(key, ('path', *COMBINATORS, *OPERATORS), SYNONYMS)}{expected}",
                )
                return
        self.error(node, f"condition has no 'path'{self.in_rule}; {expected}")

    # -- dedupe and throttle --
