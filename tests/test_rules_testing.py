"""Rule test files: cases run without Redis or network, failures say expected vs actual."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.events import Event
from bridge.rules import RuleSet, load_rules
from bridge.rules.explain import describe, format_condition_tree
from bridge.rules.testfiles import find_test_files
from bridge.rules.testing import (
    FileResult,
    format_results,
    render_actions,
    run_test_file,
    run_tests,
)
from bridge.schema import ActionSchema, Param
from bridge.templates.environment import Templates

ACTIONS = {
    "slack.post": ActionSchema(
        "slack.post", "Post", {n: Param(n) for n in ("channel", "text", "template", "thread_ts")}
    ),
    "lytics.collect": ActionSchema(
        "lytics.collect",
        "Collect",
        {"stream": Param("stream"), "data": Param("data", types=("object", "array"))},
    ),
    "lytho.tag_asset": ActionSchema(
        "lytho.tag_asset",
        "Tag",
        {"asset_id": Param("asset_id", types=("any",)), "tags": Param("tags", types=("array",))},
    ),
}

RULES = """\
rules:
  - id: proof-approved-to-slack
    description: "Tell #creative when a proof is approved"
    priority: 100
    on: lytho.proof.status_changed
    when:
      - {path: data.status, changed: {to: approved}}
      - {path: data.tags, contains: hero}
      - any:
          - {path: data.priority, in: [high, urgent]}
          - data.due_in_days < 3
    actions:
      - id: notify
        uses: slack.post
        with: {channel: "#creative", template: proof.json.j2}
      - uses: lytics.collect
        with:
          stream: lytho_workflow
          data: {proof_id: "{{ data.id }}", slack_ts: "{{ steps.notify.ts }}"}
      - uses: lytho.tag_asset
        if: "'approved' not in data.asset.tags"
        with: {asset_id: "{{ data.asset.id }}", tags: [approved]}
  - id: everything-else
    on: lytho.*
    priority: -1
    when:
      - {path: data.status, ne: approved}
    actions:
      - uses: slack.post
        with: {channel: "#log", text: "{{ event.type }} {{ data.status }}"}
"""

APPROVED = (
    "{type: lytho.proof.status_changed, "
    "data: {status: approved, tags: [hero], id: 7, priority: high, asset: {id: a1, tags: []}}, "
    "changes: {status: {from: in_review, to: approved}}}"
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules" / "tests").mkdir(parents=True)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "proof.json.j2").write_text('{"text": "Proof {{ data.id }}"}')
    (tmp_path / "rules" / "creative.yaml").write_text(RULES)
    return tmp_path


def loaded(project: Path) -> tuple[RuleSet, Templates]:
    templates = Templates(Path("templates"))
    return load_rules(Path("rules"), templates=templates, actions=ACTIONS), templates


def run(project: Path, text: str, name: str = "creative.test.yaml") -> FileResult:
    path = project / "rules" / "tests" / name
    path.write_text(text)
    ruleset, templates = loaded(project)
    return run_test_file(path, ruleset, templates)


def test_design_example_passes(project: Path) -> None:
    result = run(
        project,
        f"""\
cases:
  - name: approved hero proof notifies and syncs
    event: {APPROVED}
    expect:
      matched: [proof-approved-to-slack]
      actions:
        - {{uses: slack.post, with: {{channel: "#creative"}}}}  # a subset of the params
        - {{uses: lytics.collect, with: {{data: {{proof_id: 7, slack_ts: "<steps.notify.ts>"}}}}}}
  - name: rejected proof is only logged
    event: {{type: lytho.proof.status_changed, data: {{status: rejected}}}}
    expect:
      matched: [everything-else]
      actions:
        - {{uses: slack.post, step: step0, with: {{text: lytho.proof.status_changed rejected}}}}
      not_matched_because: {{proof-approved-to-slack: data.status changed}}
