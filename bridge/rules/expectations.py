"""Compare a rule test case's outcome with its `expect:` (rules → decide).

Each expectation that does not hold becomes a Failure with expected and actual, and, for
a rule that did not match, the condition to blame.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bridge.rules.checker import suggest
from bridge.rules.dryrun import RenderedAction
from bridge.rules.engine import RuleSet
from bridge.rules.explain import describe, format_condition_tree
from bridge.rules.outcomes import CaseResult, Failure
from bridge.rules.source import Node


def check_expectations(result: CaseResult, expect: Mapping[str, Node], ruleset: RuleSet) -> None:
    """Add a Failure to `result` for each expectation that does not hold."""
    if "matched" in expect:
        _check_matched(result, expect["matched"].plain(), ruleset)
    for action in result.actions:
        if action.failed:
            result.failures.append(
                Failure(
                    f"step {action.step} of rule {action.rule!r} renders", "no error", action.error
                )
            )
    if "actions" in expect:
        _check_actions(result, expect["actions"].plain())
    if "not_matched_because" in expect:
        _check_because(result, expect["not_matched_because"].plain(), ruleset)
    if "not_matched" in expect:
        _check_not_matched(result, expect["not_matched"].plain(), ruleset)
    if "suppressed" in expect:
        _check_suppressed(result, expect["suppressed"].plain())
    if "digests" in expect:
        for rule_id, counts in expect["digests"].plain().items():
            wanted = counts if isinstance(counts, list) else [counts]
            actual = result.digests.get(rule_id, [])
            if actual != wanted:
                result.failures.append(
                    Failure(
                        f"digests of {rule_id!r}",
                        wanted,
                        actual,
                        "one number per digest run of the case: how many events it held",
                    )
                )


def _check_matched(result: CaseResult, expected: list[str], ruleset: RuleSet) -> None:
    actual = [e.rule.id for e in result.evaluations if e.matched]
    if sorted(actual) == sorted(expected):
        return
    details = []
    for rule_id in expected:
        if rule_id in actual:
            continue
        details.append(_why_not(result, rule_id, ruleset))
    for rule_id in actual:
        if rule_id not in expected:
            details.append(f"rule {rule_id!r} matched although not expected")
    result.failures.append(Failure("matched", expected, actual, "\n".join(details) or None))


def _why_not(result: CaseResult, rule_id: str, ruleset: RuleSet) -> str:
    rule = ruleset.get(rule_id)
    if rule is None:
        hint = suggest(rule_id, [r.id for r in ruleset.rules])
        return f"rule {rule_id!r} does not exist" + (f"; {hint.strip()}" if hint else "")
    evaluation = next((e for e in result.evaluations if e.rule is rule), None)
    if evaluation is None:
        if not rule.enabled:
            return f"rule {rule_id!r} is disabled"
        if rule.schedule is not None:  # a tick runs it when the tick's subject is its id
            return (
                f"rule {rule_id!r} runs on its schedule: a tick (bridge.schedule) with "
                f"subject {rule_id!r} runs it"
            )
        if result.event_type is not None and rule not in ruleset.candidates(result.event_type):
            return f"rule {rule_id!r} is not for this event type (on: {', '.join(rule.on)})"
        stopped = next((e.rule.id for e in result.evaluations if e.matched and e.rule.stop), None)
        if stopped:
            return (
                f"rule {rule_id!r} was not evaluated: "
                f"rule {stopped!r} matched first with stop: true"
            )
        return f"rule {rule_id!r} is not for this event type (on: {', '.join(rule.on)})"
    return f"rule {rule_id!r} did not match:\n{format_condition_tree(evaluation, indent=1)}"


def _subset(expected: Any, actual: Any) -> bool:
    """Whether `expected` is found in `actual`: mappings by their keys, everything else equal."""
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and _subset(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(_subset(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return bool(expected == actual) and isinstance(expected, bool) == isinstance(actual, bool)


def _check_actions(result: CaseResult, expected: list[dict[str, Any]]) -> None:
    # A choose step's choice is shown among the actions, but runs nothing itself.
    running = [a for a in result.actions if not a.skipped and not a.error and a.uses != "choose"]
    if not expected and running:
        result.failures.append(
            Failure(
                "expect.actions",
                [],
                [a.to_dict() for a in running],
                "`actions: []` means no action runs",
            )
        )
        return
    # Skipped steps take part only where an expected action says `skipped: true`.
    actual = [a for a in result.actions if not a.error]
    position = 0
    for index, want in enumerate(expected):
        found = None
        for offset, action in enumerate(actual[position:]):
            if _action_matches(want, action):
                found = position + offset
                break
        if found is None:
            shown = [  # and a step a dry run runs though it cannot tell its `if:` (its note)
                a.to_dict()
                for a in actual[position:]
                if a.skipped == bool(want.get("skipped")) or a.note
            ]
            result.failures.append(
                Failure(
                    f"action {index + 1} of expect.actions",
                    want,
                    shown or "no further actions",
                    "expected actions are found in order; "
                    "`with` is a subset of the rendered parameters"
                    + (
                        "; `rendered` is text in, or a subset of, the template file's output"
                        if "rendered" in want
                        else ""
                    ),
                )
            )
            return
        position = found + 1


def _action_matches(want: Mapping[str, Any], action: RenderedAction) -> bool:
    if want.get("uses") != action.uses:
        return False
    if bool(want.get("skipped", False)) != action.skipped:
        return False
    if "rule" in want and want["rule"] != action.rule:
        return False
    if "step" in want and want["step"] != action.step:
        return False
    if "rendered" in want and not _rendered_matches(want["rendered"], action.rendered):
        return False
    return _subset(want.get("with", {}), dict(action.with_))


def _rendered_matches(want: Any, output: Any) -> bool:
    """Text found in the output (or in any of its strings), or a subset of its JSON."""
    if output is None:
        return False
    if not isinstance(want, str):
        return _subset(want, output)
    if isinstance(output, str):
        return want in output
    return want in json.dumps(output, ensure_ascii=False) or any(
        want in text for text in _strings(output)
    )


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _check_not_matched(result: CaseResult, expected: Any, ruleset: RuleSet) -> None:
    """`not_matched: [ids]` or `{id: text}`: the rule did not match, and why (text in it)."""
    wanted = expected if isinstance(expected, Mapping) else dict.fromkeys(expected, "")
    for rule_id, text in wanted.items():
        what = f"not_matched of {rule_id!r}"
        evaluation = next((e for e in result.evaluations if e.rule.id == rule_id), None)
        if evaluation is not None and evaluation.matched:
            held = result.suppressed.get(rule_id)
            actual = f"it matched (then held back: {held})" if held else "it matched"
            result.failures.append(Failure(what, text or "no match", actual))
            continue
        why = _why_not(result, rule_id, ruleset)
        if text and text not in why:
            result.failures.append(Failure(what, text, why))


def _check_suppressed(result: CaseResult, expected: Mapping[str, str]) -> None:
    for rule_id, text in expected.items():
        held = result.suppressed.get(rule_id)
        if held is None:
            matched = any(e.rule.id == rule_id and e.matched for e in result.evaluations)
            actual = "it ran" if matched else "it did not match"
            result.failures.append(Failure(f"suppressed of {rule_id!r}", text, actual))
        elif text not in held:
            result.failures.append(Failure(f"suppressed of {rule_id!r}", text, held))


def _check_because(result: CaseResult, expected: Mapping[str, str], ruleset: RuleSet) -> None:
    for rule_id, text in expected.items():
        evaluation = next((e for e in result.evaluations if e.rule.id == rule_id), None)
        if evaluation is None:
            result.failures.append(
                Failure(
                    f"not_matched_because of {rule_id!r}",
                    text,
                    "rule not evaluated",
                    _why_not(result, rule_id, ruleset),
                )
            )
            continue
        if evaluation.matched:
            result.failures.append(
                Failure(f"not_matched_because of {rule_id!r}", text, "it matched")
            )
            continue
        described = [describe(node) for node in evaluation.conditions.failing_all()]
        if not any(text in line for line in described):
            result.failures.append(
                Failure(
                    f"not_matched_because of {rule_id!r}",
                    text,
                    described,
                    format_condition_tree(evaluation, indent=1),
                )
            )
