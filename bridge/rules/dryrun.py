"""A matched rule's steps as they would run, rendered but never run (rules → decide).

Rule tests and `bridge fire --dry-run` show them. Each step renders through `Step.render`,
as in the worker; an earlier step's result is a placeholder (`{{ steps.notify.ts }}`
renders as `<steps.notify.ts>`), so templates that use earlier results still render.
A rule test may give step results (`steps:`), which templates then read instead. A loop
shows one rendered call per item (`tag[0]`, `tag[1]`, …; one `tag[*]` with its item as a
placeholder when the list is an earlier step's result not given); a `choose` step shows
its choice (uses `choose`, with `{branch, when}`), then the steps of the chosen branch.
An `if:` or `when:` that reads a placeholder cannot be told: the step is shown as running
(the branch as chosen), with a note saying so.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from bridge.errors import TemplateError
from bridge.events import Event
from bridge.rules.choose import CHOOSE, decide
from bridge.rules.digests import digest_context, digest_event, is_digest_run, rollup_context
from bridge.rules.loops import checked_items, item_context, item_step
from bridge.rules.model import Rule, Step, event_context
from bridge.rules.param_types import ParamTypeError, value_place
from bridge.rules.template_analysis import names_read, step_references
from bridge.rules.waits import current_of
from bridge.templates.environment import SlackText, Templates
from bridge.templates.unknown import Unknown, noted, unknown_reads

_LOOP = ("index", "index0", "first", "last", "length")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


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
    # Why a dry run cannot tell whether it runs (its `if:`, or a choose's `when:`, reads a
    # placeholder): it is shown as running (or as chosen).
    note: str | None = None
    # Its error failed the step for good, and `continue_on_error` goes on with the next
    # one (the step's result is then `{error, failed: true}`), as in the worker.
    continued: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "step": self.step, "uses": self.uses}
        out["with"] = dict(self.with_)
        if self.skipped:
            out["skipped"] = True
        if self.error:
            out["error"] = self.error
        if self.rendered is not None:
            out["rendered"] = self.rendered
        if self.note:
            out["note"] = self.note
        if self.continued:
            out["continued"] = True
        return out

    @property
    def failed(self) -> bool:
        """An error that stops the run (one that `continue_on_error` goes past does not)."""
        return self.error is not None and not self.continued


class _StepResult(SlackText, Unknown):
    """A stand-in for an earlier step's result: any attribute renders as its own path.

    It is text that is already safe for Slack and JSON, so a placeholder such as
    `<steps.notify.ts>` shows as written in every kind of template. Templates read its
    every attribute and item as another (`steps.find.count`, though `count` is a str
    method), and compare or compute with it without error (bridge/templates/unknown.py).
    """

    def __new__(cls, path: str) -> _StepResult:
        found = super().__new__(cls, f"<{path}>")
        found.unknown_path = path
        return found

    def __iter__(self) -> Iterator[_StepResult]:
        """Its items, as a loop over it shows them: one placeholder standing for each
        (`steps.proof.user_names[*]`), never the letters of its text (`join`, `for`)."""
        item = self.each()
        assert isinstance(item, _StepResult)
        yield item


class _Steps(dict[str, Any]):
    """`steps` for a dry run: a step that ran answers with a placeholder; one that did not
    run (yet, or at all: a branch not chosen) has no result, as in the worker; a skipped
    step's result is `{skipped: true}`, and a result given by a rule test is itself."""

    # A value read from a placeholder has no type to check (param_types.check_rendered).
    placeholders = True

    def __init__(self, given: Mapping[str, Any]) -> None:
        super().__init__(given)
        self.ran: set[str] = set()

    def __missing__(self, key: str) -> _StepResult:
        if key not in self.ran:
            raise KeyError(key)
        found = _StepResult(f"steps.{key}")
        noted(found)
        return found

    def record(self, key: str, action: RenderedAction) -> None:
        """What the step left for the next ones to read (a given result stays as given)."""
        if key in self:
            return
        if action.skipped:
            self[key] = {"skipped": True}
        elif action.continued:
            self[key] = {"error": action.error, "failed": True}
        else:
            self.ran.add(key)