""",
    )
    assert result.problems == []
    assert [(c.name, c.passed, c.line) for c in result.cases] == [
        ("approved hero proof notifies and syncs", True, 2),
        ("rejected proof is only logged", True, 9),
    ]
    assert [a.to_dict() for a in result.cases[0].actions] == [
        {
            "rule": "proof-approved-to-slack",
            "step": "notify",
            "uses": "slack.post",
            "with": {"channel": "#creative", "template": "proof.json.j2"},
            "rendered": {"text": "Proof 7"},  # the template file's output
        },
        {
            "rule": "proof-approved-to-slack",
            "step": "step1",
            "uses": "lytics.collect",
            "with": {
                "stream": "lytho_workflow",
                "data": {"proof_id": 7, "slack_ts": "<steps.notify.ts>"},
            },
        },
        {
            "rule": "proof-approved-to-slack",
            "step": "step2",
            "uses": "lytho.tag_asset",
            "with": {"asset_id": "a1", "tags": ["approved"]},
        },
    ]
    assert result.passed
    assert format_results([result]).splitlines() == [
        "ok    rules/tests/creative.test.yaml:2: approved hero proof notifies and syncs",
        "ok    rules/tests/creative.test.yaml:9: rejected proof is only logged",
        "2 passed, 0 failed",
    ]


def test_a_rule_that_did_not_match_shows_the_failing_condition(project: Path) -> None:
    result = run(
        project,
        """\
cases:
  - name: low priority
    event:
      type: lytho.proof.status_changed
      data: {status: approved, tags: [banner], priority: low, due_in_days: 9}
      changes: {status: {from: in_review, to: approved}}
    expect: {matched: [proof-approved-to-slack]}
""",
    )
    (case,) = result.cases
    (failure,) = case.failures
    assert (failure.what, failure.expected, failure.actual) == (
        "matched",
        ["proof-approved-to-slack"],
        [],
    )
    assert str(failure).splitlines() == [
        'matched: expected ["proof-approved-to-slack"], got []',
        "rule 'proof-approved-to-slack' did not match:",
        "  ✗ proof-approved-to-slack (rules/creative.yaml:2)",
        "    ✓ data.status changed {'to': 'approved'} "
        "(actual {'from': 'in_review', 'to': 'approved'})",
        "    ✗ data.tags contains 'hero' (actual ['banner']: 'hero' not found in ['banner'])",
        "    ✗ any (no alternative holds)",
        "      ✗ data.priority in ['high', 'urgent'] "
        "(actual 'low': 'low' is not one of ['high', 'urgent'])",
        "      ✗ data.due_in_days < 3 (actual false: false)",
    ]
    report = format_results([result])
    assert report.startswith("FAIL  rules/tests/creative.test.yaml:2: low priority\n")
    assert report.endswith("\n0 passed, 1 failed")


def test_unexpected_match_and_unknown_rule(project: Path) -> None:
    result = run(
        project,
        """\
cases:
  - event: {type: lytho.asset.created, data: {status: new}}
    expect: {matched: [proof-aproved-to-slack]}
""",
    )
    (failure,) = result.cases[0].failures
    assert result.cases[0].name == "case at line 2"
    assert failure.actual == ["everything-else"]
    assert failure.detail == (
        "rule 'proof-aproved-to-slack' does not exist; did you mean 'proof-approved-to-slack'?\n"
        "rule 'everything-else' matched although not expected"
    )


def test_rule_for_another_type_or_stopped(project: Path) -> None:
    (project / "rules" / "stopper.yaml").write_text(
        "id: stopper\non: lytho.*\npriority: 500\nstop: true\n"
    )
    result = run(
        project,
        f"""\
cases:
  - event: {APPROVED}
    expect: {{matched: [proof-approved-to-slack]}}
  - event: {{type: lytics.segment.entered}}
    expect: {{matched: [everything-else]}}
""",
    )
    details = [c.failures[0].detail for c in result.cases]
    assert details == [
        "rule 'proof-approved-to-slack' was not evaluated: rule 'stopper' matched first "
        "with stop: true\nrule 'stopper' matched although not expected",
        "rule 'everything-else' is not for this event type (on: lytho.*)",
    ]


def test_expected_actions_are_found_in_order(project: Path) -> None:
    result = run(
        project,
        f"""\
cases:
  - name: out of order
    event: {APPROVED}
    expect:
      actions:
        - {{uses: lytics.collect}}
        - {{uses: slack.post}}
  - name: wrong value
    event: {APPROVED}
    expect:
      actions: [{{uses: slack.post, with: {{channel: "#general"}}}}]
