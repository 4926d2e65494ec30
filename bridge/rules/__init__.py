"""Rules: load YAML rule files, match events, explain why (rules → decide)."""

from __future__ import annotations

from bridge.rules.engine import Evaluation, RuleSet, should_run
from bridge.rules.loader import load_rules, parse_duration, rule_files
from bridge.rules.model import (
    MISSING,
    Condition,
    ConditionResult,
    Dedupe,
    Rule,
    Step,
    Throttle,
    event_context,
)
from bridge.rules.operators import OPERATORS

__all__ = [
    "MISSING",
    "OPERATORS",
    "Condition",
    "ConditionResult",
    "Dedupe",
    "Evaluation",
    "Rule",
    "RuleSet",
    "Step",
    "Throttle",
    "event_context",
    "load_rules",
    "parse_duration",
    "rule_files",
    "should_run",
]
