"""What a newcomer finds after `git clone`: one rule in `rules/` (the README's), and the
runnable examples out of its way in `examples/`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bridge.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def readme_rules() -> list[str]:
    """The YAML blocks of the README's "A first rule" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## A first rule") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```yaml\n(.*?)```", section, re.S)


def test_rules_holds_one_rule_the_readmes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    rule_files = sorted(
        p.relative_to(ROOT / "rules").as_posix()
        for p in (ROOT / "rules").rglob("*.yaml")
        if "tests" not in p.parts and not p.name.endswith(".test.yaml")
    )
    assert rule_files == ["proof-approved.yaml"]
    first = readme_rules()[0]
    assert (ROOT / "rules" / "proof-approved.yaml").read_text() == first
    loaded = yaml.safe_load(first)
    assert loaded["description"] == "Tell #creative when a proof is approved"


def test_every_rule_in_the_readme_loads_with_its_description_whole(tmp_path: Path) -> None:
    for block in readme_rules():
        rule = yaml.safe_load(block)
        assert rule["description"].startswith("Tell #"), rule["description"]
        assert rule["actions"][0]["with"]["channel"].startswith("#")


@pytest.mark.parametrize(
    ("argv", "first_line"),
    [
        (["validate"], "ok: 1 rule(s) in rules, templates in templates"),
        (["test"], "ok    rules/tests/proof-approved.test.yaml:3: "),
        (
            ["validate", "examples/rules"],
            "ok: 6 rule(s) in examples/rules, templates in examples/templates",
        ),
        (["test", "examples/rules"], "ok    examples/rules/tests/asset-campaign-tag.test.yaml:3:"),
    ],
)
def test_the_shipped_rules_and_examples_validate_and_pass_their_tests(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    first_line: str,
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("BRIDGE_RULES_DIR", raising=False)
    monkeypatch.delenv("BRIDGE_TEMPLATES_DIR", raising=False)
    code = main(argv)
    out, _ = capsys.readouterr()
    assert code == 0, out
    assert out.splitlines()[0].startswith(first_line)
    if argv[0] == "test":
        assert re.fullmatch(r"\d+ passed, 0 failed", out.splitlines()[-1])


def test_the_examples_folder_is_a_project_of_its_own(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT / "examples")
    monkeypatch.delenv("BRIDGE_RULES_DIR", raising=False)
    monkeypatch.delenv("BRIDGE_TEMPLATES_DIR", raising=False)
    assert main(["test"]) == 0
    assert re.fullmatch(r"\d+ passed, 0 failed", capsys.readouterr().out.splitlines()[-1])
