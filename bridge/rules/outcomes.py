"""What a rule test found, and the report `bridge test` prints of it (rules → decide)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import Problem
from bridge.rules.dryrun import RenderedAction
from bridge.rules.engine import Evaluation


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
    # The digest runs of the case: rule id -> how many events each held, in closing order.
    digests: dict[str, list[int]] = field(default_factory=dict)
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
