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

A digest rule's matches collect in memory, each event's `time` the clock: a window closes
when a later event comes after it, when `max` matches are in, or at the end of the case.
The steps of every digest run of the case follow the last event's own actions, in the
order the digests closed; `digests: {rule id: [counts]}` checks how many events each held.

A case may give results of steps, which templates read instead of placeholders: a loop over
a look-up's result then renders one call per item (`tag[0]`, `tag[1]`, …), and a `choose`
step shows its choice as an action `{uses: choose, step: decide, with: {branch: 1}}`:

      - name: every asset of the campaign is tagged
        event: {type: lytho.campaign.updated, data: {id: 7}}
        steps: {find: {assets: [{id: 1}, {id: 2}]}}
        expect:
          actions:
            - {uses: lytho.find_assets}
            - {uses: lytho.tag_asset, step: "tag[0]", with: {asset_id: 1}}
            - {uses: lytho.tag_asset, step: "tag[1]", with: {asset_id: 2}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge.errors import Problem, TemplateError
from bridge.events import Event
from bridge.rules.digests import ROLLUP_KEPT, digest_event, rollup_context
from bridge.rules.dryrun import RenderedAction, dry_run_context, render_actions
from bridge.rules.engine import RuleSet
from bridge.rules.expectations import check_expectations
from bridge.rules.files import display_name
from bridge.rules.model import Rule, event_context
from bridge.rules.outcomes import CaseResult, Failure, FileResult, format_results
from bridge.rules.source import Node, parse
from bridge.rules.testfiles import CaseReader, find_test_files
from bridge.rules.triggers import off_schedule
from bridge.rules.waits import MemoryWaits, current_of
from bridge.templates.environment import Templates

__all__ = [
    "CaseResult",
    "Failure",
    "FileResult",
    "MemoryLimits",
    "RenderedAction",
    "dry_run_context",
    "format_results",
    "render_actions",
    "run_case",
    "run_test_file",
    "run_tests",
]


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
        given = _given_steps(reader, case_node)  # `steps:`, results the case gives
        if case is not None and given is not None:
            name, events, expect = case
            result.cases.append(
                run_case(
                    result.file, name, case_node.line, events, expect, ruleset, templates, given
                )
            )
    result.problems.extend(reader.problems)
    return result


def _given_steps(reader: CaseReader, node: Node) -> dict[str, Any] | None:
    """A case's `steps:` (step id → the result templates read); None when it is wrong."""
    given = node.value.get("steps") if node.is_mapping else None
    if given is None:
        return {}
    if not given.is_mapping:
        reader.error(
            given,
            "steps of a case maps step ids to the results their templates read, such as "
            "{find: {assets: [{id: 1}, {id: 2}]}}",
        )
        return None
    found: dict[str, Any] = given.plain()
    return found


class MemoryLimits:
    """Dedupe and throttle for rule tests: as the worker keeps them in Redis, in memory.

    The clock is each event's `time`, so a case can step past a throttle window or a
    dedupe TTL by giving its events later times.
    """

    def __init__(self) -> None:
        self._dedupe: dict[tuple[str, str], float] = {}  # (rule, key) -> expires at
        self._throttle: dict[tuple[str, str], list[float]] = {}  # (rule, key) -> run times
        # A throttle roll-up: (rule, key) -> (count, the newest suppressed events).
        self._rolled: dict[tuple[str, str], tuple[int, list[dict[str, Any]]]] = {}
        # What the last admitted run of each roll-up rule was given as `throttle`.
        self.rollup: dict[str, dict[str, Any]] = {}

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
                if rule.throttle.rollup:
                    count, kept = self._rolled.get((rule.id, throttle_key), (0, []))
                    kept = [*kept, event.to_dict()][-ROLLUP_KEPT:]
                    self._rolled[(rule.id, throttle_key)] = (count + 1, kept)
                return (
                    f"throttle: {throttle_key!r} is full ({rule.throttle.limit} runs per "
                    f"{window} s); room again in {min(runs) + window - now:.1f} s"
                )
        if rule.dedupe is not None:
            self._dedupe[(rule.id, dedupe_key)] = now + rule.dedupe.ttl_seconds
        if rule.throttle is not None:
            self._throttle[(rule.id, throttle_key)].append(now)
            if rule.throttle.rollup:
                count, kept = self._rolled.pop((rule.id, throttle_key), (0, []))
                self.rollup[rule.id] = rollup_context(count, kept)
        return None


@dataclass
class _Window:
    rule: Rule
    key: str
    opened: float
    members: list[dict[str, Any]] = field(default_factory=list)


class MemoryDigests:
    """Digest windows for rule tests, as the worker keeps them in Redis, in memory."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], _Window] = {}
        self.closed: list[_Window] = []

    def join(self, rule: Rule, event: Event, templates: Templates) -> TemplateError | None:
        """Add the event to its rule's open window for its key (opening one if none); a key
        that cannot render joins the rule's own window, as in the worker, and is returned."""
        assert rule.digest is not None
        problem = None
        try:
            key = str(templates.render_value(rule.digest.key, event_context(event, rule)))
        except TemplateError as exc:
            key, problem = rule.id, exc
        window = self._open.setdefault((rule.id, key), _Window(rule, key, _clock(event.time)))
        window.members.append(event.to_dict())
        if len(window.members) >= rule.digest.max:
            self.closed.append(self._open.pop((rule.id, key)))
        return problem

    def close_due(self, now: float | None = None) -> None:
        """Close the windows whose time is up at `now` (every open one when None)."""
        for name, window in list(self._open.items()):
            assert window.rule.digest is not None
            if now is None or now >= window.opened + window.rule.digest.window_seconds:
                self.closed.append(self._open.pop(name))

    def render(self, templates: Templates, result: CaseResult) -> None:
        """Each closed digest's run, rendered into the case's actions, in closing order."""
        for number, window in enumerate(self.closed, 1):
            event = digest_event(window.rule.id, f"dg_test_{number}", window.key, window.members)
            result.actions.extend(render_actions(event, window.rule, templates))
            result.digests.setdefault(window.rule.id, []).append(len(window.members))


def _key_failure(rule: Rule, exc: TemplateError) -> Failure:
    return Failure(
        f"the dedupe/throttle/digest key of rule {rule.id!r} renders", "no error", str(exc)
    )


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
    steps: Mapping[str, Any] | None = None,
) -> CaseResult:
    """Evaluate the events in order and compare the last one's outcome with the expectations.

    `steps` gives results of steps (`{find: {assets: […]}}`) that templates read instead of
    placeholders: a loop over one renders a call per item.
    """
    result = CaseResult(file, name, line)
    events = events if isinstance(events, list) else [events]
    limits = MemoryLimits()
    digests = MemoryDigests()
    waits = MemoryWaits(templates)  # `for:` (bridge/rules/waits.py)
    for index, event in enumerate(events):
        last = index == len(events) - 1
        digests.close_due(_clock(event.time))
        waits.observe(event, _clock(event.time))
        off = off_schedule(event, ruleset)  # a tick given by hand must be one of its rule's
        if off is not None:
            known = event.subject in ruleset.scheduled
            what, want = ("tick time", "a tick of its schedule") if known else ("tick", "a rule id")
            result.failures.append(Failure(what, want, event.time if known else event.subject, off))
        evaluations = ruleset.evaluate(event, templates)
        for rule in (e.rule for e in evaluations if e.matched):
            try:
                held = limits.admit(rule, event, templates)
            except TemplateError as exc:  # the worker runs it (a key that cannot render)
                result.failures.append(_key_failure(rule, exc))
                held = None
            if held is None and rule.digest is not None:
                problem = digests.join(rule, event, templates)
                if problem is not None:  # it joined the rule's own window, as in the worker
                    result.failures.append(_key_failure(rule, problem))
                continue
            if held is None and rule.wait is not None:
                waits.start(rule, event, _clock(event.time))
                continue
            if not last:
                continue
            if held is not None:
                result.suppressed[rule.id] = held
                continue
            result.actions.extend(
                render_actions(event, rule, templates, limits.rollup.get(rule.id), steps=steps)
            )
        if last:
            result.evaluations = evaluations
            result.event_type = event.type
    digests.close_due()
    digests.render(templates, result)
    waits.close_due()
    for wait in waits.ended:  # the runs of the waits that still held, in order
        if wait.current is not None:
            current = current_of(wait.current.to_dict(), "event")
            result.actions.extend(
                render_actions(wait.origin, wait.rule, templates, current=current)
            )
    check_expectations(result, expect, ruleset)
    return result
