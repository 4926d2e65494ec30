"""Hostile or careless rule files: deep nesting, links out of the rules folder, and a
reload state that never says "ok" when the last load failed (issue 12, items 9 and 10)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.actions import action_schemas
from bridge.cli.main import main
from bridge.operate.catalogue import event_catalogue
from bridge.rules.live import LiveRules
from bridge.rules.loader import check_rules
from bridge.templates.environment import Templates

GOOD = """\
id: {id}
on: shop.order.paid
actions:
  - uses: slack.post
    with: {{channel: "#sales", text: "order {{{{ data.id }}}}"}}
"""

# 600 levels of nesting under one parameter: the composer used to recurse until it hit
# Python's limit and the process raised RecursionError.
DEEP = (
    "id: deep\non: shop.order.paid\nactions:\n  - uses: lytics.collect\n"
    "    with:\n      stream: s\n      data: " + "[" * 600 + "1" + "]" * 600 + "\n"
)
DEEP_PROBLEM = (
    "rules/deep.yaml:7:73: invalid YAML: values are nested more than 64 levels deep; "
    "a rule needs only a few levels: flatten this part of the file"
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "templates").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRIDGE_RULES_DIR", "rules")
    monkeypatch.setenv("BRIDGE_TEMPLATES_DIR", "templates")
    return tmp_path


def validate(capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["validate"])
    out, err = capsys.readouterr()
    return code, [line for line in (out + err).splitlines() if line]


# --- deep nesting ----------------------------------------------------------------------


def test_a_deeply_nested_file_is_a_file_line_error_not_a_crash(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "deep.yaml").write_text(DEEP)
    (project / "rules" / "good.yaml").write_text(GOOD.format(id="good"))
    code, lines = validate(capsys)
    assert code == 1
    assert lines == [DEEP_PROBLEM, "1 problem(s) found"]


def test_deep_nesting_through_aliases_is_bounded_too(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 400))
    (project / "rules" / "aliases.yaml").write_text("a0: &a0 [1]\n" + chain)
    code, lines = validate(capsys)
    assert code == 1
    assert lines == [
        "rules/aliases.yaml:1:10: invalid YAML: values are nested more than 64 levels deep "
        "(through aliases); a rule needs only a few levels: flatten this part",
        "1 problem(s) found",
    ]


def test_reload_state_is_honest_and_a_later_fix_is_picked_up(project: Path) -> None:
    live = LiveRules(
        Path("rules"), Path("templates"), actions=action_schemas(), event_types=event_catalogue()
    )
    (project / "rules" / "first.yaml").write_text(GOOD.format(id="first"))
    assert live.load()
    assert [r.id for r in live.current.rules] == ["first"]  # type: ignore[union-attr]

    (project / "rules" / "deep.yaml").write_text(DEEP)
    assert live.reload_if_changed() is False
    assert live.problems == [DEEP_PROBLEM]  # /readyz, the metric and the dashboard read this
    assert [r.id for r in live.current.rules] == ["first"]  # type: ignore[union-attr]

    # Another valid rule alone does not hide the broken file: the set stays refused.
    (project / "rules" / "second.yaml").write_text(GOOD.format(id="second"))
    assert live.reload_if_changed() is False
    assert live.problems == [DEEP_PROBLEM]

    (project / "rules" / "deep.yaml").unlink()
    assert live.reload_if_changed() is True
    assert live.problems == []
    assert sorted(r.id for r in live.current.rules) == ["first", "second"]  # type: ignore[union-attr]


def test_any_failure_while_loading_is_recorded_not_swallowed(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = LiveRules(
        Path("rules"), Path("templates"), actions=action_schemas(), event_types=event_catalogue()
    )
    (project / "rules" / "first.yaml").write_text(GOOD.format(id="first"))
    assert live.load()

    def broken(*args: object, **kwargs: object) -> None:
        raise MemoryError("no room")

    monkeypatch.setattr("bridge.rules.live.check_rules", broken)
    (project / "rules" / "second.yaml").write_text(GOOD.format(id="second"))
    assert live.reload_if_changed() is False
    assert live.problems == [
        "rules: the rules could not be loaded (MemoryError); the log has the details"
    ]
    assert [r.id for r in live.current.rules] == ["first"]  # type: ignore[union-attr]

    monkeypatch.undo()
    os.utime(project / "rules" / "second.yaml", ns=(1, 1))  # a change the next look sees
    assert live.reload_if_changed() is True
    assert live.problems == []


# --- links out of the rules directory --------------------------------------------------


SECRET_RULE = """\
id: elsewhere
on: shop.order.paid
descripton: xoxb-not-for-your-eyes
actions: []
"""


def test_a_rule_file_linked_from_outside_is_refused_without_its_content(
    project: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret.yaml"
    outside.write_text(SECRET_RULE)
    (project / "rules" / "linked.yaml").symlink_to(outside)
    (project / "rules" / "good.yaml").write_text(GOOD.format(id="good"))
    code, lines = validate(capsys)
    assert code == 1
    assert lines == [
        "rules/linked.yaml:1:1: refused: this file is a link that leads outside the rules "
        "directory; put the rule file itself inside it",
        "1 problem(s) found",
    ]
    text = "\n".join(lines)
    assert "xoxb" not in text and str(outside.parent) not in text


def test_a_folder_linked_from_outside_is_refused_and_not_read(
    project: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.yaml").write_text(SECRET_RULE)
    (project / "rules" / "shared").symlink_to(outside, target_is_directory=True)
    code, lines = validate(capsys)
    assert code == 1
    assert lines == [
        "rules/shared:1:1: refused: this folder is a link that leads outside the rules "
        "directory; put the rule files themselves inside it",
        "1 problem(s) found",
    ]


def test_links_inside_the_rules_directory_are_read_once(project: Path) -> None:
    (project / "rules" / "team").mkdir()
    (project / "rules" / "team" / "a.yaml").write_text(GOOD.format(id="a"))
    (project / "rules" / "alias.yaml").symlink_to(project / "rules" / "team" / "a.yaml")
    (project / "rules" / "again").symlink_to(project / "rules" / "team")
    checked = check_rules(Path("rules"), templates=Templates(), actions=action_schemas())
    assert checked.errors == []
    assert checked.ruleset is not None
    assert [(r.id, r.file) for r in checked.ruleset.rules] == [("a", "rules/team/a.yaml")]
