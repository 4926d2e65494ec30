"""A `choose:` step: branches of `when:` → `steps:`, and `default:` (rules → decide).

The branches are tried in order; the steps of the first whose conditions hold run, or
`default:`'s when none holds (or nothing, without a default). A branch's `when:` is
written as a rule's (a list of conditions, or one expression) and sees everything a step's
`if:` sees, earlier steps' results included. The choice is the step's result,
`{branch: <index from 0> | "default" | null, when: …}`, stored before the branch's steps
run, so a retry goes on inside the branch chosen the first time (bridge/jobs/flow.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.events import Event
from bridge.rules.conditions import Group
from bridge.rules.model import Branch, Condition, Rule, Scope, Step, clip
from bridge.rules.source import Node
from bridge.rules.when import WhenChecker
from bridge.schema import type_name

if TYPE_CHECKING:
    from bridge.rules.steps import StepChecker
    from bridge.templates.environment import Templates

CHOOSE = "choose"  # a choose step's `uses`
CHOOSE_KEYS = ("id", "choose", "default")
BRANCH_KEYS = ("when", "steps")
# choose inside choose inside choose: deeper nesting is refused (flatten the conditions).
MAX_DEPTH = 3


class RunScope(Scope):
    """A scope whose expressions see the run's whole context (earlier steps' results too)."""

    __slots__ = ("_run_context",)

    def __init__(
        self, event: Event, templates: Templates, rule: Rule, context: Mapping[str, Any]
    ) -> None:
        super().__init__(event, templates, rule)
        self._run_context = dict(context)

    def context(self) -> dict[str, Any]:
        return self._run_context


@dataclass(frozen=True)
class Choice:
    """What a choose step decided: its result, each branch tried (with why), the steps to run."""

    result: dict[str, Any]
    tried: list[dict[str, Any]]
    steps: tuple[Step, ...]


def decide(
    step: Step, event: Event, templates: Templates, rule: Rule, context: Mapping[str, Any]
) -> Choice:
    """The first branch whose conditions hold in `context`, else `default`, else none."""
    scope = RunScope(event, templates, rule, context)
    tried: list[dict[str, Any]] = []
    for index, branch in enumerate(step.branches):
        tree = branch.when.explain(scope)
        tried.append({"branch": index, "holds": tree.result, "conditions": tree.to_dict()})
        if tree.result:
            return Choice({"branch": index, "when": clip(branch.source)}, tried, branch.steps)
    if step.default is not None:
        return Choice({"branch": "default"}, tried, step.default)
    return Choice({"branch": None}, tried, ())


def chosen_steps(step: Step, result: Any) -> tuple[Step, ...]:
    """The steps of the branch a stored choice names (none if the rule no longer has it)."""
    branch = result.get("branch") if isinstance(result, Mapping) else None
    if branch == "default":
        return step.default or ()
    if isinstance(branch, int) and not isinstance(branch, bool) and branch < len(step.branches):
        return step.branches[branch].steps
    return ()


def check_choose(
    checker: StepChecker, node: Node, index: int, seen: dict[str, Node], prefix: str, depth: int
) -> Step | None:
    """A `choose` step from its node: every problem reported, None when there is one."""
    if not isinstance(checker, WhenChecker):
        raise TypeError("a choose step is checked by a FileChecker, which checks when: too")
    m: dict[str, Node] = node.value
    before = len(checker.problems)
    checker.unknown_keys(node, CHOOSE_KEYS, "choose step")
    step_id = checker.step_id(m.get("id"), seen)
    if "choose" not in m:
        checker.error(
            node.keys["default"],
            f"'default'{checker.in_rule} goes beside 'choose:' (the steps run when no branch "
            "holds); add choose: [- when: …, steps: …] or remove default",
        )
        return None
    if depth >= MAX_DEPTH:
        checker.error(
            node.keys["choose"],
            f"choose{checker.in_rule} is nested {depth + 1} deep; at most {MAX_DEPTH} levels "
            "of choose are allowed: combine the inner conditions with the outer ones",
        )
        return None
    key = step_id if step_id is not None else f"{prefix}step{index}"
    outer = list(checker.earlier)
    nested: list[str] = []

    def steps_of(items: list[Node], inner: str) -> tuple[Step, ...]:
        # A branch's steps see the steps before the choose, the choice, and their own.
        checker.earlier = [*outer, key]
        found = checker.step_list(items, seen, inner, depth + 1)
        nested.extend(checker.earlier[len(outer) + 1 :])
        return found

    branches = []
    choose = m["choose"]
    shape = "a list of branches (- when: […], steps: […])"
    if not choose.is_sequence:
        checker.error(
            choose,
            f"'choose'{checker.in_rule} must be {shape}, not {type_name(choose.plain())}",
        )
    elif not choose.value:
        checker.error(choose, f"'choose'{checker.in_rule} has no branches; expected {shape}")
    for number, item in enumerate(choose.value if choose.is_sequence else []):
        branch = _branch(checker, item, number, steps_of, f"{key}.{number}.")
        if branch is not None:
            branches.append(branch)
    default = None
    if "default" in m:
        items = m["default"]
        if not items.is_sequence or not items.value:
            checker.error(
                items,
                f"'default'{checker.in_rule} must be a list of steps, run when no branch "
                "holds; to run nothing then, leave default out",
            )
        else:
            default = steps_of(items.value, f"{key}.default.")
    checker.earlier = [*outer, *nested]
    if len(checker.problems) > before:
        return None
    return Step(
        index=index,
        uses=CHOOSE,
        id=step_id,
        line=node.line,
        branches=tuple(branches),
        default=default,
        prefix=prefix,
    )


def _branch(
    checker: WhenChecker,
    node: Node,
    number: int,
    steps_of: Callable[[list[Node], str], tuple[Step, ...]],
    inner: str,
) -> Branch | None:
    where = f"branch {number} of choose{checker.in_rule}"
    if not node.is_mapping:
        checker.error(
            node,
            f"{where} must be a mapping {{when: […], steps: […]}}, not {type_name(node.plain())}",
        )
        return None
    checker.unknown_keys(node, BRANCH_KEYS, f"branch {number} of choose")
    m: dict[str, Node] = node.value
    when = _when(checker, m.get("when"), node, where)
    steps_node = m.get("steps")
    steps: tuple[Step, ...] = ()
    if steps_node is None or (steps_node.is_sequence and not steps_node.value):
        checker.error(
            steps_node or node,
            f"{where} has no steps; expected steps: [a list of steps] (a branch that should "
            "do nothing can be left out)",
        )
    elif not steps_node.is_sequence:
        checker.error(
            steps_node,
            f"'steps' of {where} must be a list of steps, not {type_name(steps_node.plain())}",
        )
    else:
        steps = steps_of(steps_node.value, inner)
    if when is None:
        return None
    return Branch(when, m["when"].plain(), steps, node.line)


def _when(checker: WhenChecker, node: Node | None, branch: Node, where: str) -> Condition | None:
    if node is None:
        checker.error(
            branch,
            f"{where} has no 'when'; expected conditions as in a rule's when: (a list, or "
            "one expression); the steps for when no branch holds go in default:",
        )
        return None
    if isinstance(node.value, str):
        found = checker.conditions([node])
        return Group("all", found, node.line) if found else None
    if node.is_sequence and not node.value:
        checker.error(
            node,
            f"'when' of {where} is empty, so it always holds; put steps that always run "
            "in default:, or after the choose step",
        )
        return None
    return checker.when(node, branch)