""",
    )
    first, second = result.cases
    (failure,) = first.failures
    assert failure.what == "action 2 of expect.actions"
    assert failure.expected == {"uses": "slack.post"}
    assert [a["uses"] for a in failure.actual] == ["lytho.tag_asset"]
    (failure,) = second.failures
    assert str(failure).startswith(
        "action 1 of expect.actions: "
        'expected {"uses": "slack.post", "with": {"channel": "#general"}}, '
        'got [{"rule": "proof-approved-to-slack", "step": "notify", "uses": "slack.post", '
        '"with": {"channel": "#creative", "template": "proof.json.j2"}, '
        '"rendered": {"text": "Proof 7"}}'
    )


def test_not_matched_because(project: Path) -> None:
    result = run(
        project,
        f"""\
cases:
  - event: {APPROVED}
    expect: {{not_matched_because: {{proof-approved-to-slack: data.status}}}}
  - event: {{type: lytho.proof.status_changed, data: {{status: rejected}}}}
    expect: {{not_matched_because: {{proof-approved-to-slack: data.priority}}}}
  - event: {{type: lytho.proof.status_changed, data: {{status: rejected}}}}
    expect: {{not_matched_because: {{proof-approved-to-slack: data.owner}}}}
  - event: {{type: lytics.segment.entered}}
    expect: {{not_matched_because: {{proof-approved-to-slack: data.owner}}}}
""",
    )
    first, second, third, fourth = result.cases
    assert first.failures[0].actual == "it matched"
    assert second.passed  # any failing condition may be named
    (failure,) = third.failures
    assert failure.what == "not_matched_because of 'proof-approved-to-slack'"
    assert failure.actual == [
        "data.status changed {'to': 'approved'} (not changed)",
        "data.tags contains 'hero' (missing)",
        "data.priority in ['high', 'urgent'] (missing)",
        "data.due_in_days < 3 (missing: expression 'data.due_in_days < 3': "
        "'data' has no attribute 'due_in_days')",
    ]
    assert failure.detail is not None and failure.detail.startswith("  ✗ proof-approved-to-slack")
    assert fourth.failures[0].actual == "rule not evaluated"
    assert fourth.failures[0].detail == (
        "rule 'proof-approved-to-slack' is not for this event type (on: lytho.proof.status_changed)"
    )


def test_render_errors_fail_the_case(project: Path) -> None:
    (project / "templates" / "proof.json.j2").write_text('{"text": "{{ data.nope.x }}"}')
    result = run(
        project,
        f"""\
cases:
  - event: {APPROVED}
    expect: {{matched: [proof-approved-to-slack]}}
""",
    )
    (failure,) = result.cases[0].failures
    assert failure.what == "step notify of rule 'proof-approved-to-slack' renders"
    assert failure.actual == "templates/proof.json.j2:1: 'data' has no attribute 'nope'"


def test_event_file_and_skipped_steps(project: Path) -> None:
    event = {
        "type": "lytho.proof.status_changed",
        "id": "evt_9",
        "data": {
            "id": 9,
            "status": "approved",
            "tags": ["hero"],
            "priority": "urgent",
            "asset": {"id": "a1", "tags": ["approved"]},
        },
        "changes": {"status": {"from": "in_review", "to": "approved"}},
    }
    (project / "rules" / "tests" / "approved.json").write_text(json.dumps(event))
    result = run(
        project,
        """\
cases:
  - event_file: approved.json
    expect:
      matched: [proof-approved-to-slack]
      actions: [{uses: slack.post}, {uses: lytics.collect}]
