"""A list given to a parameter of a step that already loops (for_each): the fix named is
the loop's item, not "use for_each" (docs/rules.md#loops, bridge/rules/param_types.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.cli.main import main

REVIEWERS = """
id: each-reviewer
on: lytho.proof.status_changed
actions:
  - id: each
    for_each: "{{ data.reviewerIds }}"
    as: rid
    uses: lytho_workflow.get
    with: {kind: proof, id: "{{ data.reviewerIds }}"}
"""
CAMPAIGN = """
id: tag-campaign
on: shop.campaign.ready
actions:
  - id: tag
    for_each: "{{ data.asset_ids }}"
    uses: lytho.tag_asset
    with: {asset_id: "{{ data.asset_ids }}", tags: [campaign]}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "templates").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRIDGE_RULES_DIR", "rules")
    monkeypatch.setenv("BRIDGE_TEMPLATES_DIR", "templates")
    return tmp_path


def test_validate_names_the_loops_item_for_a_list_in_a_loop_step(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "r.yaml").write_text(REVIEWERS)
    assert main(["validate"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "rules/r.yaml:9:29: id expects a string or integer, but data.reviewerIds is a list "
        "(lytho_workflow.get in rule 'each-reviewer'); this step loops already: each item "
        "is `rid` here, use {{ rid }}",
        "1 problem(s) found",
    ]


def test_a_dry_run_names_the_loops_item_too(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "c.yaml").write_text(CAMPAIGN)
    assert main(["validate"]) == 0  # a generic source's field: its type is not known ahead
    event = {"id": "c-1", "type": "shop.campaign.ready", "data": {"asset_ids": [1001, 1002]}}
    (project / "event.json").write_text(json.dumps(event))
    capsys.readouterr()
    assert main(["fire", "event.json", "--dry-run"]) == 1
    out = capsys.readouterr().out
    message = (
        "asset_id expects a string or integer, but data.asset_ids is a list (lytho.tag_asset); "
        "this step loops already: each item is `item` here, use {{ item }}"
    )
    assert f"(error: rules/c.yaml:8:22: {message})" in out, out
    assert "use for_each" not in out
