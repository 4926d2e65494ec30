"""Parameter types checked before run time (issue 16, point 7).

A templated list passed into `asset_id` used to pass `validate`, `test` and `--dry-run`
and fail only at run time. Now `bridge validate` refuses a value whose type is known ahead
(a documented event field, `| length`, a list literal), `bridge fire --dry-run` and
`bridge test` refuse the value rendered for the event, and the worker says the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.actions import action_schemas, registry
from bridge.cli.main import main
from bridge.operate.catalogue import event_catalogue
from bridge.rules.loader import check_rules
from bridge.rules.param_types import type_words
from bridge.schema import TYPE_NAMES, Param
from bridge.templates.environment import Templates
from tests.helpers import Bridge, running_bridge, wait_for

ROOT = Path(__file__).resolve().parents[1]

LIST_INTO_ASSET_ID = (
    "asset_id expects a string or integer, but data.added_tags is a list "
    "(lytho.tag_asset{rule}); to act on each item use for_each (docs/rules.md#loops)"
)
RENDERED_LIST = (
    "asset_id expects a string or integer, but data.asset_ids is a list "
    "(lytho.tag_asset); to act on each item use for_each (docs/rules.md#loops)"
)

WRONG = """\
rules:
  - id: tag-added
    on: lytho.asset.tagged
    actions:
      - uses: lytho.tag_asset
        with: {asset_id: "{{ data.added_tags }}", tags: [reviewed]}
      - uses: slack.post
        with: {channel: "{{ data.id }}", text: "{{ data.added_tags | join(', ') }}"}
  - id: asset-created
    on: lytho.asset.created
    actions:
      - uses: slack.post
        with:
          channel: "#assets"
          text: "{{ data.metadata_values }}"
      - uses: slack.post
        with: {channel: "{{ data.tag_names | length }}", text: "{{ [data.id] }}"}
"""

VALID = """\
rules:
  - id: every-kind-of-right
    on: [lytho.asset.created, lytho.asset.updated]
    actions:
      - id: tag
        uses: lytho.tag_asset
        with: {asset_id: "{{ data.id }}", tags: "{{ data.tags | map(attribute='name') | list }}"}
      - uses: slack.post
        with:
          channel: "#assets-{{ data.id }}"
          text: "{{ data.fileSize }}"
          thread_key: "{{ data.id }}"
          unfurl_links: "{{ data.fileSize > 1000 }}"
      - uses: slack.post
        with: {channel: "#assets", text: "{{ data.tags | length }}"}
      - uses: lytics.collect
        with: {stream: assets, data: "{{ data }}"}
      - uses: lytho.add_to_collection
        with: {collection_id: 3, asset_id: "{{ steps.tag.asset_id }}"}
  - id: proof-reviewers
    on: lytho.proof.*
    actions:
      - uses: lytics.collect
        with: {stream: proofs, data: "{{ data.reviewerIds }}"}
      - uses: lytho.add_to_collection
        with: {collection_id: "{{ data.projectId }}", asset_ids: ["{{ data.assetId }}"]}
  - id: undeclared
    on: lytho.asset.tagged
    actions:
      - uses: lytho.tag_asset
        with: {asset_id: "{{ data.parent_asset }}", tags: "{{ data.whatever }}"}
  - id: generic-source
    on: shop.order.paid
    actions:
      - uses: lytho.tag_asset
        with: {asset_id: "{{ data.items }}", tags: "{{ data.total }}"}
"""

CAMPAIGN = """\
id: tag-campaign
on: shop.campaign.ready
actions:
  - id: tag
    uses: lytho.tag_asset
    with: {asset_id: "{{ data.asset_ids }}", tags: [campaign]}
