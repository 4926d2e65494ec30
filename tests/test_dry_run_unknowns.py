"""An earlier step's result in a dry run (bridge fire --dry-run, bridge test): a placeholder
whose every attribute is another (`steps.find.count`, though `count` is a str method), and
an `if:` that reads one is shown as running with a note, never as an error (review R3 M1)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bridge.cli.main import main

DOCS = Path(__file__).resolve().parents[1] / "docs" / "rules.md"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "rules" / "tests").mkdir(parents=True)
    (tmp_path / "templates").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRIDGE_RULES_DIR", "rules")
    monkeypatch.setenv("BRIDGE_TEMPLATES_DIR", "templates")
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def recipe() -> tuple[str, str]:
    """Cookbook recipe 7 of docs/rules.md: the campaign rule and its rule test."""
    text = DOCS.read_text()
    section = text[text.index("### 7. A campaign goes live → tag every asset of it") :]
    rule, tests = re.findall(r"```yaml\n(.*?)```", section, re.S)[:2]
    return rule, tests


CAMPAIGN = {
    "type": "lytho.campaign.status_changed",
    "data": {"id": 1, "name": "Spring 2027", "status": "active"},
    "changes": {"status": {"from": "planned", "to": "active"}},
}


def test_recipe_7_dry_run_shows_placeholders_for_str_method_names(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rule, _ = recipe()
    (project / "rules" / "tag-campaign-assets.yaml").write_text(rule)
    (project / "camp.json").write_text(json.dumps(CAMPAIGN))
    code, out, _ = run(capsys, "fire", "--dry-run", "camp.json")
    assert code == 0
    lines = out.splitlines()
    assert lines[-1] == (
        '      → step2: slack.post {"channel": "#creative", "text": "Spring 2027 is live: '
        "<steps.tag.count> assets found, <steps.tag.skipped> already tagged, "
        "<steps.tag.failed> could not be tagged (bridge trace "
        + out.split("bridge trace ")[1].split(")")[0]
        + '); more assets match than max_assets"}'
    )
    assert "built-in method" not in out
    # The loop's `if:` reads each asset, which a dry run cannot know: it runs, with a note.
    tag = lines.index(
        '      → tag[*]: lytho.tag_asset {"asset_id": "<steps.find.assets[*].id>", '
        '"tags": ["campaign-live"]}'
    )
    assert lines[tag + 1] == (
        "          note: if: 'campaign-live' not in asset.tag_names — cannot tell in a dry run "
        "(an earlier step's result); shown as running (a rule test can give the result as "
        "steps:)"
    )


FIND_THEN_POST = """
id: q
on: r3.q
actions:
  - id: find
    uses: lytho.find_assets
    with: {tag: hero}
  - uses: slack.post
    if: "steps.find.count > 0"
    with:
      channel: "#x"
      text: "{{ steps.find.count }} found; {{ steps.find.title }} {{ steps.find.count + 1 }}"
"""

NOTE = (
    "if: steps.find.count > 0 — cannot tell in a dry run (an earlier step's result); "
    "shown as running (a rule test can give the result as steps:)"
)


def test_an_if_on_a_count_runs_with_a_note_in_fire_dry_run(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "q.yaml").write_text(FIND_THEN_POST)
    (project / "q.json").write_text(json.dumps({"type": "r3.q", "data": {}}))
    code, out, _ = run(capsys, "fire", "--dry-run", "q.json")
    assert code == 0, out
    assert out.splitlines()[-2:] == [
        '      → step1: slack.post {"channel": "#x", "text": "<steps.find.count> found; '
        '<steps.find.title> <steps.find.count + 1>"}',
        f"          note: {NOTE}",
    ]


def test_an_if_on_a_count_in_bridge_test_runs_unless_steps_decide_it(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "q.yaml").write_text(FIND_THEN_POST)
    (project / "rules" / "tests" / "q.test.yaml").write_text(
        """
