"""`for_each:` on a step: its list, checked at load and rendered once per run (rules → decide).

A loop step runs its action once per item, in order. Each item is named by `as:` (default
`item`) in the step's `if:` and `with:`, beside `loop` (`index` from 1, `index0` from 0,
`first`, `last`, `length`). The list is a template that renders one (`"{{ steps.find.assets
}}"`) or a list written out, and holds at most `max_items` items (default 100, at most
1,000). Item `i`'s result is stored as `<step>[i]`; the step's result is
`{results: [one per item], count, failed, skipped}` (bridge/jobs/flow.py runs it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bridge.errors import TemplateError
from bridge.rules.model import Step, clip
from bridge.rules.source import Node
from bridge.schema import type_name

if TYPE_CHECKING:
    from bridge.rules.steps import StepChecker
    from bridge.templates.environment import Templates

LOOP_KEYS = ("for_each", "as", "max_items")
MAX_ITEMS = 1000
# Names the templates already have: an item named so would hide them.
TAKEN = frozenset(
    {
        *("data", "event", "id", "type", "source", "subject", "time", "changes", "rule"),
        *("steps", "now", "vars", "loop", "digest", "throttle", "current"),
        *("range", "dict", "namespace", "true", "false", "none"),
    }
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# One `{{ expression }}` and nothing around it: the only template that can give a list.
_LONE = re.compile(r"\A\s*\{\{(?:(?!\}\}|\{\{).)*\}\}\s*\Z", re.DOTALL)
_EXAMPLE = 'such as "{{ steps.find.assets }}"'


class LoopError(TemplateError):
    """A loop's list is not a list, or holds more items than its `max_items`."""


@dataclass(frozen=True)
class Loop:
    """A step's `for_each`, `as` and `max_items`, as checked."""

    for_each: Any
    as_: str = Step.as_
    max_items: int = Step.max_items


def check_loop(checker: StepChecker, node: Node) -> Loop | None:
    """The step's loop keys, each problem reported at its place; None when it has no loop."""
    m: dict[str, Node] = node.value
    source = m.get("for_each")
    if source is None:
        for key in ("as", "max_items"):
            if key in m:
                checker.error(
                    node.keys[key],
                    f"'{key}'{checker.in_rule} belongs to a loop, and this step has no "
                    f"for_each; add for_each (the list to run the step over, {_EXAMPLE}) "
                    f"or remove '{key}'",
                )
        return None
    for_each = _check_list(checker, source)
    name = _check_name(checker, m.get("as"))
    most = _check_max_items(checker, m.get("max_items"))
    if for_each is None or name is None or most is None:
        return None
    return Loop(for_each, name, most)


def _check_list(checker: StepChecker, node: Node) -> Any:
    value = node.value
    where = f"for_each{checker.in_rule}"
    if node.is_sequence:
        checker.templates_in(node.value, "for_each")
        return node.plain()
    if not isinstance(value, str):
        checker.error(
            node,
            f"{where} must be a template of a list ({_EXAMPLE}) or a list, "
            f"not {type_name(node.plain())}",
        )
        return None
    problem = checker.templates.check_template(value)
    if problem:
        checker.error(node, f"invalid template in {where}: {problem}")
        return None
    if "{{" not in value and "{%" not in value:
        checker.error(
            node, f"{where} is the text {value!r}; expected a template of a list, {_EXAMPLE}"
        )
        return None
    if not _LONE.match(value):
        checker.error(
            node,
            f"{where} renders text ({value!r}); expected one expression that gives a list, "
            f"{_EXAMPLE}",
        )
        return None
    kind = checker.rendered_type(node)
    if kind is not None and kind != "array":
        checker.error(
            node,
            f"{where} must give a list, but {value!r} renders "
            f"{'an' if kind[0] in 'aeio' else 'a'} {kind}",
        )
        return None
    checker.step_results_used(node, value, "for_each")
    return value


def _check_name(checker: StepChecker, node: Node | None) -> str | None:
    if node is None:
        return Step.as_
    value = node.value
    if not isinstance(value, str) or not _NAME.match(value):
        checker.error(
            node,
            f"'as'{checker.in_rule} is {value!r}; expected a name of letters, digits and '_' "
            "(such as asset, then {{ asset.id }} in with:)",
        )
        return None
    if value in TAKEN:
        checker.error(
            node,
            f"'as: {value}'{checker.in_rule} would hide '{value}' in the step's templates; "
            "choose another name, such as asset",
        )
        return None
    return value


def _check_max_items(checker: StepChecker, node: Node | None) -> int | None:
    if node is None:
        return Step.max_items
    value = node.value
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ITEMS:
        checker.error(
            node,
            f"'max_items'{checker.in_rule} must be an integer from 1 to {MAX_ITEMS:,}, "
            f"not {value!r}",
        )
        return None
    return value


def loop_items(
    step: Step, templates: Templates, context: Mapping[str, Any], *, deadline: float | None = None
) -> list[Any]:
    """The step's list rendered in `context`; LoopError when it is no list or too long."""
    value = templates.render_value(step.for_each, context, deadline=deadline)
    return checked_items(step, value)


def checked_items(step: Step, value: Any) -> list[Any]:
    """`value` when it is a list of at most `max_items` items; LoopError otherwise."""
    source = step.for_each if isinstance(step.for_each, str) else "the list"
    if not isinstance(value, list):
        shown = clip(value) if isinstance(value, str) else value
        raise LoopError(
            f"for_each of step {step.key!r} must give a list, but {source!r} gave "
            f"{type_name(value)} {clip(shown)!r}"
        )
    if len(value) > step.max_items:
        raise LoopError(
            f"for_each of step {step.key!r} gave {len(value):,} items, more than max_items "
            f"({step.max_items:,}); raise max_items (at most {MAX_ITEMS:,}) or narrow the list"
        )
    return value


def item_key(step: Step, index: int) -> str:
    """Where item `index` (from 0) of a loop step keeps its result: `tag[2]`."""
    return f"{step.key}[{index}]"


def items_key(step: Step) -> str:
    """Where a run keeps the list its loop step rendered, so a retry runs the same items."""
    return f"{step.key}[items]"


def item_step(step: Step, index: int) -> Step:
    """The loop step as it runs for one item: an ordinary step named `tag[2]`."""
    return replace(step, id=item_key(step, index), for_each=None)


def item_context(step: Step, item: Any, index: int, count: int) -> dict[str, Any]:
    """What an item's templates see beside the run's: the item as `as`, and `loop`."""
    loop = {
        "index": index + 1,
        "index0": index,
        "first": index == 0,
        "last": index == count - 1,
        "length": count,
    }
    return {step.as_: item, "loop": loop}
