"""Condition operators and paths, compiled once into closures (rules → decide).

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

from bridge.rules.model import MISSING

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

EVENT_FIELDS = ("id", "type", "source", "subject", "time")
ROOTS = ("data", "changes", "event", *EVENT_FIELDS)
MAX_PATTERN = 1000
MAX_REGEX_INPUT = 10_000


class OperandError(ValueError):
    """A condition's operand is unusable; the message says what was expected."""


# --- values ---------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def show(value: Any) -> str:
    """A value as a message shows it: YAML's true/false/null, Python's repr otherwise."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_a(value: Any) -> str:
    """`'abc' is str`, or `value is null` (there is no point in saying `null is NoneType`)."""
    if value is None:
        return "value is null"
    return f"{show(value)} is {type(value).__name__}"


def _mismatch(actual: Any, expected: Any) -> str:
    return f"type mismatch: {_is_a(actual)}, {_is_a(expected)}"


def same(a: Any, b: Any) -> bool:
    """Equality without Python's cross-type surprises (`True == 1`, `1 == "1"` stays False)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def equals(expected: Any) -> Callable[[Any], bool]:
    """A test for equality with `expected`, specialised by its type."""
    if isinstance(expected, bool) or expected is None:
        return lambda actual: actual is expected
    if isinstance(expected, str):
        return lambda actual: actual == expected and isinstance(actual, str)
    if isinstance(expected, int | float):
        return lambda actual: actual == expected and not isinstance(actual, bool | str)
    return lambda actual: same(actual, expected)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- paths ----------------------------------------------------------------------------

Getter = Callable[[Any], Any]  # event -> value or MISSING


def _step(value: Any, key: str, index: int | None) -> Any:
    if isinstance(value, Mapping):
        return value.get(key, MISSING)
    if index is not None and isinstance(value, list | tuple):
        try:
            return value[index]
        except IndexError:
            return MISSING
    return MISSING


def compile_path(path: str) -> Getter:
    """A function reading `path` from an event; raises OperandError for a malformed path."""
    if not isinstance(path, str) or not path.strip():
        raise OperandError(f"path must be a dotted string such as data.status, not {path!r}")
    if "[" in path or "]" in path:
        raise OperandError(
            f"path {path!r} uses brackets; write list indexes as segments (data.items.0.id)"
        )
    root, *rest = path.split(".")
    if any(not part for part in rest) or not root:
        raise OperandError(f"path {path!r} has an empty segment")
    if root not in ROOTS:
        raise OperandError(f"path {path!r} must start with one of {', '.join(ROOTS)}")
    base: Getter
    if root == "event":
        if not rest or rest[0] not in EVENT_FIELDS:
            raise OperandError(f"path {path!r}: event has the fields {', '.join(EVENT_FIELDS)}")
        root, *rest = rest
    if root in ("data", "changes", *EVENT_FIELDS):
        base = operator.attrgetter(root)
    if root in EVENT_FIELDS and rest:
        raise OperandError(f"path {path!r}: event.{root} is a string and has no fields")
    segments = tuple((part, _index(part)) for part in rest)
    if not segments:
        return base
    if len(segments) == 1:
        key, index = segments[0]

        def get_one(event: Any) -> Any:
            value = base(event)
            if type(value) is dict:
                return value.get(key, MISSING)
            return _step(value, key, index)

        return get_one

    def get(event: Any) -> Any:
        value = base(event)
        for key, index in segments:
            value = _step(value, key, index)
            if value is MISSING:
                return MISSING
        return value

    return get


def _index(part: str) -> int | None:
    try:
        return int(part)
    except ValueError:
        return None


# --- operators ------------------------------------------------------------------------

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
            return _mismatch(actual, expected) if _kind(actual) != _kind(expected) else "not equal"

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

        kinds = {_kind(o) for o in options}

        def why_in(actual: Any) -> str:
            if op == "not_in":
                return f"{show(actual)} is one of {show(list(options))}"
            if _kind(actual) not in kinds:
                return f"type mismatch: {_is_a(actual)}, the values are {'/'.join(sorted(kinds))}"
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
                return f"type mismatch: {_is_a(actual)}; {op} needs a list, string or object"
            if isinstance(actual, str | Mapping) and not isinstance(expected, str):
                return _mismatch(actual, expected)
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
                return _mismatch(actual, expected)
            return f"{show(actual)} does not {op[:-5]} with {show(expected)}"

        return affix, why_affix

    if op == "regex":
        search = _compile_regex(expected)

        def regex(actual: Any) -> bool:
            return isinstance(actual, str) and search(actual)

        def why_regex(actual: Any) -> str:
            if not isinstance(actual, str):
                return _mismatch(actual, expected)
            if _re2 is None and len(actual) > MAX_REGEX_INPUT:  # pragma: no cover
                return f"input longer than {MAX_REGEX_INPUT} characters"
            return f"{show(actual)} does not match {expected!r}"

        return regex, why_regex

    if op in ("gt", "gte", "lt", "lte"):
        if not (_is_number(expected) or isinstance(expected, str)):
            raise OperandError(f"{op} expects a number or a string, not {show(expected)}")
        compare = getattr(operator, "ge" if op == "gte" else "le" if op == "lte" else op)
        if _is_number(expected):
            ordered = _numeric_order(op, expected)
        else:

            def ordered(actual: Any) -> bool:
                return isinstance(actual, str) and bool(compare(actual, expected))

        symbol = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]

        def why_ordered(actual: Any) -> str:
            if _kind(actual) != _kind(expected):
                return _mismatch(actual, expected)
            return f"{show(actual)} is not {symbol} {show(expected)}"

        return ordered, why_ordered

    raise OperandError(f"unknown operator {op!r}")  # the loader reports unknown names first
