"""Rules: load YAML rule files, match events, explain why (rules → decide)."""

from __future__ import annotations

from bridge.rules.dryrun import RenderedAction, render_actions
from bridge.rules.engine import Evaluation, RuleSet, should_run
from bridge.rules.explain import describe, format_condition_tree
from bridge.rules.files import rule_files
from bridge.rules.loader import load_rules, parse_duration
from bridge.rules.model import (
    MISSING,
    Condition,
    ConditionResult,
    Dedupe,
    Digest,
    RenderedStep,
    Rule,
    Step,
    Throttle,
    event_context,
)
from bridge.rules.operators import OPERATORS
from bridge.rules.outcomes import CaseResult, Failure, FileResult, format_results
from bridge.rules.testfiles import find_test_files
from bridge.rules.testing import run_test_file, run_tests

__all__ = [
    "MISSING",
    "OPERATORS",
    "CaseResult",
    "Condition",
    "ConditionResult",
    "Dedupe",
    "Digest",
    "Evaluation",
    "Failure",
    "FileResult",
    "RenderedAction",
    "RenderedStep",
    "Rule",
    "RuleSet",
    "Step",
    "Throttle",
    "describe",
    "event_context",
    "find_test_files",
    "format_condition_tree",
    "format_results",
    "load_rules",
    "parse_duration",
    "render_actions",
    "rule_files",
    "run_test_file",
    "run_tests",
    "should_run",
]