"""
CAMPAIGN_EVENT = {
    "id": "c-1",
    "type": "shop.campaign.ready",
    "data": {"asset_ids": [1001, 1002]},
}


def problems(rules: Path) -> list[str]:
    checked = check_rules(
        rules,
        templates=Templates(rules.parent / "templates"),
        actions=action_schemas(),
        event_types=event_catalogue(),
    )
    return [str(p) for p in checked.errors + checked.warnings]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "rules" / "tests").mkdir(parents=True)
    (tmp_path / "templates").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRIDGE_RULES_DIR", "rules")
    monkeypatch.setenv("BRIDGE_TEMPLATES_DIR", "templates")
    return tmp_path


def test_validate_refuses_a_declared_or_evident_wrong_type_with_its_place_and_fix(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "wrong.yaml").write_text(WRONG)
    assert main(["validate"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "rules/wrong.yaml:6:26: " + LIST_INTO_ASSET_ID.format(rule=" in rule 'tag-added'"),
        "rules/wrong.yaml:8:25: channel expects a string, but data.id is a number "
        "(slack.post in rule 'tag-added'); if the value is right, make it text: "
        "{{ data.id | string }}",
        "rules/wrong.yaml:15:17: text expects a string or number, but data.metadata_values is "
        "an object (slack.post in rule 'asset-created'); use one of its fields "
        "({{ data.metadata_values.<field> }})",
        "rules/wrong.yaml:17:25: channel expects a string, but '{{ data.tag_names | length }}' "
        "is an integer (slack.post in rule 'asset-created'); if the value is right, make it "
        "text with | string",
        "rules/wrong.yaml:17:64: text expects a string or number, but '{{ [data.id] }}' is a "
        "list (slack.post in rule 'asset-created'); to act on each item use for_each "
        "(docs/rules.md#loops)",
        "5 problem(s) found",
    ]


def test_validate_refuses_a_literal_number_out_of_its_parameters_range(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The worker refuses it (a dead letter): validate says so before, at its place.
    (project / "rules" / "find.yaml").write_text(
        """\
id: find-many
on: lytho.asset.created
actions:
  - uses: lytho.find_assets
    with: {tag: spring, max_assets: 5000}
  - uses: lytho.find_assets
    with: {tag: spring, max_assets: 1000}
"""
    )
    assert main(["validate"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "rules/find.yaml:5:37: parameter 'max_assets' of lytho.find_assets in rule "
        "'find-many' is 5000; expected a number from 1 to 1000",
        "1 problem(s) found",
    ]


def test_no_false_alarm_where_the_type_fits_or_cannot_be_told(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "rules" / "valid.yaml").write_text(VALID)
    assert problems(tmp_path / "rules") == []


@pytest.mark.parametrize("folder", ["examples/rules", "rules"])
def test_the_shipped_rules_validate_clean(folder: str) -> None:
    assert problems(ROOT / folder) == []


def test_dry_run_reports_the_rendered_wrong_type(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "campaign.yaml").write_text(CAMPAIGN)
    assert main(["validate"]) == 0  # a generic source's field: its type is not known ahead
    (project / "event.json").write_text(json.dumps(CAMPAIGN_EVENT))
    capsys.readouterr()
    assert main(["fire", "event.json", "--dry-run"]) == 1
    out = capsys.readouterr().out
    # The place of the value in the rule file, as `bridge validate` names a parameter's.
    assert (
        '      → tag: lytho.tag_asset {"asset_id": [1001, 1002], "tags": ["campaign"]} '
        f"(error: rules/campaign.yaml:6:22: {RENDERED_LIST})"
    ) in out.splitlines()


def test_dry_run_does_not_judge_an_earlier_steps_placeholder(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "chain.yaml").write_text(
        CAMPAIGN.replace('"{{ data.asset_ids }}"', "1001")
        + "  - uses: lytho.add_to_collection\n"
        + '    with: {collection_id: "{{ steps.tag.tag_ids | first }}", '
        + 'asset_ids: "{{ steps.tag.tags }}"}\n'
    )
    (project / "event.json").write_text(json.dumps(CAMPAIGN_EVENT))
    assert main(["fire", "event.json", "--dry-run"]) == 0
    assert "error" not in capsys.readouterr().out


def test_bridge_test_fails_the_case_with_the_same_message(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "campaign.yaml").write_text(CAMPAIGN)
    (project / "rules" / "tests" / "campaign.test.yaml").write_text(
        "cases:\n"
        "  - name: a campaign tags its assets\n"
        f"    event: {json.dumps(CAMPAIGN_EVENT)}\n"
        "    expect: {matched: [tag-campaign]}\n"
    )
    assert main(["test"]) == 1
    out = capsys.readouterr().out
    assert (
        "      step tag of rule 'tag-campaign' renders: expected 'no error', got "
        f"{'rules/campaign.yaml:6:22: ' + RENDERED_LIST!r}"
    ) in out.splitlines()
    assert out.splitlines()[-1] == "0 passed, 1 failed"


BRANCHED = """\
rules:
  - id: other-rule
    on: shop.campaign.ready
    actions:
      - uses: lytho.tag_asset
        with: {asset_id: "{{ data.asset_ids | first }}", tags: [campaign]}
  - id: tag-campaign
    on: shop.campaign.ready
    actions:
      - choose:
          - when: "data.asset_ids | length > 1"
            steps:
              - id: tag
                uses: lytho.tag_asset
                with:
                  tags: [campaign]
                  asset_id:   "{{ data.asset_ids }}"
