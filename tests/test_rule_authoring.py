"""What rule authors can check before deploying: `bridge validate` warnings, the names
templates see, and rule tests that assert rendered templates, dedupe and throttle,
skipped steps and why another rule did not match (issue 11, items 12 and 13)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.actions import action_schemas
from bridge.cli.main import main
from bridge.operate.catalogue import event_catalogue
from bridge.rules import load_rules
from bridge.rules.live import LiveRules
from bridge.rules.testing import format_results, run_test_file
from bridge.templates.environment import Templates


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "rules" / "tests").mkdir(parents=True)
    (tmp_path / "templates").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRIDGE_RULES_DIR", "rules")
    monkeypatch.setenv("BRIDGE_TEMPLATES_DIR", "templates")
    return tmp_path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# --- bridge validate: warnings ----------------------------------------------------------

TYPO = """\
id: proof-approved
on: lytho.proof.status_change
actions:
  - uses: slack.post
    with: {channel: "#creative", text: approved}
"""
TYPO_WARNING = (
    "rules/typo.yaml:2:5: warning: no source emits event type 'lytho.proof.status_change' "
    "in rule 'proof-approved'; did you mean 'lytho.proof.status_changed'? "
    "the types are listed in docs/events.md"
)


def test_validate_shows_a_typo_in_on_as_a_warning_and_strict_fails_on_it(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "typo.yaml").write_text(TYPO)
    code, out, err = cli(capsys, "validate")
    assert code == 0
    assert err.splitlines() == [
        TYPO_WARNING,
        "1 warning(s); `bridge validate --strict` fails on them",
    ]
    assert out == "ok: 1 rule(s) in rules, templates in templates\n"

    code, out, err = cli(capsys, "validate", "--strict")
    assert code == 1
    assert err.splitlines() == [TYPO_WARNING, "0 problem(s) found, 1 warning(s)"]


def test_live_rules_load_a_rule_with_a_warning_and_keep_the_warning(project: Path) -> None:
    (project / "rules" / "typo.yaml").write_text(TYPO)
    live = LiveRules(
        Path("rules"), Path("templates"), actions=action_schemas(), event_types=event_catalogue()
    )
    assert live.load()
    assert live.problems == []
    assert live.warnings == [TYPO_WARNING]


@pytest.mark.parametrize(
    "on",
    [
        "lytho.proof.status_changed",
        "lytho.proof.*",
        "lytics.segment.entered",
        "shop.order.paid",  # a generic source's own type
        "slack.action.approve",
        "[lytho.asset.tagged, lytho.asset.untagged]",
    ],
)
def test_types_that_a_source_emits_draw_no_warning(project: Path, on: str) -> None:
    (project / "rules" / "ok.yaml").write_text(TYPO.replace("lytho.proof.status_change", on))
    ruleset = load_rules(
        Path("rules"),
        templates=Templates(),
        actions=action_schemas(),
        event_types=event_catalogue(),
    )
    assert ruleset.warnings == ()


def test_the_catalogue_knows_every_type_in_docs_events_md() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "events.md").read_text()
    documented = {
        t
        for t in __import__("re").findall(r"`((?:lytho|lytics)\.[a-z_]+\.[a-z_]+)`", doc)
        if not t.endswith("_")
    }
    catalogue = event_catalogue()
    assert documented and all(catalogue.emits(t) for t in documented), sorted(
        t for t in documented if not catalogue.emits(t)
    )
    assert catalogue.fields["lytho.asset.tagged"]["data.tags"] == "array"


# --- the same names in paths and templates ----------------------------------------------

NAMES = """\
id: names
on: shop.order.paid
when:
  - {path: type, eq: shop.order.paid}
  - {path: subject, startswith: ord_}
  - "type == event.type and subject == event.subject"
actions:
  - uses: slack.post
    with: {channel: "#sales", text: "{{ type }} {{ subject }} {{ source }} {{ id }} {{ time }}"}
"""


def test_type_and_subject_read_the_same_in_paths_expressions_and_templates(
    project: Path,
) -> None:
    (project / "rules" / "names.yaml").write_text(NAMES)
    result = run(
        project,
        """\
cases:
  - name: names
    event: {type: shop.order.paid, id: e1, source: shop, subject: ord_1,
            time: "2026-01-01T00:00:00.000Z"}
    expect:
      matched: [names]
      actions:
        - {uses: slack.post,
           with: {text: "shop.order.paid ord_1 shop e1 2026-01-01T00:00:00.000Z"}}
