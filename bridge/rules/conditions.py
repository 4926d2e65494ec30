"""Compiled conditions: a path with an operator, an expression, and all/any/not (rules → decide).

Each condition has `test(scope) -> bool`, a closure built once at load for matching, and
`explain(scope)`, which builds the trace node only when someone asks why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jinja2.exceptions import UndefinedError

from bridge.errors import TemplateError
from bridge.rules.model import MISSING, ConditionResult, Scope
from bridge.rules.operators import compile_operator
from bridge.rules.paths import compile_path
from bridge.rules.values import OperandError, equals, show


class PathCondition:
    """`{path: data.x, <op>: value}`: read the path, apply the operator."""

    def __init__(self, path: str, op: str, expected: Any, line: int = 0) -> None:
        self.path = path
        self.op = op
        self.expected = expected
        self.line = line
        get = self._get = compile_path(path)
        self.test: Callable[[Scope], bool]
        if op in ("exists", "missing"):
            if expected is not True:
                other = "missing" if op == "exists" else "exists"
                raise OperandError(f"{op} takes true, not {show(expected)} (use {other}: true)")

            def present(scope: Scope) -> bool:
                value = get(scope.event)
                return value is not MISSING and value is not None

            self.test = present if op == "exists" else (lambda scope: not present(scope))
            return
        if op == "changed":
            self._compile_changed(expected)
            return
        check, self._why = compile_operator(op, expected)
        self._check = check

        self.test = _fused(path, op, expected, get, check)

    def _compile_changed(self, expected: Any) -> None:
        if not self.path.startswith("data."):
            raise OperandError(
                f"changed reads the event's changes at the field named by the path; "
                f"write the path as data.<field>, not {self.path!r}"
            )
        field = self._field = self.path.removeprefix("data.")
        checks: list[tuple[str, Callable[[Any], bool]]] = []
        if isinstance(expected, Mapping):
            unknown = [k for k in expected if k not in ("from", "to")]
            if unknown or not expected:
                raise OperandError(
                    "changed takes true or {from: …, to: …} (either or both), "
                    f"not {show(expected)}"
                )
            checks = [(end, equals(expected[end])) for end in ("from", "to") if end in expected]
        elif expected is not True:
            raise OperandError(f"changed takes true or {{from: …, to: …}}, not {show(expected)}")
        ends = tuple(checks)

        def changed(scope: Scope) -> bool:
            change = scope.event.changes.get(field)
            if not isinstance(change, Mapping):
                return False
            return all(end in change and check(change[end]) for end, check in ends)

        self.test = changed

    def explain(self, scope: Scope) -> ConditionResult:
        """The trace node: expected, actual and why it failed."""
        result = self.test(scope)
        reason: str | None = None
        if self.op == "changed":
            actual = scope.event.changes.get(self._field, MISSING)
            if not result:
                reason = "not changed" if actual is MISSING else f"change was {show(actual)}"
            return ConditionResult(
                "changed", result, self.path, self.expected, actual, reason, line=self.line
            )
        actual = self._get(scope.event)
        if self.op in ("exists", "missing"):
            if not result:
                reason = (
                    "present"
                    if self.op == "missing"
                    else ("missing" if actual is MISSING else "null")
                )
        elif actual is MISSING:
            reason = "missing"
        elif not result:
            reason = self._why(actual)
        return ConditionResult(
            self.op, result, self.path, self.expected, actual, reason, line=self.line
        )


def _fused(
    path: str, op: str, expected: Any, get: Callable[[Any], Any], check: Callable[[Any], bool]
) -> Callable[[Scope], bool]:
    """The test of a path condition as one closure; `data.<key>` paths skip the getter call."""
    root, _, key = path.partition(".")
    if root != "data" or not key or "." in key:

        def test(scope: Scope) -> bool:
            value = get(scope.event)
            return value is not MISSING and check(value)

        return test

    # Most conditions read one field of a JSON object; this path is the hot loop of matching.
    if op == "eq" and isinstance(expected, str):

        def equals_text(scope: Scope) -> bool:
            data = scope.event.data
            if type(data) is dict:
                return data.get(key) == expected
            value = get(scope.event)
            return value is not MISSING and check(value)

        return equals_text

    def test_field(scope: Scope) -> bool:
        data = scope.event.data
        value = data.get(key, MISSING) if type(data) is dict else get(scope.event)
        return value is not MISSING and check(value)

    return test_field


class ExpressionCondition:
    """A bare string in `when`: a sandboxed Jinja expression; an error makes it false."""

    def __init__(self, source: str, line: int = 0) -> None:
        self.source = source
        self.line = line
        self.test: Callable[[Scope], bool] = self._test

    def _value(self, scope: Scope) -> tuple[Any, str | None]:
        try:
            return scope.templates.evaluate(self.source, scope.context()), None
        except TemplateError as exc:
            # A field the event does not have is "missing", as for path conditions.
            kind = "missing" if isinstance(exc.__cause__, UndefinedError) else "error"
            return MISSING, f"{kind}: {exc}"

    def _test(self, scope: Scope) -> bool:
        value, error = self._value(scope)
        return error is None and bool(value)

    def explain(self, scope: Scope) -> ConditionResult:
        value, error = self._value(scope)
        result = error is None and bool(value)
        reason = error or (None if result else "false")
        return ConditionResult("expr", result, None, self.source, value, reason, line=self.line)


class Group:
    """`all` (every child holds), `any` (one holds) or `not` (not all children hold)."""

    def __init__(self, op: str, children: Sequence[Any], line: int = 0) -> None:
        self.op = op
        self.children = tuple(children)
        self.line = line
        tests = tuple(child.test for child in self.children)
        self.test: Callable[[Scope], bool]
        if op == "any":

            def some(scope: Scope) -> bool:
                for t in tests:  # noqa: SIM110 - see every() below
                    if t(scope):
                        return True
                return False

            self.test = some
        elif len(tests) == 0:
            self.test = (lambda scope: True) if op == "all" else (lambda scope: False)
        elif len(tests) == 1:
            only = tests[0]
            self.test = only if op == "all" else (lambda scope: not only(scope))
        elif len(tests) == 2:
            first, second = tests
            if op == "all":
                self.test = lambda scope: first(scope) and second(scope)
            else:
                self.test = lambda scope: not (first(scope) and second(scope))
        else:

            def every(scope: Scope) -> bool:
                # A plain loop: all() over a generator costs a frame per rule on the hot path.
                for t in tests:  # noqa: SIM110
                    if not t(scope):
                        return False
                return True

            self.test = every if op == "all" else (lambda scope: not every(scope))

    def explain(self, scope: Scope) -> ConditionResult:
        # Every child is explained (not just up to the first failure) so a trace shows all.
        children = tuple(child.explain(scope) for child in self.children)
        if self.op == "any":
            result = any(c.result for c in children)
        else:
            held = all(c.result for c in children)
            result = held if self.op == "all" else not held
        reason = None
        if not result:
            if self.op == "not":
                reason = "the negated conditions hold"
            elif self.op == "any":
                reason = "no alternative holds"
        return ConditionResult(
            self.op, result, reason=reason, children=children, line=self.line or None
        )