cases:
  - name: find then post
    event: {type: r3.q, data: {}}
    expect:
      actions:
        - {uses: lytho.find_assets}
        - uses: slack.post
          with: {text: "<steps.find.count> found; <steps.find.title> <steps.find.count + 1>"}
  - name: nothing found, nothing posted
    event: {type: r3.q, data: {}}
    steps: {find: {count: 0, title: x}}
    expect:
      actions:
        - {uses: lytho.find_assets}
        - {uses: slack.post, skipped: true}
  - name: the note shows where an expectation fails
    event: {type: r3.q, data: {}}
    expect:
      actions:
        - {uses: lytho.find_assets}
        - {uses: slack.post, skipped: true}
"""
    )
    code, out, _ = run(capsys, "test")
    assert code == 1
    assert "ok    rules/tests/q.test.yaml:3: find then post" in out
    assert "ok    rules/tests/q.test.yaml:10: nothing found, nothing posted" in out
    assert "FAIL  rules/tests/q.test.yaml:17: the note shows where an expectation fails" in out
    assert f'"note": "{NOTE}"' in out
    assert "TypeError" not in out


CHOOSE_ON_A_COUNT = """
id: c
on: r3.c
actions:
  - id: find
    uses: lytho.find_assets
    with: {tag: hero}
  - id: decide
    choose:
      - when: "steps.find.count > 10"
        steps:
          - uses: slack.post
            with: {channel: "#x", text: "{{ steps.find.count - 1 }} more, {{ -steps.find.count }}"}
    default:
      - uses: slack.post
        with: {channel: "#x", text: "few"}
"""


def test_a_choice_on_a_count_is_shown_with_a_note(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "c.yaml").write_text(CHOOSE_ON_A_COUNT)
    (project / "c.json").write_text(json.dumps({"type": "r3.c", "data": {}}))
    code, out, _ = run(capsys, "fire", "--dry-run", "c.json")
    assert code == 0, out
    assert out.splitlines()[-3:] == [
        '      → decide: choose {"branch": 0, "when": "steps.find.count > 10"}',
        "          note: when: steps.find.count > 10 — cannot tell in a dry run (an earlier "
        "step's result); shown as chosen (a rule test can give the result as steps:)",
        '      → decide.0.step0: slack.post {"channel": "#x", "text": "<steps.find.count - 1> '
        'more, <-steps.find.count>"}',
    ]


def test_a_list_from_an_earlier_step_joins_as_one_placeholder_not_its_letters(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Cookbook recipe 6 names the reviewers with `steps.proof.user_names | join(', ')`: a
    # dry run must show the list as a placeholder, and a loop over it runs once, for "each".
    (project / "rules" / "reviewers.yaml").write_text(
        """\
id: reviewers
on: lytho.proof.status_changed
actions:
  - id: proof
    uses: lytho_workflow.get
    with: {kind: proof, id: "{{ subject }}"}
  - uses: slack.post
    with:
      channel: "#creative"
      text: >-
        Reviewers: {{ steps.proof.user_names | join(', ') | slack_escape }};
        {% for user in steps.proof.users %}{{ user.name }}/{% endfor %}
        first {{ steps.proof.user_names | first }}
"""
    )
    event = {"type": "lytho.proof.status_changed", "subject": "8", "data": {"id": 8}}
    (project / "proof.json").write_text(json.dumps(event))
    code, out, _ = run(capsys, "fire", "--dry-run", "proof.json")
    assert code == 0, out
    assert out.splitlines()[-1] == (
        '      → step1: slack.post {"channel": "#creative", "text": "Reviewers: '
        "<steps.proof.user_names[*]>; <steps.proof.users[*].name>/ "
        'first <steps.proof.user_names[*]>"}'
    )


def test_steps_that_did_not_run_are_missing_and_a_skipped_step_reads_as_skipped(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As in the worker: a step of a branch not chosen has no result (reading it fails the
    # step), and a step skipped by its `if:` has the result {skipped: true}, which a later
    # `if:` decides on instead of seeing a placeholder.
    (project / "rules" / "branches.yaml").write_text(
        """\