""",
    )
    assert result.passed, format_results([result])


# --- rule tests: what they can assert now ------------------------------------------------

RULES = """\
rules:
  - id: proof-approved
    on: lytho.proof.status_changed
    when:
      - {path: data.status, eq: approved}
    dedupe: {key: "proof-{{ data.id }}", ttl: 1h}
    actions:
      - id: notify
        uses: slack.post
        with: {channel: "#creative", template: proof.json.j2}
      - id: tag
        uses: lytho.tag_asset
        if: "'approved' not in data.tags"
        with: {asset_id: "{{ data.asset_id }}", tags: [approved]}
  - id: noisy
    on: lytho.proof.status_changed
    throttle: {key: "#creative", limit: 2, per: 10m}
    actions:
      - uses: slack.post
        with: {channel: "#creative", text: "{{ data.id }} is {{ data.status }}"}
  - id: asset-created
    on: lytho.asset.created
    actions:
      - uses: slack.post
        with: {channel: "#dam", text: "new asset"}
"""
TEMPLATE = """\
{"blocks": [{"type": "section", "text": {"type": "mrkdwn",
  "text": "Proof *{{ data.name }}* approved"}}]}
"""


def proof(pid: int, time: str = "2026-01-01T10:00:00.000Z", tags: str = "[]") -> str:
    return (
        f"{{type: lytho.proof.status_changed, time: '{time}', "
        f"data: {{id: {pid}, name: Flyer {pid}, status: approved, asset_id: 3, tags: {tags}}}}}"
    )


def run(project: Path, text: str) -> object:
    if not (project / "rules" / "creative.yaml").exists() and not any(
        (project / "rules").glob("*.yaml")
    ):
        (project / "rules" / "creative.yaml").write_text(RULES)
    (project / "templates" / "proof.json.j2").write_text(TEMPLATE)
    templates = Templates(Path("templates"))
    ruleset = load_rules(Path("rules"), templates=templates, actions=action_schemas())
    path = project / "rules" / "tests" / "t.test.yaml"
    path.write_text(text)
    return run_test_file(path, ruleset, templates)


def outcome(project: Path, text: str) -> list[str]:
    """The report lines of one test file, without the summary."""
    return format_results([run(project, text)]).splitlines()  # type: ignore[list-item]


def test_rendered_template_output_can_be_asserted(project: Path) -> None:
    lines = outcome(
        project,
        f"""\
cases:
  - name: the Block Kit text
    event: {proof(7)}
    expect:
      actions:
        - {{uses: slack.post, step: notify, rendered: "Proof *Flyer 7* approved"}}
  - name: a subset of the Block Kit JSON
    event: {proof(7)}
    expect:
      actions:
        - {{uses: slack.post, rendered: {{blocks: [{{type: section, text: {{type: mrkdwn}}}}]}}}}
  - name: a wrong text fails and shows the output
    event: {proof(7)}
    expect:
      actions:
        - {{uses: slack.post, step: notify, rendered: "Proof *Flyer 8*"}}
""",
    )
    assert lines[:3] == [
        "ok    rules/tests/t.test.yaml:2: the Block Kit text",
        "ok    rules/tests/t.test.yaml:7: a subset of the Block Kit JSON",
        "FAIL  rules/tests/t.test.yaml:12: a wrong text fails and shows the output",
    ]
    shown = json.loads(lines[3].split(", got ", 1)[1])
    assert shown[1]["rule"] == "proof-approved"
    assert shown[1]["rendered"]["blocks"][0]["text"]["text"] == "Proof *Flyer 7* approved"
    assert lines[4:] == [
        "      expected actions are found in order; `with` is a subset of the rendered "
        "parameters; `rendered` is text in, or a subset of, the template file's output",
        "2 passed, 1 failed",
    ]


def test_dedupe_and_throttle_suppression_can_be_asserted(project: Path) -> None:
    lines = outcome(
        project,
        f"""\
cases:
  - name: the same proof twice within the hour is deduplicated
    events:
      - {proof(7)}
      - {proof(7, time="2026-01-01T10:30:00.000Z")}
    expect:
      matched: [noisy, proof-approved]
      suppressed: {{proof-approved: "dedupe: key 'proof-7' already ran; it expires in 1800 s"}}
      actions:
        - {{uses: slack.post, rule: noisy}}
  - name: after the hour it runs again
    events:
      - {proof(7)}
      - {proof(7, time="2026-01-01T11:00:01.000Z")}
    expect:
      actions: [{{uses: slack.post, rule: proof-approved}}]
  - name: the third post in ten minutes is throttled
    events: [{proof(1)}, {proof(2)}, {proof(3)}]
    expect:
      suppressed: {{noisy: throttle}}
  - name: a wrong expectation says what happened
    event: {proof(4)}
    expect:
      suppressed: {{proof-approved: dedupe}}
