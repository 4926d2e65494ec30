"""Every render has a budget: operations, time (a deadline) and bytes built (issue 12.7, 12.8).

A template that would run on or take the memory stops with a TemplateError that says
which budget it went over; ordinary templates render as before.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import TemplateError
from bridge.templates.environment import MAX_BUILT, MAX_OPERATIONS, BudgetExceeded, Templates

CONTEXT: dict[str, Any] = {
    "event": {"id": "evt_1", "type": "shop.order.paid"},
    "data": {"id": 7, "x": {"y": 1}, "tags": ["a", "b"], "text": "y" * 60_000},
    "changes": {},
    "steps": {},
    "rule": {"id": "r"},
}

FOUR_LOOPS = (
    "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}"
    "{% for d in range(10000) %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}done"
)
OPERATIONS = f"exceeded its budget of {MAX_OPERATIONS:,} operations; "
MEMORY = f"exceeded its budget of {MAX_BUILT // (1024 * 1024)} MiB "
TIME = re.compile(r"exceeded its budget of [0-9.e-]+ s \([0-9,]+ operations? done\)")


@pytest.fixture
def templates(tmp_path: Path) -> Templates:
    (tmp_path / "templates").mkdir()
    return Templates(tmp_path / "templates")


@pytest.fixture
def untimed(templates: Templates) -> Templates:
    """The default budget but for time: the operations budget stops these, however busy
    the machine running the test."""
    return Templates(templates.templates_dir, max_seconds=3600)


def refusal(call: Any) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        call()
    assert isinstance(caught.value.__cause__, BudgetExceeded), caught.value
    return caught.value


# --- operations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        FOUR_LOOPS,
        # The shape of the issue: attribute reads in nested loops, no output at all.
        "{% for a in range(10000) %}{% for b in range(10000) %}"
        "{% if data.x.y == b %}{% endif %}{% endfor %}{% endfor %}",
        # Work done inside filters counts too: each sort walks 10,000 items.
        "{% set l = range(10000)|list|reverse|list %}"
        "{% for i in range(10000) %}{% set x = l|sort %}{% endfor %}",
        # map() calls its filter once per item; select() its test.
        "{% for i in range(10000) %}{{ range(10000)|map('string')|select('ne', 'x')|list"
        "|length }}{% endfor %}",
    ],
)
def test_a_runaway_loop_stops_at_the_operations_budget(untimed: Templates, source: str) -> None:
    error = refusal(lambda: untimed.render_value({"text": source}, CONTEXT))
    assert str(error).startswith("template ")
    assert OPERATIONS in str(error)
    assert str(error).endswith("loop over less, or do less in each pass")


def test_a_recursive_macro_in_a_loop_stops_at_the_budget(untimed: Templates) -> None:
    source = (
        "{% macro fan(n) %}{% for i in range(10) %}{% if n > 0 %}{{ fan(n - 1) }}{% endif %}"
        "{% endfor %}{% endmacro %}{{ fan(9) }}"
    )
    error = refusal(lambda: untimed.render_value(source, CONTEXT))
    assert OPERATIONS in str(error)


def test_a_template_file_names_its_line_when_it_stops(untimed: Templates) -> None:
    assert untimed.templates_dir is not None
    (untimed.templates_dir / "slow.txt.j2").write_text("Hello\n" + FOUR_LOOPS + "\n")
    error = refusal(lambda: untimed.render_file("slow.txt.j2", CONTEXT))
    assert str(error).startswith(f"{untimed.templates_dir / 'slow.txt.j2'}:2: {OPERATIONS}")


def test_an_expression_stops_at_the_budget(templates: Templates) -> None:
    expression = "range(10000)|map('string')|map('center', 60)|map('trim')|list|length > 1"
    small = Templates(None, max_operations=5_000, max_seconds=3600)
    error = refusal(lambda: small.evaluate(expression, CONTEXT))
    assert str(error).startswith("expression \"range(10000)|map('string')")
    assert "exceeded its budget of 5,000 operations" in str(error)
    assert templates.evaluate(expression, CONTEXT) is True  # the default budget is larger


def test_the_budget_is_per_render_not_per_templates(templates: Templates) -> None:
    source = "{% for i in range(10000) %}{% if data.id == i %}{% endif %}{% endfor %}ok"
    for _ in range(50):  # 50 x ~30,000 operations: over one budget, well within each
        assert templates.render_value(source, CONTEXT) == "ok"


# --- time -------------------------------------------------------------------------------


def test_a_render_stops_at_its_deadline(templates: Templates) -> None:
    endless = Templates(None, max_operations=10**12)
    error = refusal(
        lambda: endless.render_value(
            {"text": FOUR_LOOPS}, CONTEXT, deadline=time.monotonic() + 0.05
        )
    )
    assert TIME.search(str(error)), error


def test_a_deadline_already_passed_stops_the_first_operation() -> None:
    templates = Templates(None)
    past = time.monotonic() - 1
    for call in (
        lambda: templates.render_value("{{ data.id }} x", CONTEXT, deadline=past),
        lambda: templates.evaluate("data.id > 1", CONTEXT, deadline=past),
    ):
        error = refusal(call)
        assert "exceeded its budget of 0 s (1 operation done)" in str(error)
    # Text with nothing to evaluate costs nothing and renders.
    assert templates.render_value("#ops", CONTEXT, deadline=past) == "#ops"


def test_a_template_file_stops_at_its_deadline(templates: Templates) -> None:
    assert templates.templates_dir is not None
    (templates.templates_dir / "slow.json.j2").write_text('{"text": "' + FOUR_LOOPS + '"}')
    endless = Templates(templates.templates_dir, max_operations=10**12)
    error = refusal(
        lambda: endless.render_file("slow.json.j2", CONTEXT, deadline=time.monotonic() + 0.05)
    )
    assert TIME.search(str(error)), error


def test_without_a_deadline_the_default_time_budget_applies() -> None:
    endless = Templates(None, max_operations=10**12, max_seconds=0.05)
    error = refusal(lambda: endless.render_value(FOUR_LOOPS, CONTEXT))
    assert "exceeded its budget of 0.05 s (" in str(error)


def test_a_deadline_scope_reaches_every_render_inside_it() -> None:
    endless = Templates(None, max_operations=10**12)
    with endless.deadline(time.monotonic() - 1):
        for call in (
            lambda: endless.render_value("{{ data.id }} x", CONTEXT),
            lambda: endless.evaluate("data.id > 1", CONTEXT),
        ):
            assert "exceeded its budget of 0 s" in str(refusal(call))
        # An earlier deadline of the render's own wins; a later one does not.
        later = time.monotonic() + 60
        assert "exceeded its budget of 0 s" in str(
            refusal(lambda: endless.render_value("{{ data.id }} x", CONTEXT, deadline=later))
        )
    # Outside the block the scope is gone.
    assert endless.render_value("{{ data.id }} x", CONTEXT) == "7 x"


# --- memory -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        # The kind: a list of strings, each under the 64 KiB limit.
        "{{ range(10000)|map('string')|map('center', 60000)|list|length }}",
        # Grown one item at a time in a namespace.
        "{% set ns = namespace(l=[]) %}{% for i in range(10000) %}"
        "{% set ns.l = ns.l + ['x' * 60000] %}{% endfor %}{{ ns.l|length }}",
        # Text gathered in a {% set %} block, from a value the event already holds.
        "{% set big %}{% for i in range(10000) %}{{ data.text }}{% endfor %}{% endset %}"
        "{{ big|length }}",
        # The same, through a macro's output.
        "{% macro m() %}{% for i in range(10000) %}{{ data.text }}{% endfor %}{% endmacro %}"
        "{{ m()|length }}",
        # Strings built and kept as dict values.
        "{% set ns = namespace(d={}) %}{% for i in range(10000) %}"
        "{% set ns.d = dict(ns.d, **{i|string: data.text ~ i}) %}{% endfor %}x",
    ],
)
def test_building_too_much_stops_at_the_memory_budget(templates: Templates, source: str) -> None:
    error = refusal(lambda: templates.render_value({"text": source}, CONTEXT))
    assert f"{MEMORY}of values built (strings, lists, dicts); build smaller" in str(error)


@pytest.mark.parametrize(
    "source",
    [
        # 1,000 references to one 60 KB string: small to hold, 60 MB to print or send.
        "{% set s = 'x' * 60000 %}{{ [s] * 1000 }}",
        "{% set s = 'x' * 60000 %}{% set l = [s] * 600 %}{{ [l, l] }}",
        "{% set s = 'x' * 60000 %}{% set l = [s, s, s, s, s, s, s, s] %}"
        "{% set l = [l, l, l, l, l, l, l, l] %}{% set l = [l, l, l, l, l, l, l, l] %}"
        "{% set l = [l, l, l, l, l, l, l, l] %}{{ l|length }}",
        "{% set s = 'x' * 60000 %}{% set l = [s] * 300 %}{{ (l + l + l)|length }}",
        "{% set s = 'x' * 60000 %}{% set d = {'a': [s] * 300} %}{{ [d, d, d]|length }}",
    ],
)
def test_a_value_larger_than_the_budget_counting_shared_items_is_refused(
    templates: Templates, source: str
) -> None:
    error = refusal(lambda: templates.render_value({"text": source}, CONTEXT))
    assert f"{MEMORY}in one value (every item of its lists counted)" in str(error)


def test_templates_that_build_within_the_budget_render(templates: Templates) -> None:
    source = (
        "{% set ns = namespace(items=[], text='') %}{% for i in range(1000) %}"
        "{% set ns.items = ns.items + [i ~ ':' ~ data.tags|join(',')] %}"
        "{% set ns.text = ns.text ~ i ~ ' ' %}{% endfor %}"
        "{{ ns.items|length }} {{ ns.text|length }} {{ (['ab'] * 10000)|join|length }}"
    )
    assert templates.render_value(source, CONTEXT) == "1000 3890 20000"
    many = "{{ data.text|length }}{% for i in range(3000) %}{{ data.text[:1] }}{% endfor %}"
    assert templates.render_value(many, CONTEXT) == "60000" + "y" * 3000


def test_a_smaller_budget_is_named_as_configured() -> None:
    small = Templates(None, max_built=512 * 1024, max_operations=50_000, max_seconds=3600)
    build = "{% set ns = namespace(l=[]) %}{% for i in range(100) %}"
    build += "{% set ns.l = ns.l + ['x' * 60000] %}{% endfor %}{{ ns.l|length }}"
    error = refusal(lambda: small.render_value(build, CONTEXT))
    assert "exceeded its budget of 512 KiB of values built" in str(error)
    error = refusal(lambda: small.render_value(FOUR_LOOPS, CONTEXT))
    assert "exceeded its budget of 50,000 operations" in str(error)
