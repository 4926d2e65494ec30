"""`bridge validate`, `test` and `fire`: the rule author's commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.cli.config import companion_settings, env_settings
from bridge.cli.event_files import read_event_file
from bridge.cli.loop import with_context
from bridge.errors import ConfigError

if TYPE_CHECKING:
    from bridge.operate.context import Context
    from bridge.queue.store import Admission
    from bridge.settings import Settings


def _load(rules_dir: Path, templates_dir: Path) -> tuple[Any, Any]:
    """The rule set and templates of a folder; RuleError lists every problem."""
    from bridge.actions import action_schemas
    from bridge.operate.catalogue import event_catalogue
    from bridge.rules import load_rules
    from bridge.templates.environment import Templates

    templates = Templates(templates_dir)
    ruleset = load_rules(
        rules_dir, templates=templates, actions=action_schemas(), event_types=event_catalogue()
    )
    return ruleset, templates


def _templates_dir(given: str | None, rules_dir: Path | None, settings: Settings) -> Path:
    """--templates; else, for a rules folder named on the command line, the `templates`
    folder beside it if there is one (`examples/rules` → `examples/templates`); else
    BRIDGE_TEMPLATES_DIR."""
    if given:
        return Path(given)
    if rules_dir is not None and rules_dir != settings.rules_dir:
        beside = rules_dir.parent / "templates"
        if beside.is_dir():
            return beside
    return settings.templates_dir


def _rules_dir_of(path: Path, default: Path) -> Path:
    """The rules folder a rule-test path belongs to: BRIDGE_RULES_DIR when the path is in it;
    else the folder above its `tests/` folder, or the path's own folder."""
    try:
        path.resolve().relative_to(default.resolve())
        return default
    except ValueError:
        pass
    folder = path if path.is_dir() else path.parent
    parts = folder.parts
    if "tests" in parts:
        last = len(parts) - 1 - parts[::-1].index("tests")
        return Path(*parts[:last]) if last else Path(".")
    return folder


def cmd_validate(args: argparse.Namespace) -> int:
    """Check every rule file and template; `file:line:col: message` per problem.

    Warnings (`file:line:col: warning: …`) are shown too; they fail only with --strict.
    """
    from bridge.actions import action_schemas
    from bridge.operate.catalogue import event_catalogue
    from bridge.rules.loader import check_rules
    from bridge.templates.environment import Templates

    settings = env_settings()
    rules_dir = Path(args.dir) if args.dir else settings.rules_dir
    templates_dir = _templates_dir(args.templates, Path(args.dir) if args.dir else None, settings)
    checked = check_rules(
        rules_dir,
        templates=Templates(templates_dir),
        actions=action_schemas(),
        event_types=event_catalogue(),
    )
    count = len(checked.ruleset.rules) if checked.ruleset is not None else 0
    found = sorted(checked.errors + checked.warnings, key=lambda p: (p.file, p.line, p.column))
    lines = [str(p) for p in found]  # errors and warnings, each file's in line order
    errors, warnings = len(checked.errors), len(checked.warnings)
    if templates_dir.is_dir():
        templates = Templates(templates_dir)
        for name in sorted(templates.names()):
            problem = templates.check_file(name)
            if problem:
                lines.append(problem)
                errors += 1
    if lines:
        print("\n".join(lines), file=sys.stderr)
    if errors or (warnings and args.strict):
        also = f", {warnings} warning(s)" if warnings else ""
        print(f"{errors} problem(s) found{also}", file=sys.stderr)
        return 1
    if warnings:
        print(f"{warnings} warning(s); `bridge validate --strict` fails on them", file=sys.stderr)
    print(f"ok: {count} rule(s) in {rules_dir}, templates in {templates_dir}")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    """Run rule test files: given events, the rules that must match and the actions."""
    from bridge.rules.testing import format_results, run_tests

    settings = env_settings()
    path = Path(args.path) if args.path else settings.rules_dir
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    rules_dir = _rules_dir_of(path, settings.rules_dir)
    templates_dir = _templates_dir(args.templates, rules_dir, settings)
    if rules_dir != settings.rules_dir:
        print(
            f"note: testing the rules of {rules_dir} (templates: {templates_dir})", file=sys.stderr
        )
    ruleset, templates = _load(rules_dir, templates_dir)
    results = run_tests(path, ruleset, templates)
    if not results:
        print(f"no rule tests found in {path} (*.test.yaml, or YAML under tests/)")
        return 1
    print(format_results(results))
    return 0 if all(r.passed for r in results) else 1


def cmd_fire(args: argparse.Namespace) -> int:
    """Show which rules match an event and what they would do; or enqueue it."""
    from bridge.rules.dryrun import render_actions
    from bridge.rules.explain import format_condition_tree
    from bridge.rules.triggers import off_schedule

    settings, _ = companion_settings() if not args.dry_run else (env_settings(), None)
    events = read_event_file(Path(args.event), args.source)
    if not args.dry_run:

        async def enqueue(context: Context) -> list[Admission]:
            return await context.store.admit(events)

        admitted = with_context(enqueue, settings)
        for event, admission in zip(events, admitted, strict=True):
            # Another source may own the event's id: then it is stored under another one.
            state = "enqueued" if admission.new else "duplicate, not enqueued"
            shown = admission.id
            print(f"{shown} ({event.type}): {state}; see: bridge trace {shown}")
        return 0
    ruleset, templates = _load(settings.rules_dir, settings.templates_dir)
    failed = False
    for event in events:
        off = off_schedule(event, ruleset)  # a tick by hand must be one of its rule's
        if off is not None:
            print(f"event {event.id} ({event.type}): refused: {off}")
            failed = True
            continue
        evaluations = ruleset.evaluate(event, templates)
        matched = [e for e in evaluations if e.matched]
        print(
            f"event {event.id} ({event.type}): {len(matched)} of {len(evaluations)} "
            "candidate rules match"
        )
        for evaluation in evaluations:
            print(format_condition_tree(evaluation, indent=1))
            wait = evaluation.rule.wait
            if evaluation.matched and wait is not None:  # `for:` (bridge/rules/waits.py)
                print(
                    f"      after for: {wait.text}, if the conditions still hold then "
                    "(shown with this event as the object's state then):"
                )
            if evaluation.matched:
                for action in render_actions(event, evaluation.rule, templates):
                    shown = json.dumps(dict(action.with_), ensure_ascii=False, default=str)
                    state = (
                        " (skipped: if is false)"
                        if action.skipped
                        else f" (failed, continue_on_error: {action.error})"
                        if action.continued
                        else f" (error: {action.error})"
                        if action.error
                        else ""
                    )
                    print(f"      → {action.step}: {action.uses} {shown}{state}")
                    if action.note:  # its `if:` reads what a dry run cannot know
                        print(f"          note: {action.note}")
                    failed = failed or action.failed
                    if action.rendered is not None:  # the output of its template file
                        text = json.dumps(
                            action.rendered, ensure_ascii=False, indent=2, default=str
                        )
                        print("\n".join("          " + line for line in text.splitlines()))
    return 1 if failed else 0
