"""Run rule test files (`*.test.yaml`): given events, expected matches and actions (rules → decide).

Pure: no Redis, no network. Actions are rendered, never run; a step's result is a
placeholder (`{{ steps.notify.ts }}` renders as `<steps.notify.ts>`), so templates that
use earlier results still render.

    cases:
      - name: approved hero proof notifies and syncs
        event: {type: lytho.proof.status_changed, data: {status: approved}}   # or event_file:
        expect:
          matched: [proof-approved-to-slack]                  # exactly these rules (any order)
          actions:                                            # in order, each `with` a subset
            - {uses: slack.post, with: {channel: "#creative"}}
          not_matched_because: {other-rule: data.status}      # text found in its failing condition

A case may give several `events:` in order (dedupe and throttle are kept in memory, the
events' `time` is the clock); the expectations are about the last event:

      - name: a second approval of the same proof is deduplicated
        events: [{type: lytho.proof.status_changed, data: {id: 7}}, {…same…}]
        expect:
          suppressed: {proof-approved-to-slack: dedupe}       # text found in the reason
          actions:
            - {uses: slack.post, skipped: true}               # its `if:` is false
            - {uses: slack.post, rendered: "Proof 7"}         # the template file's output
          not_matched: {asset-rule: not for this event type}  # text found in why not
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge.errors import Problem, TemplateError
from bridge.events import Event
from bridge.rules.checker import suggest
from bridge.rules.engine import Evaluation, RuleSet, should_run
from bridge.rules.explain import describe, format_condition_tree
from bridge.rules.loader import display_name
from bridge.rules.model import Rule, event_context
from bridge.rules.source import Node, parse
from bridge.rules.testfiles import CaseReader, find_test_files
from bridge.templates.environment import SlackText, Templates


@dataclass(frozen=True)
class Failure:
    """One expectation that did not hold: what, expected, actual, and the condition to blame."""

    what: str
    expected: Any
    actual: Any
    detail: str | None = None

    def __str__(self) -> str:
        text = f"{self.what}: expected {_full(self.expected)}, got {_full(self.actual)}"
        return f"{text}\n{self.detail}" if self.detail else text


def _full(value: Any) -> str:
    """A value in full (unlike traces, a test failure must show everything)."""
    if isinstance(value, str):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, default=str)


@dataclass(frozen=True)
class RenderedAction:
    """A step of a matched rule as it would run: its rendered parameters, or why it would not."""

    rule: str
    step: str
    uses: str
    with_: Mapping[str, Any]
    skipped: bool = False
    error: str | None = None
    # The output of the step's `template:` file (parsed JSON for `*.json.j2`), if it has one.
    rendered: Any = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "step": self.step, "uses": self.uses}
        out["with"] = dict(self.with_)
        if self.skipped:
            out["skipped"] = True
        if self.error:
            out["error"] = self.error
        if self.rendered is not None:
            out["rendered"] = self.rendered
        return out


@dataclass
class CaseResult:
    """The outcome of one case."""

    file: str
    name: str
    line: int
    failures: list[Failure] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    actions: list[RenderedAction] = field(default_factory=list)
    # Matched rules that dedupe or throttle held back for the last event: rule id -> why.
    suppressed: dict[str, str] = field(default_factory=dict)
    event_type: str | None = None  # of the last event

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class FileResult:
    """The cases of one test file, or the problems that kept it from running."""

    file: str
    cases: list[CaseResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and all(case.passed for case in self.cases)


# --- finding and reading test files ------------------------------------------------------


def run_tests(path: Path, ruleset: RuleSet, templates: Templates) -> list[FileResult]:
    """Run every test file found at `path`."""
    return [run_test_file(file, ruleset, templates) for file in find_test_files(path)]


def run_test_file(path: Path, ruleset: RuleSet, templates: Templates) -> FileResult:
    """Run the cases of one file; problems in the file itself are reported, not raised."""
    result = FileResult(display_name(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        result.problems.append(Problem(result.file, 1, 1, f"cannot read the file: {exc}"))
        return result
    root, source_problems = parse(text)
    result.problems.extend(
        Problem(result.file, p.line, p.column, p.message) for p in source_problems
    )
    if root is None:
        if not result.problems:
            result.problems.append(
                Problem(result.file, 1, 1, "empty test file; expected cases: [...]")
            )
        return result
    reader = CaseReader(result.file, path.parent)
    for case_node in reader.cases(root):
        case = reader.case(case_node)
        if case is not None:
            name, events, expect = case
            result.cases.append(
                run_case(result.file, name, case_node.line, events, expect, ruleset, templates)
            )
    result.problems.extend(reader.problems)
    return result


# --- running a case ----------------------------------------------------------------------


class _StepResult(SlackText):
    """A stand-in for an earlier step's result: any attribute renders as its own path.

    It is text that is already safe for Slack and JSON, so a placeholder such as
    `<steps.notify.ts>` shows as written in every kind of template.
    """

    def __new__(cls, path: str) -> _StepResult:
        found = super().__new__(cls, f"<{path}>")
        found._path = path
        return found

    _path: str

    def __getattr__(self, name: str) -> _StepResult:
        if name.startswith("__"):
            raise AttributeError(name)
        return _StepResult(f"{self._path}.{name}")

    def __getitem__(self, key: object) -> _StepResult:
        return _StepResult(f"{self._path}.{key}")


class _Steps(dict[str, Any]):
    """`steps` for a dry run: every step id answers with a placeholder."""

    def __missing__(self, key: str) -> _StepResult:
        return _StepResult(f"steps.{key}")


def dry_run_context(event: Event, rule: Rule) -> dict[str, Any]:
    """The template context of a run that has not happened: steps answer with placeholders."""
    context = event_context(event, rule)
    context["steps"] = _Steps()
    return context


def render_actions(event: Event, rule: Rule, templates: Templates) -> list[RenderedAction]:
    """The steps of a matched rule, parameters rendered, as `bridge fire --dry-run` shows them."""
    rendered = []
    context = dry_run_context(event, rule)
    for step in rule.actions:
        try:
            if not should_run(step, context, templates):
                rendered.append(RenderedAction(rule.id, step.key, step.uses, {}, skipped=True))
                continue
            params = templates.render_value(dict(step.with_), context, escape=step.escape)
            template = params.get("template")
            output = None
            if isinstance(template, str) and template.endswith(".j2"):
                # Errors surface here, not in Slack; rule tests can assert on the output.
                output = templates.render_file(template, context)
        except TemplateError as exc:
            rendered.append(RenderedAction(rule.id, step.key, step.uses, {}, error=str(exc)))
            continue
        rendered.append(RenderedAction(rule.id, step.key, step.uses, params, rendered=output))
    return rendered


class MemoryLimits:
    """Dedupe and throttle for rule tests: as the worker keeps them in Redis, in memory.

    The clock is each event's `time`, so a case can step past a throttle window or a
    dedupe TTL by giving its events later times.
    """

    def __init__(self) -> None:
        self._dedupe: dict[tuple[str, str], float] = {}  # (rule, key) -> expires at
        self._throttle: dict[tuple[str, str], list[float]] = {}  # (rule, key) -> run times

    def admit(self, rule: Rule, event: Event, templates: Templates) -> str | None:
        """None when the rule may run (the run is booked), else why not (`dedupe: …`)."""
        if rule.dedupe is None and rule.throttle is None:
            return None
        now = _clock(event.time)
        context = event_context(event, rule)
        dedupe_key = throttle_key = ""
        if rule.dedupe is not None:
            dedupe_key = str(templates.render_value(rule.dedupe.key, context))
            expires = self._dedupe.get((rule.id, dedupe_key))
            if expires is not None and expires > now:
                return (
                    f"dedupe: key {dedupe_key!r} already ran; it expires in {int(expires - now)} s"
                )
        if rule.throttle is not None:
            throttle_key = str(templates.render_value(rule.throttle.key, context))
            window = rule.throttle.per_seconds
            runs = [t for t in self._throttle.get((rule.id, throttle_key), []) if t > now - window]
            self._throttle[(rule.id, throttle_key)] = runs
            if len(runs) >= rule.throttle.limit:
                return (
                    f"throttle: {throttle_key!r} is full ({rule.throttle.limit} runs per "
                    f"{window} s); room again in {min(runs) + window - now:.1f} s"
                )
        if rule.dedupe is not None:
            self._dedupe[(rule.id, dedupe_key)] = now + rule.dedupe.ttl_seconds
        if rule.throttle is not None:
            self._throttle[(rule.id, throttle_key)].append(now)
        return None


def _clock(time: str) -> float:
    try:
        return datetime.fromisoformat(time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def run_case(
    file: str,
    name: str,
    line: int,
    events: Event | list[Event],
    expect: Mapping[str, Node],
    ruleset: RuleSet,
    templates: Templates,
) -> CaseResult:
    """Evaluate the events in order and compare the last one's outcome with the expectations."""
    result = CaseResult(file, name, line)
    events = events if isinstance(events, list) else [events]
    limits = MemoryLimits()
    for index, event in enumerate(events):
        last = index == len(events) - 1
        evaluations = ruleset.evaluate(event, templates)
        for rule in (e.rule for e in evaluations if e.matched):
            try:
                held = limits.admit(rule, event, templates)
            except TemplateError as exc:
                result.failures.append(
                    Failure(
                        f"the dedupe/throttle key of rule {rule.id!r} renders", "no error", str(exc)
                    )
                )
                held = None
            if not last:
                continue
            if held is not None:
                result.suppressed[rule.id] = held
                continue
            result.actions.extend(render_actions(event, rule, templates))
        if last:
            result.evaluations = evaluations
            result.event_type = event.type
    if "matched" in expect:
        _check_matched(result, expect["matched"].plain(), ruleset)
    for action in result.actions:
        if action.error:
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
    return result


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
    running = [a for a in result.actions if not a.skipped and not a.error]
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
            shown = [
                a.to_dict() for a in actual[position:] if a.skipped == bool(want.get("skipped"))
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


# --- the report ---------------------------------------------------------------------


def format_results(results: list[FileResult]) -> str:
    """A report for `bridge test`: one line per case, details for failures, a summary."""
    lines = []
    passed = failed = 0
    for file_result in results:
        for problem in file_result.problems:
            lines.append(f"ERROR {problem}")
            failed += 1
        for case in file_result.cases:
            if case.passed:
                passed += 1
                lines.append(f"ok    {case.file}:{case.line}: {case.name}")
                continue
            failed += 1
            lines.append(f"FAIL  {case.file}:{case.line}: {case.name}")
            for failure in case.failures:
                lines.extend("      " + text for text in str(failure).splitlines())
    lines.append(f"{passed} passed, {failed} failed")
    return "\n".join(lines)