""",
    )
    assert result.passed
    skipped = [a.step for a in result.cases[0].actions if a.skipped]
    assert skipped == ["step2"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "1:1: empty test file; expected cases: [...]"),
        (
            "cases: {}\n",
            "1:1: a rule test file holds cases: [a list of cases]",
        ),
        (
            "cases:\n  - {name: x, expect: {}}\n",
            "2:5: a case needs exactly one of event (inline), event_file or events",
        ),
        (
            "cases:\n  - {event: {data: {}}, expect: {}}\n",
            "2:13: an event is a mapping with at least a type (and data, changes, …)",
        ),
        (
            "cases:\n  - {event: {type: t, colour: red}, expect: {}}\n",
            "2:13: unknown event field 'colour'; "
            "expected id, type, source, subject, time, data, changes",
        ),
        (
            "cases:\n  - {event: {type: t}}\n",
            "2:5: case 'case at line 2' has no 'expect'; expected {matched: [...]}",
        ),
        (
            "cases:\n  - {event: {type: t}, expect: {matchd: []}}\n",
            "2:33: unknown key 'matchd' in expect; did you mean 'matched'? "
            "expected one of matched, actions, not_matched_because",
        ),
        (
            "cases:\n  - {event: {type: t}, expect: {matched: a}}\n",
            "2:42: expect.matched of case 'case at line 2' must be a list of rule ids",
        ),
        (
            "cases:\n  - {event_file: nope.json, expect: {}}\n",
            "2:18: cannot read event_file 'nope.json': ",
        ),
        (
            "cases:\n  - {event: {type: t}, expect: {}\n",
            "3:1: invalid YAML: the '{' opened on line 2 is not closed; "
            "add '}' where the mapping ends",
        ),
    ],
)
def test_problems_in_a_test_file_are_reported(project: Path, text: str, problem: str) -> None:
    result = run(project, text, "bad.test.yaml")
    assert not result.passed
    assert str(result.problems[0]).startswith(f"rules/tests/bad.test.yaml:{problem}")
    assert format_results([result]).startswith("ERROR rules/tests/bad.test.yaml:")


def test_find_and_run_all_test_files(project: Path) -> None:
    (project / "rules" / "tests" / "a.yaml").write_text("cases: []\n")
    (project / "rules" / "b.test.yml").write_text("cases: []\n")
    (project / "rules" / ".hidden").mkdir()
    (project / "rules" / ".hidden" / "c.test.yaml").write_text("cases: []\n")
    assert [p.name for p in find_test_files(Path("rules"))] == ["b.test.yml", "a.yaml"]
    assert find_test_files(Path("rules/b.test.yml")) == [Path("rules/b.test.yml")]
    ruleset, templates = loaded(project)
    results = run_tests(Path("rules"), ruleset, templates)
    assert [r.file for r in results] == ["rules/b.test.yml", "rules/tests/a.yaml"]
    assert format_results(results) == "0 passed, 0 failed"


def test_format_condition_tree_for_dry_run(project: Path) -> None:
    ruleset, templates = loaded(project)
    event = Event(
        id="e",
        source="lytho",
        type="lytho.proof.status_changed",
        data={"status": "approved", "tags": "hero", "priority": 3},
    )
    first, second = ruleset.evaluate(event, templates)
    assert format_condition_tree(first) == "\n".join(
        [
            "✗ proof-approved-to-slack (rules/creative.yaml:2)",
            "  ✗ data.status changed {'to': 'approved'} (not changed)",
            "  ✓ data.tags contains 'hero' (actual 'hero')",
            "  ✗ any (no alternative holds)",
            "    ✗ data.priority in ['high', 'urgent'] "
            "(actual 3: type mismatch: 3 is int, the values are str)",
            "    ✗ data.due_in_days < 3 (missing: expression 'data.due_in_days < 3': "
            "'data' has no attribute 'due_in_days')",
        ]
    )
    assert format_condition_tree(second) == "\n".join(
        [
            "✗ everything-else (rules/creative.yaml:23)",
            "  ✗ data.status ne 'approved' (actual 'approved': equal)",
        ]
    )
    (project / "rules" / "creative.yaml").write_text("id: bare\non: t\n")
    ruleset, templates = loaded(project)
    (only,) = ruleset.evaluate(Event(id="e", source="s", type="t"), templates)
    assert format_condition_tree(only) == "✓ bare (rules/creative.yaml:1)\n  ✓ (no conditions)"


def test_describe_exists_and_groups(project: Path) -> None:
    (project / "rules" / "creative.yaml").write_text(
        "id: r\non: t\nwhen:\n  - {path: data.a, exists: true}\n"
        "  - not: {path: data.b, missing: true}\n"
    )
    ruleset, templates = loaded(project)
    (evaluation,) = ruleset.evaluate(
        Event(id="e", source="s", type="t", data={"b": None}), templates
    )
    exists, negated = evaluation.conditions.children
    assert describe(exists) == "data.a exists (missing)"
    assert describe(negated) == "not (the negated conditions hold)"
    assert describe(negated.children[0]) == "data.b missing (actual null)"


def test_render_actions_for_dry_run(project: Path) -> None:
    ruleset, templates = loaded(project)
    rule = ruleset.get("everything-else")
    assert rule is not None
    event = Event(id="e", source="s", type="lytho.asset.created", data={"status": "new"})
    (action,) = render_actions(event, rule, templates)
    assert action.to_dict() == {
        "rule": "everything-else",
        "step": "step0",
        "uses": "slack.post",
        "with": {"channel": "#log", "text": "lytho.asset.created new"},
    }