"""


def test_the_place_is_the_values_own_in_a_branch_and_a_block_mapping(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "campaign.yaml").write_text(BRANCHED)
    (project / "rules" / "tests" / "campaign.test.yaml").write_text(
        "cases:\n"
        "  - name: a campaign tags its assets\n"
        f"    event: {json.dumps(CAMPAIGN_EVENT)}\n"
        "    expect: {matched: [other-rule, tag-campaign]}\n"
    )
    (project / "event.json").write_text(json.dumps(CAMPAIGN_EVENT))
    assert main(["fire", "event.json", "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert f"(error: rules/campaign.yaml:17:31: {RENDERED_LIST})" in out, out
    assert main(["test"]) == 1
    out = capsys.readouterr().out
    assert f"got {'rules/campaign.yaml:17:31: ' + RENDERED_LIST!r}" in out, out


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path) as b:
        b.start_web()
        yield b


def test_at_run_time_the_step_fails_with_the_same_message(bridge: Bridge) -> None:
    bridge.write_rule("campaign.yaml", CAMPAIGN)
    bridge.start_worker()
    assert bridge.post(CAMPAIGN_EVENT).status_code == 202
    [letter] = wait_for(bridge.dead_letters, what="a dead letter")
    # Refused before the action ran: without LYTHO_API_KEY it would say that instead.
    assert (letter["event_id"], letter["step"], letter["error"]) == ("c-1", "tag", RENDERED_LIST)
    failed = bridge.trace_has("c-1", "step", step="tag", status="failed")
    assert failed is not None and failed["error"] == RENDERED_LIST


def test_every_action_parameter_has_a_known_type() -> None:
    with pytest.raises(ValueError, match=r"parameter 'x' has types \('list',\); each must be"):
        Param("x", ("list",))
    for name, action in registry().items():
        for param in action.schema.params.values():
            assert param.types, f"{name} {param.name} has no type"
            assert set(param.types) <= set(TYPE_NAMES), f"{name} {param.name}: {param.types}"


def test_docs_actions_show_each_parameters_type() -> None:
    """Each `| `param` | type … |` row of docs/actions.md names the schema's types."""
    text = (ROOT / "docs" / "actions.md").read_text(encoding="utf-8")
    sections = {
        name.strip(): chunk
        for chunk in text.split("\n## ")[1:]
        for name in chunk.partition("\n")[0].split(" / ")
    }
    for name, action in registry().items():
        section = sections.get(name)
        assert section is not None, f"docs/actions.md has no section ## {name}"
        for param in action.schema.params.values():
            rows = [line for line in section.splitlines() if line.startswith(f"| `{param.name}` |")]
            assert rows, f"docs/actions.md ## {name} has no row for {param.name}"
            shown = rows[0].split("|")[2].strip().replace("array", "list")
            assert shown.startswith(type_words(param.types)), (name, param.name, shown)


FOUND_INTO_ASSET_ID = """\
id: tag-campaign-assets
on: lytho.campaign.status_changed
actions:
  - id: find
    uses: lytho.find_assets
    with: {collection_id: "{{ data.id }}"}
  - uses: lytho.tag_asset
    with: {asset_id: "{{ steps.find.assets }}", tags: [live]}
  - id: each
    uses: lytho.tag_asset
    for_each: "{{ steps.find.assets }}"
    as: asset
    with: {asset_id: "{{ asset.id }}", tags: [live]}
  - uses: slack.post
    with: {channel: "#ops", text: "{{ steps.each.results }}"}
  - uses: slack.post
    with: {channel: "#ops", text: "{{ steps.find.count }} assets tagged"}
"""


def test_an_earlier_steps_declared_result_type_is_checked_too(tmp_path: Path) -> None:
    # The issue's own recipe: a look-up's list into asset_id is caught by `bridge validate`.
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "campaign.yaml").write_text(FOUND_INTO_ASSET_ID)
    found = problems(rules)
    assert [p.split(": ", 1)[1] for p in found] == [
        "asset_id expects a string or integer, but steps.find.assets is a list "
        "(lytho.tag_asset in rule 'tag-campaign-assets'); to act on each item use for_each "
        "(docs/rules.md#loops)",
        "text expects a string or number, but steps.each.results is a list (slack.post in "
        "rule 'tag-campaign-assets'); to act on each item use for_each (docs/rules.md#loops), "
        "or make it text: {{ steps.each.results | join(', ') }}",
    ]
    assert found[0].startswith(f"{rules / 'campaign.yaml'}:8:22: ")
