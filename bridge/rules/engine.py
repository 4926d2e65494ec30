"""Match events against a RuleSet: index by type, test conditions, trace (rules → decide)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bridge.errors import Problem
from bridge.events import Event
from bridge.rules.cron import SCHEDULE_EVENT
from bridge.rules.model import ConditionResult, Rule, Scope, Step
from bridge.templates.environment import Templates

_CANDIDATE_CACHE_LIMIT = 10_000  # event types remembered; senders may invent types


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


class Evaluation:
    """Whether one rule matched one event; the condition tree is built when first asked for."""

    __slots__ = ("_conditions", "_scope", "matched", "rule")

    def __init__(self, rule: Rule, matched: bool, scope: Scope) -> None:
        self.rule = rule
        self.matched = matched
        self._scope = scope
        self._conditions: ConditionResult | None = None

    @property
    def conditions(self) -> ConditionResult:
        """The trace of `when`: every node with op, path, expected, actual, result, reason."""
        if self._conditions is None:
            scope = Scope(self._scope.event, self._scope.templates, self.rule)
            self._conditions = self.rule.when.explain(scope)
        return self._conditions

    def failing(self) -> ConditionResult | None:
        """The first condition that kept the rule from matching."""
        return None if self.matched else self.conditions.failing()

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.id,
            "matched": self.matched,
            "conditions": self.conditions.to_dict(),
        }

    def __repr__(self) -> str:
        return f"Evaluation({self.rule.id!r}, matched={self.matched})"


class RuleSet:
    """The loaded rules, indexed by event type for matching."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        # What `bridge validate` warns about (loads all the same), set by the loader.
        self.warnings: tuple[Problem, ...] = ()
        self._by_id = {rule.id: rule for rule in self.rules}
        self._exact: dict[str, list[Rule]] = {}
        self._globs: list[tuple[Callable[[str], Any], Rule]] = []
        # Rules with a schedule get only their own ticks, never through `on:` patterns.
        self.scheduled: dict[str, Rule] = {}
        for rule in self.rules:
            if not rule.enabled:
                continue
            if rule.schedule is not None:
                self.scheduled[rule.id] = rule
                continue
            for pattern in rule.on:
                if is_glob(pattern):
                    self._globs.append((re.compile(fnmatch.translate(pattern)).match, rule))
                else:
                    self._exact.setdefault(pattern, []).append(rule)
        self._candidates: dict[str, tuple[Rule, ...]] = {}
        # Per event type: (rule, its compiled test, stop), so matching reads no attributes.
        self._plans: dict[str, tuple[tuple[Rule, Callable[[Scope], bool], bool], ...]] = {}

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Any:
        return iter(self.rules)

    def get(self, rule_id: str) -> Rule | None:
        return self._by_id.get(rule_id)

    def candidates(self, event_type: str) -> tuple[Rule, ...]:
        """Enabled rules whose `on` matches the type, highest priority first, then by id."""
        found = self._candidates.get(event_type)
        if found is None:
            rules = {id(r): r for r in self._exact.get(event_type, ())}
            for match, rule in self._globs:
                if match(event_type):
                    rules[id(rule)] = rule
            found = tuple(sorted(rules.values(), key=lambda r: (-r.priority, r.id)))
            if len(self._candidates) >= _CANDIDATE_CACHE_LIMIT:
                self._candidates.clear()
            self._candidates[event_type] = found
        return found

    def evaluate(self, event: Event, templates: Templates) -> list[Evaluation]:
        """One Evaluation per candidate rule, in order; a matched rule with `stop` ends the list."""
        if event.type == SCHEDULE_EVENT:
            return self._evaluate_tick(event, templates)
        plan = self._plans.get(event.type)
        if plan is None:
            plan = tuple((r, r.matches, r.stop) for r in self.candidates(event.type))
            if len(self._plans) >= _CANDIDATE_CACHE_LIMIT:
                self._plans.clear()
            self._plans[event.type] = plan
        scope = Scope(event, templates)
        out = []
        for rule, matches, stop in plan:
            scope.rule = rule
            matched = matches(scope)
            out.append(Evaluation(rule, matched, scope))
            if matched and stop:
                break
        return out

    def _evaluate_tick(self, event: Event, templates: Templates) -> list[Evaluation]:
        """A tick goes to the one rule it names (its subject), only if that rule has a
        schedule: rules whose `on:` glob matches `bridge.schedule` never see it."""
        rule = self.scheduled.get(event.subject or "")
        if rule is None or rule.schedule is None:
            return []
        scope = Scope(rule.schedule.complete(event, rule.id), templates, rule)
        return [Evaluation(rule, rule.matches(scope), scope)]

    def matching(self, event: Event, templates: Templates) -> list[Rule]:
        """The rules that match the event, in the order they run."""
        return [e.rule for e in self.evaluate(event, templates) if e.matched]


def should_run(step: Step, context: Mapping[str, Any], templates: Templates) -> bool:
    """Whether the step's `if:` holds (True without one); TemplateError if it cannot run."""
    return step.should_run(templates, context)