def dry_run_context(
    event: Event,
    rule: Rule,
    throttle: Mapping[str, Any] | None = None,
    current: Mapping[str, Any] | None = None,
    *,
    steps: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The template context of a run that has not happened: steps answer with placeholders
    (or with the results given as `steps`).

    A digest rule's event alone is shown as a digest of that one event (a dry run cannot
    wait for its window); a throttle roll-up shows `throttle` as given, or nothing held back.
    """
    if is_digest_run(event, rule.id):
        context = digest_context(event, rule)
    elif rule.digest is not None:
        one = digest_event(rule.id, "dg_dry_run", "", [event.to_dict()])
        context = digest_context(one, rule)
    else:
        context = event_context(event, rule)
    if rule.throttle is not None and rule.throttle.rollup:
        context["throttle"] = dict(throttle or rollup_context(0, []))
    if rule.wait is not None:  # `for:`: the state after the wait (the event itself if none)
        context["current"] = dict(current or current_of(event.to_dict(), "event"))
    context["steps"] = _Steps(steps or {})
    return context


def render_actions(
    event: Event,
    rule: Rule,
    templates: Templates,
    throttle: Mapping[str, Any] | None = None,
    current: Mapping[str, Any] | None = None,
    *,
    steps: Mapping[str, Any] | None = None,
) -> list[RenderedAction]:
    """The steps of a matched rule, each rendered as the worker renders it (`Step.render`)."""
    rendered: list[RenderedAction] = []
    if rule.digest is not None and not is_digest_run(event, rule.id):
        # A dry run cannot wait for the window: the event alone, as a digest of one.
        try:
            key = str(templates.render_value(rule.digest.key, event_context(event, rule)))
        except TemplateError:
            key = rule.id  # as the worker does with a key that cannot render
        event = digest_event(rule.id, "dg_dry_run", key, [event.to_dict()])
    context = dry_run_context(event, rule, throttle, current, steps=steps)
    _render_steps(event, rule, rule.actions, templates, context, rendered)
    return rendered


def _render_steps(
    event: Event,
    rule: Rule,
    steps: tuple[Step, ...],
    templates: Templates,
    context: dict[str, Any],
    out: list[RenderedAction],
) -> None:
    """Each step rendered into `out`: a loop once per item, a choose by its chosen branch."""
    for step in steps:
        if step.uses == CHOOSE:
            with unknown_reads() as reads:  # a `when:` on an earlier step's result
                choice = decide(step, event, templates, rule, context)
            note = None
            if reads:
                when = choice.result.get("when", "a branch's when")
                note = (
                    f"when: {when} — cannot tell in a dry run (an earlier step's result); "
                    "shown as chosen (a rule test can give the result as steps:)"
                )
            out.append(RenderedAction(rule.id, step.key, CHOOSE, choice.result, note=note))
            context["steps"][step.key] = choice.result  # as the branch's steps read it
            _render_steps(event, rule, choice.steps, templates, context, out)
        elif step.for_each is not None:
            out.extend(_render_loop(rule, step, templates, context))
            context["steps"].ran.add(step.key)  # a loop over a placeholder: its result is one
        else:
            out.append(_render_step(rule, step, templates, context))
            context["steps"].record(step.key, out[-1])


def _render_loop(
    rule: Rule, step: Step, templates: Templates, context: dict[str, Any]
) -> list[RenderedAction]:
    source = step.for_each
    # The steps whose results are placeholders (they ran in this dry run, no result given);
    # one that did not run has no result, and the list fails to render, as in the worker.
    steps = context["steps"]
    ran: set[str] = getattr(steps, "ran", set())
    refs = step_references(source) if isinstance(source, str) else set()
    unknown = {ref for ref in refs if ref not in steps and ref in ran}
    if unknown:
        # The list is an earlier step's result, known when the rule runs: one call shows
        # what each item's will be like, its item a placeholder (`<steps.find.assets[*]>`).
        path = source.strip().removeprefix("{{").removesuffix("}}").strip()
        path = path if _DOTTED.match(path) else f"steps.{min(unknown)}"
        loop = {name: _StepResult(f"loop.{name}") for name in _LOOP}
        scope = {step.as_: _StepResult(f"{path}[*]"), "loop": loop}
        one = replace(step, id=f"{step.key}[*]", for_each=None)
        return [_render_step(rule, one, templates, context | scope, (step.as_, "loop"))]
    try:
        items = checked_items(step, templates.render_value(source, context))
    except TemplateError as exc:
        unlisted = RenderedAction(
            rule.id, step.key, step.uses, {}, error=str(exc), continued=step.continue_on_error
        )
        context["steps"].record(step.key, unlisted)
        return [unlisted]
    calls = [
        _render_step(
            rule, item_step(step, n), templates, context | item_context(step, item, n, len(items))
        )
        for n, item in enumerate(items)
    ]
    # The loop's result as far as a dry run knows it: how many items, how many skipped or
    # failed (continue_on_error).
    results = [
        {"skipped": True}
        if call.skipped
        else {"error": call.error, "failed": True}
        if call.continued
        else _StepResult(f"steps.{step.key}.results.{n}")
        for n, call in enumerate(calls)
    ]
    skipped = sum(1 for call in calls if call.skipped)
    failed = sum(1 for call in calls if call.continued)
    context["steps"].setdefault(
        step.key,
        {"results": results, "count": len(calls), "failed": failed, "skipped": skipped},
    )
    return calls


def _render_step(
    rule: Rule,
    step: Step,
    templates: Templates,
    context: dict[str, Any],
    unknown: tuple[str, ...] = (),
) -> RenderedAction:
    """The step rendered in `context`; `unknown` names context variables that are placeholders
    (a loop's item and `loop` when the list is an earlier step's result)."""
    note = None
    if step.if_ is not None:
        # An `if:` that reads an earlier step's result cannot be told: shown as running.
        with unknown_reads() as reads:
            try:
                holds = step.should_run(templates, context)
            except TemplateError as exc:
                return RenderedAction(
                    rule.id,
                    step.key,
                    step.uses,
                    {},
                    error=str(exc),
                    continued=step.continue_on_error,
                )
        if reads or names_read(step.if_) & set(unknown):
            note = (
                f"if: {step.if_} — cannot tell in a dry run (an earlier step's result); "
                "shown as running (a rule test can give the result as steps:)"
            )
        elif not holds:
            return RenderedAction(rule.id, step.key, step.uses, {}, skipped=True)
        step = replace(step, if_=None)
    try:
        # Errors surface here, not in Slack: a template file is rendered too.
        done = step.render(templates, context)
    except ParamTypeError as exc:
        # A value of the wrong type is shown with what rendered, told where it is written
        # as `bridge validate` tells it (`rules/shop.yaml:6:22: asset_id expects …`).
        written = step.with_.get(exc.key)
        place = value_place(rule.file, step.line, step.uses, exc.key, written)
        error = f"{place}: {exc}" if place else str(exc)
        return RenderedAction(
            rule.id,
            step.key,
            step.uses,
            exc.params,
            error=error,
            note=note,
            continued=step.continue_on_error,
        )
    except TemplateError as exc:
        return RenderedAction(
            rule.id,
            step.key,
            step.uses,
            {},
            error=str(exc),
            note=note,
            continued=step.continue_on_error,
        )
    return RenderedAction(
        rule.id,
        step.key,
        step.uses,
        done.params,
        skipped=done.skipped,
        rendered=done.output,
        note=note,
    )
