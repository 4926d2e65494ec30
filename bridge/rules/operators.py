"""Condition operators, compiled once into closures (rules → decide).

Comparisons are strict about types: a number never equals a string, `true` never equals
`1`, and ordering (`gt`, `lt`, …) compares numbers with numbers and strings with strings.
A mismatch makes the condition false and the trace says why; it never raises.

Regular expressions use RE2 (google-re2: linear time, no look-around or backreferences)
when it is installed; otherwise Python's `re` with bounds: patterns of at most
MAX_PATTERN characters, inputs of at most MAX_REGEX_INPUT characters (longer input is
false, with the reason in the trace).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from bridge.rules.paths import ROOTS, compile_path
from bridge.rules.values import (
    OperandError,
    equals,
    is_a,
    is_number,
    kind_of,
    mismatch,
    same,
    show,
)

__all__ = [
    "MAX_PATTERN",
    "MAX_REGEX_INPUT",
    "OPERATORS",
    "ROOTS",
    "SYNONYMS",
    "OperandError",
    "compile_operator",
    "compile_path",
    "equals",
    "same",
    "show",
]

try:
    import re2 as _re2  # type: ignore[import-untyped, import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - exercised only where google-re2 is absent
    _re2 = None

OPERATORS: tuple[str, ...] = (
    "eq",
    "ne",
    "in",
    "not_in",
    "contains",
    "not_contains",
    "startswith",
    "endswith",
    "regex",
    "exists",
    "missing",
    "gt",
    "gte",
    "lt",
    "lte",
    "changed",
)

# Words people reach for, mapped to our operator, for "did you mean" hints.
SYNONYMS: Mapping[str, str] = {
    "equals": "eq",
    "equal": "eq",
    "is": "eq",
    "==": "eq",
    "not_equals": "ne",
    "not_equal": "ne",
    "neq": "ne",
    "!=": "ne",
    "one_of": "in",
    "not_one_of": "not_in",
    "has": "contains",
    "includes": "contains",
    "starts_with": "startswith",
    "ends_with": "endswith",
    "match": "regex",
    "matches": "regex",
    "regexp": "regex",
    "present": "exists",
    "absent": "missing",
    "greater_than": "gt",
    "less_than": "lt",
    ">": "gt",
    ">=": "gte",
    "<": "lt",
    "<=": "lte",
    "changes": "changed",
}

MAX_PATTERN = 1000
MAX_REGEX_INPUT = 10_000


Check = Callable[[Any], bool]
Why = Callable[[Any], str]


def _compile_regex(pattern: Any) -> Callable[[str], bool]:
    if not isinstance(pattern, str):
        raise OperandError(f"regex expects a pattern string, not {show(pattern)}")
    if _re2 is not None:
        return _compile_re2(pattern)
    if len(pattern) > MAX_PATTERN:  # pragma: no cover - fallback without google-re2
        raise OperandError(f"regex longer than {MAX_PATTERN} characters")
    try:  # pragma: no cover - fallback without google-re2
        py_search = re.compile(pattern).search
    except re.error as exc:  # pragma: no cover
        raise OperandError(f"invalid regex {pattern!r}: {exc}") from None
    return lambda text: (
        len(text) <= MAX_REGEX_INPUT and py_search(text) is not None
    )  # pragma: no cover


def _compile_re2(pattern: str) -> Callable[[str], bool]:
    options = _re2.Options()
    options.log_errors = False  # RE2 would print every bad pattern to stderr
    options.never_capture = True  # only "does it match" is asked
    hint = "expected RE2 syntax (no look-around or backreferences)"
    low = getattr(_re2, "_re2", None)
    if low is None or not hasattr(low, "RE2"):  # pragma: no cover - other google-re2 layouts
        try:
            search = _re2.compile(pattern, options).search
        except _re2.error as exc:
            raise OperandError(f"invalid regex {pattern!r}: {_decode(exc.args)}; {hint}") from None
        return lambda text: search(text) is not None
    # The binding under re2's `search()` answers in a fifth of the time, without Match objects.
    regexp = low.RE2(pattern.encode("utf-8", "surrogatepass"), options)
    if not regexp.ok():
        raise OperandError(f"invalid regex {pattern!r}: {_decode((regexp.error(),))}; {hint}")
    anchor = low.RE2.Anchor.UNANCHORED
    match = regexp.Match

    def search_bytes(text: str) -> bool:
        raw = text.encode("utf-8", "surrogatepass")
        return bool(match(anchor, raw, 0, len(raw))[0][0] != -1)

    return search_bytes


def _decode(args: tuple[Any, ...]) -> str:
    first = args[0] if args else ""
    return first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)


def _numeric_order(op: str, bound: float) -> Check:
    # One closure per operator: ordering tests run for most candidate rules.
    if op == "gt":
        return lambda a: (type(a) is int or type(a) is float) and a > bound
    if op == "gte":
        return lambda a: (type(a) is int or type(a) is float) and a >= bound
    if op == "lt":
        return lambda a: (type(a) is int or type(a) is float) and a < bound
    return lambda a: (type(a) is int or type(a) is float) and a <= bound


def compile_operator(op: str, expected: Any) -> tuple[Check, Why]:
    """The test for `op` against `expected`, and the reason it fails for a given actual."""
    if op in ("eq", "ne"):
        equal = equals(expected)

        def why_eq(actual: Any) -> str:
            if op == "ne":
                return "equal"
            if kind_of(actual) != kind_of(expected):
                return mismatch(actual, expected)
            return "not equal"

        if op == "eq":
            return equal, why_eq
        return (lambda actual: not equal(actual)), why_eq

    if op in ("in", "not_in"):
        if not isinstance(expected, list | tuple) or not expected:
            raise OperandError(f"{op} expects a non-empty list, such as [high, urgent]")
        options = tuple(expected)
        if all(isinstance(o, str) for o in options):
            names = frozenset(options)

            def member(actual: Any) -> bool:
                return isinstance(actual, str) and actual in names
        else:

            def member(actual: Any) -> bool:
                return any(same(actual, o) for o in options)

        kinds = {kind_of(o) for o in options}

        def why_in(actual: Any) -> str:
            if op == "not_in":
                return f"{show(actual)} is one of {show(list(options))}"
            if kind_of(actual) not in kinds:
                return f"type mismatch: {is_a(actual)}, the values are {'/'.join(sorted(kinds))}"
            return f"{show(actual)} is not one of {show(list(options))}"

        if op == "in":
            return member, why_in
        return (lambda actual: not member(actual)), why_in

    if op in ("contains", "not_contains"):
        equal = equals(expected)

        def contains(actual: Any) -> bool | None:
            if isinstance(actual, list | tuple):
                return any(equal(item) for item in actual)
            if isinstance(actual, str | Mapping):
                return isinstance(expected, str) and expected in actual
            return None  # cannot look inside

        def why_contains(actual: Any) -> str:
            if not isinstance(actual, list | tuple | str | Mapping):
                return f"type mismatch: {is_a(actual)}; {op} needs a list, string or object"
            if isinstance(actual, str | Mapping) and not isinstance(expected, str):
                return mismatch(actual, expected)
            if op == "not_contains":
                return f"{show(actual)} contains {show(expected)}"
            return f"{show(expected)} not found in {show(actual)}"

        if op == "contains":
            return (lambda actual: contains(actual) is True), why_contains
        return (lambda actual: contains(actual) is False), why_contains

    if op in ("startswith", "endswith"):
        affixes = tuple(expected) if isinstance(expected, list | tuple) else (expected,)
        if not affixes or not all(isinstance(a, str) for a in affixes):
            raise OperandError(
                f"{op} expects a string (or a list of strings), not {show(expected)}"
            )
        method = str.startswith if op == "startswith" else str.endswith

        def affix(actual: Any) -> bool:
            return isinstance(actual, str) and method(actual, affixes)

        def why_affix(actual: Any) -> str:
            if not isinstance(actual, str):
                return mismatch(actual, expected)
            return f"{show(actual)} does not {op[:-5]} with {show(expected)}"

        return affix, why_affix

    if op == "regex":
        search = _compile_regex(expected)

        def regex(actual: Any) -> bool:
            return isinstance(actual, str) and search(actual)

        def why_regex(actual: Any) -> str:
            if not isinstance(actual, str):
                return mismatch(actual, expected)
            if _re2 is None and len(actual) > MAX_REGEX_INPUT:  # pragma: no cover
                return f"input longer than {MAX_REGEX_INPUT} characters"
            return f"{show(actual)} does not match {expected!r}"

        return regex, why_regex

    if op in ("gt", "gte", "lt", "lte"):
        if not (is_number(expected) or isinstance(expected, str)):
            raise OperandError(f"{op} expects a number or a string, not {show(expected)}")
        compare = getattr(operator, "ge" if op == "gte" else "le" if op == "lte" else op)
        if is_number(expected):
            ordered = _numeric_order(op, expected)
        else:

            def ordered(actual: Any) -> bool:
                return isinstance(actual, str) and bool(compare(actual, expected))

        symbol = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]

        def why_ordered(actual: Any) -> str:
            if kind_of(actual) != kind_of(expected):
                return mismatch(actual, expected)
            return f"{show(actual)} is not {symbol} {show(expected)}"

        return ordered, why_ordered

    raise OperandError(f"unknown operator {op!r}")  # the loader reports unknown names first