""",
    )
    assert lines == [
        "ok    rules/tests/t.test.yaml:2: the same proof twice within the hour is deduplicated",
        "ok    rules/tests/t.test.yaml:11: after the hour it runs again",
        "ok    rules/tests/t.test.yaml:17: the third post in ten minutes is throttled",
        "FAIL  rules/tests/t.test.yaml:21: a wrong expectation says what happened",
        "      suppressed of 'proof-approved': expected 'dedupe', got 'it ran'",
        "3 passed, 1 failed",
    ]


def test_a_skipped_step_can_be_asserted(project: Path) -> None:
    lines = outcome(
        project,
        f"""\
cases:
  - name: an already approved asset is not tagged again
    event: {proof(7, tags="[approved]")}
    expect:
      actions:
        - {{uses: slack.post, step: notify}}
        - {{uses: lytho.tag_asset, step: tag, skipped: true}}
  - name: a step that runs is not skipped
    event: {proof(8)}
    expect:
      actions:
        - {{uses: lytho.tag_asset, skipped: true}}
""",
    )
    assert lines[:2] == [
        "ok    rules/tests/t.test.yaml:2: an already approved asset is not tagged again",
        "FAIL  rules/tests/t.test.yaml:8: a step that runs is not skipped",
    ]
    assert lines[2] == (
        '      action 1 of expect.actions: expected {"uses": "lytho.tag_asset", "skipped": true}, '
        "got 'no further actions'"
    )


def test_why_a_rule_of_another_type_did_not_match_can_be_asserted(project: Path) -> None:
    lines = outcome(
        project,
        f"""\
cases:
  - name: the asset rule is not for proofs, the proof rule needs approved
    events:
      - {{type: lytho.proof.status_changed, data: {{id: 1, status: rejected}}}}
    expect:
      not_matched:
        asset-created: "not for this event type (on: lytho.asset.created)"
        proof-approved: "data.status eq 'approved' (actual 'rejected': not equal)"
  - name: a list of ids just says they did not match
    event: {{type: lytho.asset.created, data: {{id: 1}}}}
    expect:
      not_matched: [proof-approved, noisy]
  - name: a rule that matched fails not_matched
    event: {proof(5)}
    expect:
      not_matched: {{proof-approved: anything}}
""",
    )
    assert lines == [
        "ok    rules/tests/t.test.yaml:2: the asset rule is not for proofs, the proof rule "
        "needs approved",
        "ok    rules/tests/t.test.yaml:9: a list of ids just says they did not match",
        "FAIL  rules/tests/t.test.yaml:13: a rule that matched fails not_matched",
        "      not_matched of 'proof-approved': expected 'anything', got 'it matched'",
        "2 passed, 1 failed",
    ]


def test_bad_new_expectations_are_reported_with_their_place(project: Path) -> None:
    result = run(
        project,
        """\
cases:
  - name: bad
    events: []
    expect: {suppressed: [proof-approved], not_matched: 3,
             actions: [{uses: slack.post, skipped: maybe, rendered: }]}
""",
    )
    assert [str(p) for p in result.problems] == [  # type: ignore[attr-defined]
        "rules/tests/t.test.yaml:3:13: events is a list of events, in the order they arrive "
        "(each inline, or {event_file: …}); the expectations are about the last",
        "rules/tests/t.test.yaml:5:52: skipped is true (the step's if: is false) or false",
        "rules/tests/t.test.yaml:5:68: rendered is text found in the rendered template file, "
        "or a subset of its JSON (such as {blocks: [...]})",
        "rules/tests/t.test.yaml:4:57: not_matched is a list of rule ids, or maps a rule id to "
        "text found in why it did not match (such as 'not for this event type')",
        "rules/tests/t.test.yaml:4:26: suppressed maps a rule id to dedupe, throttle, or text "
        "found in the reason",
    ]


def test_a_rule_of_another_type_is_named_as_such_even_after_a_stop(project: Path) -> None:
    (project / "rules" / "stop.yaml").write_text(
        RULES.replace("  - id: noisy\n", "  - id: noisy\n    stop: true\n    priority: 9\n")
    )
    lines = outcome(
        project,
        f"""\
cases:
  - name: the asset rule is not for proofs, whatever stopped first
    event: {proof(1)}
    expect:
      not_matched:
        asset-created: "is not for this event type (on: lytho.asset.created)"
        proof-approved: "was not evaluated: rule 'noisy' matched first with stop: true"
""",
    )
    assert lines == [
        "ok    rules/tests/t.test.yaml:2: the asset rule is not for proofs, whatever stopped first",
        "1 passed, 0 failed",
    ]
