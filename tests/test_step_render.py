"""A step renders in one place: the worker, `bridge test` and `bridge fire --dry-run` agree."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.cli.main import main
from tests.helpers import Bridge, running_bridge, wait_for

RULE = """
id: proof-approved
on: lytho.proof.status_changed
actions:
  - id: notify
    uses: slack.post
    with:
      channel: "#creative"
      text: "Proof {{ data.name }} approved by {{ data.by }}"
      template: "{{ data.kind }}"
"""

TEMPLATE = (
    '{"blocks": [{"type": "section", '
    '"text": {"type": "mrkdwn", "text": "*{{ data.name }}* is {{ data.status }}"}}]}\n'
)

# Event data that must be escaped for Slack: a mention and an ampersand.
DATA = {
    "status": "approved",
    "name": "<!channel> Spring & Summer",
    "by": "Ana <ana@example.com>",
    "kind": "proof.json.j2",
}


@pytest.fixture
def bridge(
    redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path) as b:
        b.write_rule("proof.yaml", RULE)
        b.write_template("proof.json.j2", TEMPLATE)
        (b.rules_dir / "tests").mkdir()
        # `bridge test` and `bridge fire` read the same rules and templates as the worker.
        monkeypatch.setenv("BRIDGE_RULES_DIR", str(b.rules_dir))
        monkeypatch.setenv("BRIDGE_TEMPLATES_DIR", str(b.templates_dir))
        monkeypatch.chdir(tmp_path)
        b.start_slack()
        b.start_web()
        b.start_worker()
        yield b


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def fire_dry_run(
    bridge: Bridge, capsys: pytest.CaptureFixture[str], data: dict[str, Any]
) -> tuple[int, list[str]]:
    event = bridge.tmp / "event.json"
    event.write_text(json.dumps({"type": "lytho.proof.status_changed", "data": data}))
    code, out = run_cli(capsys, "fire", "--dry-run", str(event))
    return code, out.splitlines()


def write_rule_test(bridge: Bridge, data: dict[str, Any], expect: dict[str, Any]) -> None:
    case = {"name": "the approval", "event": {"type": "lytho.proof.status_changed", "data": data}}
    text = json.dumps({"cases": [case | {"expect": expect}]})
    (bridge.rules_dir / "tests" / "proof.test.yaml").write_text(text)


def test_worker_rule_test_and_dry_run_render_a_step_alike(
    bridge: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bridge.post({"id": "p-1", "type": "lytho.proof.status_changed", "data": DATA}).is_success
    step = wait_for(lambda: bridge.trace_has("p-1", "step", step="notify", status="succeeded"))
    [message] = bridge.slack.received("#creative")
    sent = step["params"]
    assert sent == {
        "channel": "#creative",
        "text": (
            "Proof &lt;!channel&gt; Spring &amp; Summer approved by Ana &lt;ana@example.com&gt;"
        ),
        "template": "proof.json.j2",
    }
    assert message["text"] == sent["text"]
    blocks = message["blocks"]
    assert blocks[0]["text"]["text"] == "*&lt;!channel&gt; Spring &amp; Summer* is approved"

    # fire --dry-run prints the very parameters, then the template file's output.
    code, lines = fire_dry_run(bridge, capsys, DATA)
    assert code == 0
    arrow = "      → notify: slack.post "
    [shown] = [line for line in lines if line.startswith(arrow)]
    assert json.loads(shown.removeprefix(arrow)) == sent
    output = "\n".join(lines[lines.index(shown) + 1 :])
    assert json.loads(output) == {"blocks": blocks}

    # A rule test expecting exactly what the worker sent passes.
    write_rule_test(
        bridge,
        DATA,
        {
            "matched": ["proof-approved"],
            "actions": [{"uses": "slack.post", "with": sent, "rendered": {"blocks": blocks}}],
        },
    )
    code, out = run_cli(capsys, "test")
    assert (code, out.splitlines()[-1]) == (0, "1 passed, 0 failed"), out


def test_a_template_name_the_worker_refuses_fails_the_rule_test_and_the_dry_run(
    bridge: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    data = DATA | {"kind": "proof.json"}  # not a *.j2 file
    refused = (
        f"template name 'proof.json' is not allowed; expected a *.j2 file inside "
        f"{bridge.templates_dir}"
    )
    assert bridge.post({"id": "p-2", "type": "lytho.proof.status_changed", "data": data}).is_success
    [letter] = wait_for(bridge.dead_letters, what="a dead letter")
    assert (letter["step"], letter["error"]) == ("notify", refused)
    assert bridge.slack.received() == []

    code, lines = fire_dry_run(bridge, capsys, data)
    assert code == 1
    assert f"      → notify: slack.post {{}} (error: {refused})" in lines

    # Before steps rendered in one place, rule tests skipped names without `.j2` and passed.
    write_rule_test(bridge, data, {"matched": ["proof-approved"]})
    code, out = run_cli(capsys, "test")
    assert code == 1
    assert out.splitlines()[1:] == [
        f"      step notify of rule 'proof-approved' renders: expected 'no error', got {refused!r}",
        "0 passed, 1 failed",
    ]
