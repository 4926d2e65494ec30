"""A tick given by hand (a rule test, bridge fire --dry-run) that names no scheduled rule, or
comes at a time that is no tick of its schedule: both tools say why (review R3 S2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.cli.main import main

RULES = """\
rules:
  - id: every-minute
    on: {schedule: "* * * * *", timezone: Europe/Amsterdam}
    actions:
      - uses: slack.post
        with: {channel: "#ops", text: "tick {{ data.tick_local }}"}
  - id: weekday-summary
    on: {schedule: "0 9 * * MON-FRI", timezone: Europe/Amsterdam}
    actions:
      - uses: slack.post
        with: {channel: "#marketing", text: "Summary"}
"""

TYPO = (
    "no scheduled rule 'every-minut'; scheduled rules here: every-minute, weekday-summary; "
    "did you mean 'every-minute'? (a tick's subject is the id of the rule it runs)"
)
OFF = (
    "2026-12-06T17:20:30Z is not a tick of rule 'every-minute' ('* * * * *' in "
    "Europe/Amsterdam); the ticks around it: 2026-12-06T17:20:00Z (2026-12-06T18:20:00+01:00) "
    "and 2026-12-06T17:21:00Z (2026-12-06T18:21:00+01:00)"
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "rules" / "tests").mkdir(parents=True)
    (tmp_path / "rules" / "rules.yaml").write_text(RULES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRIDGE_RULES_DIR", "rules")
    monkeypatch.setenv("BRIDGE_TEMPLATES_DIR", "templates")
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def tick(subject: str, time: str) -> str:
    return json.dumps({"type": "bridge.schedule", "subject": subject, "time": time})


def test_bridge_test_names_the_mistyped_rule_of_a_tick(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "tests" / "tick.test.yaml").write_text(
        """\
cases:
  - name: typo subject
    event: {type: bridge.schedule, subject: every-minut, time: "2026-12-06T17:20:00Z"}
    expect:
      matched: [every-minute]
"""
    )
    code, out, _ = run(capsys, "test")
    assert code == 1
    assert out.splitlines() == [
        "FAIL  rules/tests/tick.test.yaml:2: typo subject",
        "      tick: expected 'a rule id', got 'every-minut'",
        f"      {TYPO}",
        '      matched: expected ["every-minute"], got []',
        "      rule 'every-minute' runs on its schedule: a tick (bridge.schedule) with subject "
        "'every-minute' runs it",
        "0 passed, 1 failed",
    ]


def test_fire_dry_run_refuses_a_tick_of_no_rule_and_one_off_the_schedule(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "typo.json").write_text(tick("every-minut", "2026-12-06T17:20:00Z"))
    (project / "off.json").write_text(tick("every-minute", "2026-12-06T17:20:30Z"))
    (project / "good.json").write_text(tick("every-minute", "2026-12-06T17:20:00Z"))
    for name, problem in (("typo", TYPO), ("off", OFF)):
        code, out, _ = run(capsys, "fire", "--dry-run", f"{name}.json")
        assert code == 1
        [line] = out.splitlines()
        assert line.split(" ", 2)[2] == f"(bridge.schedule): refused: {problem}"
    code, out, _ = run(capsys, "fire", "--dry-run", "good.json")
    assert code == 0
    assert out.splitlines()[-1] == (
        '      → step0: slack.post {"channel": "#ops", "text": "tick 2026-12-06T18:20:00+01:00"}'
    )