id: branches
on: shop.order.created
actions:
  - id: decide
    choose:
      - when: [{path: data.carrier, eq: dhl}]
        steps:
          - {id: dhl, uses: slack.post, with: {channel: "#ops", text: dhl}}
  - id: first
    uses: slack.post
    if: "data.reason == 'fraud'"
    with: {channel: "#ops", text: fraud}
  - id: second
    uses: slack.post
    if: "steps.first.ts is defined"
    with: {channel: "#ops", text: "after {{ steps.first.ts }}"}
  - id: third
    uses: slack.post
    if: "steps.first.skipped"
    with: {channel: "#ops", text: "first was skipped"}
  - id: report
    uses: slack.post
    with: {channel: "#ops", text: "dhl_ts={{ steps.dhl.ts }}"}
"""
    )
    event = {"type": "shop.order.created", "data": {"carrier": "ups", "reason": "late"}}
    (project / "order.json").write_text(json.dumps(event))
    code, out, _ = run(capsys, "fire", "--dry-run", "order.json")
    assert code == 1, out
    assert out.splitlines()[-5:] == [
        '      → decide: choose {"branch": null}',
        "      → first: slack.post {} (skipped: if is false)",
        "      → second: slack.post {} (skipped: if is false)",
        '      → third: slack.post {"channel": "#ops", "text": "first was skipped"}',
        "      → report: slack.post {} (error: template 'dhl_ts={{ steps.dhl.ts }}': "
        "'steps' has no attribute 'dhl')",
    ]


def test_a_failing_step_with_continue_on_error_goes_on_as_in_the_worker(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An item whose template fails is a failed item, counted, and the run goes on: a rule
    # test of it can pass, and the count reads as the worker's.
    (project / "rules" / "each.yaml").write_text(
        """\
id: each
on: shop.order.created
actions:
  - id: each
    for_each: "{{ data.list }}"
    continue_on_error: true
    uses: slack.post
    with: {channel: "#ops", text: "{{ item.name }}"}
  - uses: slack.post
    with: {channel: "#ops", text: "failed={{ steps.each.failed }} of {{ steps.each.count }}"}
"""
    )
    (project / "rules" / "tests" / "each.test.yaml").write_text(
        """\
cases:
  - name: two items without a name fail, the run goes on
    event:
      type: shop.order.created
      data: {list: [{name: a}, {}, {}]}
    expect:
      actions:
        - {uses: slack.post, step: "each[0]", with: {text: a}}
        - {uses: slack.post, with: {text: failed=2 of 3}}
"""
    )
    code, out, _ = run(capsys, "test")
    assert code == 0, out
    event = {"type": "shop.order.created", "data": {"list": [{"name": "a"}, {}, {}]}}
    (project / "order.json").write_text(json.dumps(event))
    code, out, _ = run(capsys, "fire", "--dry-run", "order.json")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[-1] == '      → step1: slack.post {"channel": "#ops", "text": "failed=2 of 3"}'
    assert lines[-3] == (
        "      → each[1]: slack.post {} (failed, continue_on_error: template '{{ item.name "
        "}}': 'item' has no attribute 'name')"
    )


def test_a_loop_over_a_step_of_a_branch_not_chosen_fails_as_in_the_worker(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "loop.yaml").write_text(
        """\
id: loop
on: shop.order.created
actions:
  - id: decide
    choose:
      - when: [{path: data.carrier, eq: dhl}]
        steps:
          - {id: dhl_label, uses: slack.post, with: {channel: "#ops", text: dhl}}
      - when: [{path: data.carrier, eq: ups}]
        steps:
          - {id: ups_label, uses: slack.post, with: {channel: "#ops", text: ups}}
  - id: after
    for_each: "{{ steps.ups_label.items }}"
    uses: slack.post
    with: {channel: "#ops", text: "{{ item }}"}
"""
    )
    (project / "order.json").write_text(
        json.dumps({"type": "shop.order.created", "data": {"carrier": "dhl"}})
    )
    code, out, _ = run(capsys, "fire", "--dry-run", "order.json")
    assert code == 1, out
    assert out.splitlines()[-1] == (
        "      → after: slack.post {} (error: template '{{ steps.ups_label.items }}': 'steps' "
        "has no attribute 'ups_label')"
    )
