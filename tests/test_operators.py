"""Operators and paths: strict types, missing paths, reasons in the trace."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.events import Event
from bridge.rules import MISSING
from bridge.rules.conditions import Group, PathCondition
from bridge.rules.model import Scope
from bridge.rules.operators import OPERATORS, OperandError, compile_path, same
from bridge.templates.environment import Templates

TEMPLATES = Templates()


def event(data: Any = None, **kwargs: Any) -> Event:
    return Event(id="e1", source="lytho", type="lytho.asset.updated", data=data, **kwargs)


def check(op: str, expected: Any, actual: Any, path: str = "data.x") -> tuple[bool, str | None]:
    """(result, reason) of one condition against data {"x": actual} (MISSING: no key)."""
    data = {} if actual is MISSING else {"x": actual}
    condition = PathCondition(path, op, expected)
    scope = Scope(event(data), TEMPLATES)
    trace = condition.explain(scope)
    assert trace.result is condition.test(scope)
    return trace.result, trace.reason


@pytest.mark.parametrize(
    ("op", "expected", "actual", "result", "reason"),
    [
        ("eq", "approved", "approved", True, None),
        ("eq", "approved", "rejected", False, "not equal"),
        ("eq", 3, "abc", False, "type mismatch: 'abc' is str, 3 is int"),
        ("eq", 3, "3", False, "type mismatch: '3' is str, 3 is int"),
        ("eq", 1, True, False, "type mismatch: true is bool, 1 is int"),
        ("eq", True, 1, False, "type mismatch: 1 is int, true is bool"),
        ("eq", 1, 1.0, True, None),
        ("eq", None, None, True, None),
        ("eq", "a.*", "abc", False, "not equal"),  # eq is never a regex
        ("eq", [1, "a"], [1, "a"], True, None),
        ("eq", {"a": 1}, {"a": True}, False, "not equal"),
        ("eq", "approved", MISSING, False, "missing"),
        ("ne", "approved", "rejected", True, None),
        ("ne", "approved", "approved", False, "equal"),
        ("ne", 3, "3", True, None),
        ("ne", "approved", MISSING, False, "missing"),
        ("in", ["high", "urgent"], "high", True, None),
        ("in", ["high", "urgent"], "low", False, "'low' is not one of ['high', 'urgent']"),
        ("in", ["1", "2"], 1, False, "type mismatch: 1 is int, the values are str"),
        ("in", [1, 2], 2.0, True, None),
        ("in", [1, 2], True, False, "type mismatch: true is bool, the values are number"),
        ("not_in", ["high"], "low", True, None),
        ("not_in", ["high"], "high", False, "'high' is one of ['high']"),
        ("contains", "hero", ["hero", "banner"], True, None),
        ("contains", "hero", ["banner"], False, "'hero' not found in ['banner']"),
        ("contains", 1, [True], False, "1 not found in [True]"),
        ("contains", "ero", "hero", True, None),
        ("contains", "id", {"id": 1}, True, None),
        ("contains", 5, "a5", False, "type mismatch: 'a5' is str, 5 is int"),
        (
            "contains",
            "x",
            5,
            False,
            "type mismatch: 5 is int; contains needs a list, string or object",
        ),
        ("not_contains", "hero", ["banner"], True, None),
        ("not_contains", "hero", ["hero"], False, "['hero'] contains 'hero'"),
        (
            "not_contains",
            "x",
            5,
            False,
            "type mismatch: 5 is int; not_contains needs a list, string or object",
        ),
        ("startswith", "IMG_", "IMG_001.png", True, None),
        ("startswith", ["a", "b"], "banner", True, None),
        ("startswith", "IMG_", "DSC_1.png", False, "'DSC_1.png' does not start with 'IMG_'"),
        ("startswith", "1", 12, False, "type mismatch: 12 is int, '1' is str"),
        ("endswith", ".png", "a.png", True, None),
        ("endswith", ".png", "a.jpg", False, "'a.jpg' does not end with '.png'"),
        ("regex", r"^IMG_\d+", "IMG_42.png", True, None),
        ("regex", r"\d", "abc", False, "'abc' does not match '\\\\d'"),
        ("regex", r"\d", 5, False, "type mismatch: 5 is int, '\\\\d' is str"),
        ("regex", "(?i)hero", "HERO banner", True, None),
        ("exists", True, "x", True, None),
        ("exists", True, MISSING, False, "missing"),
        ("exists", True, None, False, "null"),
        ("missing", True, MISSING, True, None),
        ("missing", True, None, True, None),
        ("missing", True, 0, False, "present"),
        ("gt", 1000, 1500, True, None),
        ("gt", 1000, 1000, False, "1000 is not > 1000"),
        ("gte", 1000, 1000, True, None),
        ("lt", 3, 2.5, True, None),
        ("lte", 3, 4, False, "4 is not <= 3"),
        ("gt", 3, "abc", False, "type mismatch: 'abc' is str, 3 is int"),
        ("gt", 3, True, False, "type mismatch: true is bool, 3 is int"),
        ("gt", 3, None, False, "type mismatch: value is null, 3 is int"),
        ("gt", "2024-01-01", "2024-06-30T10:00:00Z", True, None),
        (
            "lt",
            "2024-01-01",
            20240101,
            False,
            "type mismatch: 20240101 is int, '2024-01-01' is str",
        ),
        ("gt", 3, MISSING, False, "missing"),
    ],
)
def test_operator(op: str, expected: Any, actual: Any, result: bool, reason: str | None) -> None:
    assert check(op, expected, actual) == (result, reason)


def test_every_operator_is_covered() -> None:
    assert set(OPERATORS) == {
        *("eq", "ne", "in", "not_in", "contains", "not_contains"),
        *("startswith", "endswith", "regex", "exists", "missing"),
        *("gt", "gte", "lt", "lte", "changed"),
    }


@pytest.mark.parametrize(
    ("expected", "changes", "result", "reason"),
    [
        (True, {"status": {"from": "a", "to": "b"}}, True, None),
        (True, {}, False, "not changed"),
        ({"to": "approved"}, {"status": {"from": "in_review", "to": "approved"}}, True, None),
        (
            {"to": "approved"},
            {"status": {"from": "approved", "to": "rejected"}},
            False,
            "change was {'from': 'approved', 'to': 'rejected'}",
        ),
        ({"from": "a", "to": "b"}, {"status": {"from": "a", "to": "b"}}, True, None),
        (
            {"from": "x"},
            {"status": {"from": "a", "to": "b"}},
            False,
            "change was {'from': 'a', 'to': 'b'}",
        ),
        ({"to": 1}, {"status": {"to": True}}, False, "change was {'to': True}"),
        ({"to": "b"}, {"status": "b"}, False, "change was 'b'"),
    ],
)
def test_changed(expected: Any, changes: Any, result: bool, reason: str | None) -> None:
    condition = PathCondition("data.status", "changed", expected)
    scope = Scope(event({"status": "b"}, changes=changes), TEMPLATES)
    trace = condition.explain(scope)
    assert (trace.result, trace.reason) == (result, reason)
    assert condition.test(scope) is result


def test_changed_reads_nested_fields_by_dotted_name() -> None:
    condition = PathCondition("data.asset.status", "changed", {"to": "live"})
    changes = {"asset.status": {"from": "draft", "to": "live"}}
    assert condition.test(Scope(event({}, changes=changes), TEMPLATES))


@pytest.mark.parametrize(
    ("op", "expected", "message"),
    [
        ("in", "high", "in expects a non-empty list, such as [high, urgent]"),
        ("not_in", [], "not_in expects a non-empty list, such as [high, urgent]"),
        ("startswith", 5, "startswith expects a string (or a list of strings), not 5"),
        ("gt", [1], "gt expects a number or a string, not [1]"),
        ("gt", True, "gt expects a number or a string, not true"),
        ("exists", False, "exists takes true, not false (use missing: true)"),
        ("missing", "yes", "missing takes true, not 'yes' (use exists: true)"),
        ("regex", 5, "regex expects a pattern string, not 5"),
        ("changed", False, "changed takes true or {from: …, to: …}, not false"),
        (
            "changed",
            {"too": 1},
            "changed takes true or {from: …, to: …} (either or both), not {'too': 1}",
        ),
    ],
)
def test_bad_operands_are_refused_at_load(op: str, expected: Any, message: str) -> None:
    with pytest.raises(OperandError) as caught:
        PathCondition("data.x", op, expected)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("path", "data", "value"),
    [
        ("data.a.b", {"a": {"b": 1}}, 1),
        ("data.items.0.id", {"items": [{"id": 7}]}, 7),
        ("data.items.-1", {"items": [1, 2, 3]}, 3),
        ("data.items.5", {"items": [1]}, MISSING),
        ("data.items.x", {"items": [1]}, MISSING),
        ("data.a.b", {"a": "text"}, MISSING),
        ("data.a.b", {"a": None}, MISSING),
        ("data.0", {"0": "zero"}, "zero"),
        ("data", {"k": 1}, {"k": 1}),
        ("data.k", None, MISSING),
        ("data.k", ["k"], MISSING),
    ],
)
def test_paths(path: str, data: Any, value: Any) -> None:
    assert compile_path(path)(event(data)) == value


def test_event_paths_and_shorthand() -> None:
    e = event({}, subject="asset/7", changes={"status": {"from": "a", "to": "b"}})
    assert compile_path("event.type")(e) == "lytho.asset.updated"
    assert compile_path("type")(e) == "lytho.asset.updated"
    assert compile_path("source")(e) == "lytho"
    assert compile_path("subject")(e) == "asset/7"
    assert compile_path("id")(e) == "e1"
    assert compile_path("changes.status.to")(e) == "b"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "path must be a dotted string such as data.status, not ''"),
        (
            "dat.x",
            "path 'dat.x' must start with one of "
            "data, changes, event, id, type, source, subject, time",
        ),
        ("data..x", "path 'data..x' has an empty segment"),
        (
            "data.items[0]",
            "path 'data.items[0]' uses brackets; write list indexes as segments (data.items.0.id)",
        ),
        (
            "event.colour",
            "path 'event.colour': event has the fields id, type, source, subject, time",
        ),
        ("type.x", "path 'type.x': event.type is a string and has no fields"),
    ],
)
def test_bad_paths(path: str, message: str) -> None:
    with pytest.raises(OperandError) as caught:
        compile_path(path)
    assert str(caught.value) == message


def test_groups_nest_and_not_negates_all_of_a_list() -> None:
    high = PathCondition("data.priority", "eq", "high")
    hero = PathCondition("data.tags", "contains", "hero")
    both = Group("not", [high, hero])
    for data, result in [
        ({"priority": "high", "tags": ["hero"]}, False),
        ({"priority": "high", "tags": []}, True),
        ({"priority": "low"}, True),
    ]:
        scope = Scope(event(data), TEMPLATES)
        assert both.test(scope) is result
        assert both.explain(scope).result is result
    assert Group("all", []).test(Scope(event({}), TEMPLATES)) is True
    assert Group("any", []).test(Scope(event({}), TEMPLATES)) is False
    three = Group("any", [high, hero, PathCondition("data.x", "exists", True)])
    assert three.test(Scope(event({"x": 1}), TEMPLATES)) is True


def test_regex_is_linear_time() -> None:
    condition = PathCondition("data.x", "regex", "(a+)+$")
    scope = Scope(event({"x": "a" * 50_000 + "b"}), TEMPLATES)
    # A backtracking engine would not finish this in a lifetime (the test's timeout fails
    # it); a linear one answers at once. No clock: a busy machine is slow, not wrong.
    assert condition.test(scope) is False
    nested = PathCondition("data.x", "regex", "^(a|aa)+$")
    assert nested.test(Scope(event({"x": "a" * 5_000 + "!"}), TEMPLATES)) is False


def test_same_is_strict_about_bools_and_strings() -> None:
    assert same(1, 1.0)
    assert not same(True, 1)
    assert not same("1", 1)
    assert same([1, {"a": "b"}], (1, {"a": "b"}))
    assert not same([1], [True])
    assert not same({"a": 1}, {"b": 1})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)
operands: dict[str, Any] = {
    "eq": json_values,
    "ne": json_values,
    "in": st.lists(json_values, min_size=1, max_size=3),
    "not_in": st.lists(json_values, min_size=1, max_size=3),
    "contains": json_values,
    "not_contains": json_values,
    "startswith": st.text(max_size=3),
    "endswith": st.text(max_size=3),
    "regex": st.sampled_from(["a", "^b", r"\d+", ".*"]),
    "exists": st.just(True),
    "missing": st.just(True),
    "gt": st.integers() | st.text(max_size=3),
    "gte": st.floats(allow_nan=False),
    "lt": st.integers(),
    "lte": st.text(max_size=3),
}


@settings(max_examples=300, deadline=None)
@given(data=st.data(), actual=json_values)
def test_any_json_value_gives_a_result_never_an_exception(data: st.DataObject, actual: Any) -> None:
    op = data.draw(st.sampled_from(sorted(operands)))
    expected = data.draw(operands[op])
    result, reason = check(op, expected, actual)
    assert isinstance(result, bool)
    assert result or reason  # a false condition always says why
    if op == "ne":
        assert result is not check("eq", expected, actual)[0]
