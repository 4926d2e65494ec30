"""Small things a new user met (review R3): the hot-reload error is one log record per
problem, so a text log shows each on its own line (no literal '\\n'); docs/rules.md's
Slack link example renders as it says (S1)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from bridge.actions import action_schemas
from bridge.cli.main import main
from bridge.rules.live import LiveRules

GOOD = """\
id: demo
on: shop.order.paid
actions:
  - uses: slack.post
    with: {channel: "#x", text: hi}
"""


def test_a_broken_reload_logs_each_problem_as_its_own_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "demo.yaml").write_text(GOOD)
    live = LiveRules(Path("rules"), Path("templates"), actions=action_schemas())
    assert live.load()
    (tmp_path / "rules" / "demo.yaml").write_text(GOOD.replace("slack.post", "slack.pots"))
    (tmp_path / "rules" / "b.yaml").write_text("id: b\non: x\npriority: high\n")
    with caplog.at_level(logging.ERROR, logger="bridge.rules.live"):
        assert not live.load()
    assert [r.getMessage() for r in caplog.records] == [
        "rule set in rules is invalid (2 problem(s)); keeping the last good set:",
        "rules/b.yaml:3:11: 'priority' in rule 'b' must be an integer, not string 'high'",
        live.problems[1],
    ]
    assert live.problems[1].startswith("rules/demo.yaml:4:11: unknown action 'slack.pots'")


DOCS = Path(__file__).resolve().parents[1] / "docs" / "rules.md"


def test_the_docs_slack_link_example_renders_as_its_comment_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = DOCS.read_text()
    block = text[text.index("So write a link's") :]
    step = re.findall(r"```yaml\n(.*?)```", block, re.S)[0]
    said = re.search(r"# → (.*?)  \(Slack", step)
    assert said is not None
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRIDGE_RULES_DIR", "rules")
    monkeypatch.setenv("BRIDGE_TEMPLATES_DIR", "templates")
    (tmp_path / "rules").mkdir()
    indented = "\n".join("  " + line for line in step.splitlines())
    (tmp_path / "rules" / "link.yaml").write_text(
        f"id: link\non: demo.approved\nactions:\n{indented}\n"
    )
    data = {"name": "Hero & <b>", "url": "https://x.example/p?a=1&b=2"}
    (tmp_path / "e.json").write_text(json.dumps({"type": "demo.approved", "data": data}))
    assert main(["fire", "--dry-run", "e.json"]) == 0
    shown = json.dumps({"channel": "#creative", "text": said.group(1)}, ensure_ascii=False)
    assert capsys.readouterr().out.splitlines()[-1] == f"      → step0: slack.post {shown}"
    assert said.group(1) == "Approved: <https://x.example/p?a=1&amp;b=2|Hero &amp; &lt;b&gt;>"


def test_the_steps_table_names_every_action() -> None:
    """docs/rules.md's Steps table lists every action `uses` can name (S6)."""
    row = next(line for line in DOCS.read_text().splitlines() if line.startswith("| `uses` |"))
    assert sorted(re.findall(r"`([a-z_]+\.[a-z_]+)`", row)) == sorted(action_schemas())
