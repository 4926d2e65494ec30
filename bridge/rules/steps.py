"""Check a rule's `actions:` steps against the action schemas (rules → decide)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bridge.rules.checker import Checker, comment_fix, suggest
from bridge.rules.choose import check_choose
from bridge.rules.loops import LOOP_KEYS, Loop, check_loop
from bridge.rules.model import Step
from bridge.rules.param_types import fits, type_problem
from bridge.rules.source import Node
from bridge.rules.template_analysis import rendered_type, step_references
from bridge.schema import ActionSchema, accepts, type_name

STEP_KEYS = ("id", "uses", "with", "if", "retry", "continue_on_error", *LOOP_KEYS, "choose")
RETRY_KEYS = ("attempts", "backoff")
_STEP_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StepChecker(Checker):
    """Turns `actions:` nodes into Steps."""

    def steps(self, node: Node | None) -> tuple[Step, ...]:
        if node is None:
            return ()
        if not node.is_sequence:
            self.error(
                node, f"'actions'{self.in_rule} must be a list of steps (- uses: slack.post …)"
            )
            return ()
        self.earlier = []
        self.result_types = {}
        return self.step_list(node.value, {}, "", 0)

    def step_list(
        self, items: list[Node], seen: dict[str, Node], prefix: str, depth: int
    ) -> tuple[Step, ...]:
        """The steps of a list (the rule's, or a branch's), each key added to `earlier`."""
        steps = []
        for index, item in enumerate(items):
            step = self.step(item, index, seen, prefix, depth)
            if step is not None:
                steps.append(step)
            named = item.value.get("id") if item.is_mapping else None
            key = str(named.value if named is not None else f"{prefix}step{index}")
            if key not in self.earlier:  # a duplicate id is reported where it is
                self.earlier.append(key)
                if step is not None:
                    self.result_types[key] = _result_types(step)
        return tuple(steps)

    def step_results_used(self, node: Node, source: str, where: str) -> None:
        """Report `steps.<key>` references to steps that do not run before this one."""
        earlier = self.earlier
        for key in sorted(step_references(source) - set(earlier)):
            hint = suggest(key, earlier)
            known = f"earlier steps: {', '.join(earlier)}" if earlier else "no step runs before it"
            self.error(
                node,
                f"{where}{self.in_rule} reads steps.{key}, which is not an earlier step; "
                f"{hint}{known}",
            )

    def step(
        self, node: Node, index: int, seen: dict[str, Node], prefix: str = "", depth: int = 0
    ) -> Step | None:
        if not node.is_mapping:
            self.error(
                node,
                f"a step{self.in_rule} must be a mapping with uses and with, "
                f"not {type_name(node.plain())}",
            )
            return None
        before = len(self.problems)
        m: dict[str, Node] = node.value
        if "choose" in m or "default" in m:  # a choose step (bridge/rules/choose.py)
            return check_choose(self, node, index, seen, prefix, depth)
        self.unknown_keys(node, STEP_KEYS, "step")
        step_id = self.step_id(m.get("id"), seen)
        loop = check_loop(self, node) or Loop(None)  # for_each, as, max_items (rules/loops.py)
        uses = self.uses(m.get("uses"), node)
        with_ = self.with_(m.get("with"), uses, node)
        if_ = self.step_if(m.get("if"))
        attempts, backoff = self.retry(m.get("retry"))
        continue_on_error = self.scalar(
            m.get("continue_on_error"), bool, "continue_on_error", False
        )
        if len(self.problems) > before or uses is None:
            return None
        return Step(
            index=index,
            id=step_id,
            uses=uses,
            with_=with_,
            if_=if_,
            attempts=attempts,
            backoff_seconds=backoff,
            continue_on_error=continue_on_error,
            line=node.line,
            escape=self.actions[uses].escape if uses in self.actions else None,
            schema=self.actions.get(uses),
            prefix=prefix,
            for_each=loop.for_each,
            as_=loop.as_,
            max_items=loop.max_items,
        )

    def step_id(self, node: Node | None, seen: dict[str, Node]) -> str | None:
        """A step's `id`, checked: valid, and unique within the rule (branches included)."""
        if node is None:
            return None
        step_id = node.value
        if not isinstance(step_id, str) or not _STEP_ID.match(step_id):
            self.error(
                node,
                f"step id {step_id!r}{self.in_rule} is not valid; expected letters, digits "
                "and '_' starting with a letter (it is used as steps.<id> in templates)",
            )
        elif step_id in seen:
            self.error(
                node,
                f"duplicate step id {step_id!r}{self.in_rule} "
                f"(first at line {seen[step_id].line}); "
                "expected step ids unique within a rule",
            )
        else:
            seen[step_id] = node
            return step_id
        return None

    def uses(self, node: Node | None, step: Node) -> str | None:
        names = sorted(self.actions)
        if node is None:
            self.error(
                step, f"step has no 'uses'{self.in_rule}; expected one of {', '.join(names)}"
            )
            return None
        if not isinstance(node.value, str) or node.value not in self.actions:
            self.error(
                node,
                f"unknown action {node.value!r}{self.in_rule}; "
                f"{suggest(str(node.value), names)}expected one of {', '.join(names)}",
            )
            return None
        return node.value

    def with_(self, node: Node | None, uses: str | None, step: Node) -> dict[str, Any]:
        if node is not None and not node.is_mapping:
            self.error(
                node,
                f"'with'{self.in_rule} must be a mapping of parameters, "
                f"not {type_name(node.plain())}",
            )
            return {}
        given: dict[str, Node] = node.value if node is not None else {}
        self.templates_in(given, "with")
        schema = self.actions.get(uses) if uses else None
        if schema is not None:
            loops = step.is_mapping and "for_each" in step.value  # its item: `as`, or item
            item = str(step.value["as"].value if "as" in step.value else "item") if loops else ""
            self.parameters(schema, given, node or step, item)
        return {k: v.plain() for k, v in given.items()}

    def templates_in(self, nodes: Mapping[str, Node] | list[Node], where: str) -> None:
        items = (
            nodes.items()
            if isinstance(nodes, Mapping)
            else ((str(i), n) for i, n in enumerate(nodes))
        )
        for key, node in items:
            place = f"{where}.{key}"
            if isinstance(node.value, str):
                self.cut_by_comment(node, place)
                problem = self.templates.check_template(node.value)
                if not problem:
                    self.step_results_used(node, node.value, place)
                if problem:
                    self.error(node, f"invalid template in {place}{self.in_rule}: {problem}")
            elif isinstance(node.value, dict | list):
                self.templates_in(node.value, place)

    def parameters(
        self, schema: ActionSchema, given: Mapping[str, Node], where: Node, item: str = ""
    ) -> None:
        plain = {k: v.plain() for k, v in given.items()}
        for problem in schema.problems(plain):
            place = where
            for key in given:
                if problem.startswith(f"unknown parameter {key!r}"):
                    place = where.keys.get(key, where)
                    hint = suggest(key, schema.params)
                    if hint:
                        problem = problem.replace("; expected", f"; {hint}expected", 1)
            self.error(place, f"{problem}{self.of_rule}")
        for key, node in given.items():
            param = schema.params.get(key)
            if param is None:
                continue
            if _has_template(node):
                kind = self.rendered_type(node)
                if kind is not None and not fits(param.types, kind, exact=False):
                    problem = type_problem(schema, key, kind, node.value, self.in_rule, item)
                    self.error(node, problem)
                continue
            value = node.plain()
            if not accepts(param, value):
                if value is None and node.comment:
                    self.error(
                        node,
                        f"parameter {key!r} of {schema.name}{self.in_rule} is empty: "
                        f"{comment_fix(key, node)}",
                    )
                    continue
                problem = type_problem(schema, key, type_name(value), value, self.in_rule, item)
                self.error(node, problem)
            elif param.out_of_range(value):
                self.error(
                    node,
                    f"parameter {key!r} of {schema.name}{self.in_rule} is {value!r}; expected "
                    f"a number {param.bounds()}",
                )
            elif param.choices and value not in param.choices:
                self.error(
                    node,
                    f"parameter {key!r} of {schema.name}{self.in_rule} is {value!r}; "
                    "expected one of " + ", ".join(repr(c) for c in param.choices),
                )
            elif key == "template" and isinstance(value, str):
                missing = self.templates.check_file(value)
                if missing:
                    self.error(node, f"{missing}{self.of_rule}")

    def rendered_type(self, node: Node) -> str | None:
        """The JSON type a lone `{{ expression }}` renders to, when it can be known ahead:
        an event field's documented type, or an earlier step's declared result field."""
        catalogue, on, results = self.catalogue, self.on, self.result_types

        def field_type(path: str) -> str | None:
            if path.startswith("steps."):
                _, key, *rest = path.split(".")
                return results.get(key, {}).get(rest[0]) if len(rest) == 1 else None
            return catalogue.field_type(on, path) if catalogue is not None and on else None

        return rendered_type(node.value, field_type)

    def step_if(self, node: Node | None) -> str | None:
        if node is None:
            return None
        value = node.value
        if isinstance(value, bool):
            return "true" if value else "false"
        if not isinstance(value, str):
            self.error(
                node, f"'if'{self.in_rule} must be an expression string, not {type_name(value)}"
            )
            return None
        problem = self.expression_problem(value)
        if problem:
            self.error(node, f"invalid expression {value!r} in 'if'{self.in_rule}: {problem}")
            return None
        braced = value if "{{" in value else "{{ " + value + " }}"
        self.step_results_used(node, braced, "'if'")
        return value

    def retry(self, node: Node | None) -> tuple[int, float]:
        attempts, backoff = Step.attempts, Step.backoff_seconds
        if node is None:
            return attempts, backoff
        if not node.is_mapping:
            self.error(
                node, f"'retry'{self.in_rule} must be a mapping {{attempts: 5, backoff: 2s}}"
            )
            return attempts, backoff
        self.unknown_keys(node, RETRY_KEYS, "retry")
        m = node.value
        if "attempts" in m:
            value = m["attempts"].value
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self.error(
                    m["attempts"],
                    f"retry.attempts{self.in_rule} must be a positive integer "
                    f"(tries in all), not {value!r}",
                )
            else:
                attempts = value
        if "backoff" in m:
            seconds = self.duration(m["backoff"], "retry.backoff", node)
            backoff = seconds if seconds is not None else backoff
        return attempts, backoff


def _has_template(node: Node) -> bool:
    value = node.value
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return False


# What a loop step's result is (bridge/rules/loops.py): its items' results and counts.
LOOP_RESULTS: Mapping[str, str] = {
    "results": "array",
    "count": "integer",
    "failed": "integer",
    "skipped": "integer",
}


def _result_types(step: Step) -> Mapping[str, str]:
    """The declared types of a step's result fields (none where it may hold an error)."""
    if step.continue_on_error:
        return {}
    if step.for_each is not None:
        return LOOP_RESULTS
    return step.schema.results if step.schema is not None else {}
