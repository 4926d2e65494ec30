"""Show a condition trace to a person: one line per condition, a ✓/✗ tree (rules → decide)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.rules.engine import Evaluation
from bridge.rules.model import MISSING, ConditionResult
from bridge.rules.values import show


def describe(node: ConditionResult) -> str:
    """One line for a condition: `data.status eq 'approved' (actual 'rejected': not equal)`."""
    if node.op in ("all", "any", "not"):
        head = node.op
    elif node.op == "expr":
        head = str(node.expected)
    else:
        head = f"{node.path} {node.op}"
        if node.op not in ("exists", "missing") or node.expected is not True:
            head += f" {show(node.expected)}"
    notes = []
    if node.op not in ("all", "any", "not") and node.actual is not MISSING:
        notes.append(f"actual {show(node.actual)}")
    if node.reason:
        notes.append(node.reason)
    return f"{head} ({': '.join(notes)})" if notes else head


def format_condition_tree(evaluation: Evaluation, indent: int = 0) -> str:
    """The rule's conditions as a ✓/✗ tree with actual values, for `bridge fire --dry-run`."""
    rule = evaluation.rule
    pad = "  " * indent
    lines = [f"{pad}{'✓' if evaluation.matched else '✗'} {rule.id} ({rule.file}:{rule.line})"]
    root = evaluation.conditions
    if not root.children:
        lines.append(f"{pad}  ✓ (no conditions)")
    for child in root.children:
        _tree(child, indent + 1, lines)
    return "\n".join(lines)


def _tree(node: ConditionResult, depth: int, lines: list[str]) -> None:
    lines.append(f"{'  ' * depth}{'✓' if node.result else '✗'} {describe(node)}")
    for child in node.children:
        _tree(child, depth + 1, lines)


def condition_from_dict(raw: Mapping[str, Any]) -> ConditionResult:
    """A condition trace back from its stored form (`ConditionResult.to_dict()`)."""
    return ConditionResult(
        op=str(raw.get("op", "?")),
        result=bool(raw.get("result")),
        path=raw.get("path"),
        expected=raw.get("expected", MISSING),
        actual=raw.get("actual", MISSING),
        reason=raw.get("reason"),
        children=tuple(condition_from_dict(c) for c in raw.get("children", ())),
        line=raw.get("line"),
    )


def stored_tree_lines(raw: Mapping[str, Any], depth: int = 0) -> list[str]:
    """A stored condition trace as ✓/✗ lines (the conditions under the rule's root)."""
    lines: list[str] = []
    root = condition_from_dict(raw)
    if root.op == "all" and not root.children:
        return [f"{'  ' * depth}✓ (no conditions)"]
    for child in root.children or (root,):
        _tree(child, depth, lines)
    return lines
