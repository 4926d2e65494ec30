"""The rule tools on the command line: bridge validate, bridge test, bridge fire."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from bridge.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "rules" / "tests").mkdir(parents=True)
    (tmp_path / "templates").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRIDGE_RULES_DIR", "rules")
    monkeypatch.setenv("BRIDGE_TEMPLATES_DIR", "templates")
    return tmp_path


GOOD = """
id: big-order
on: shop.order.paid
when:
  - {path: data.total, gt: 1000}
actions:
  - id: tell
    uses: slack.post
    with: {channel: "#sales", text: "Order {{ data.id }}: {{ data.total }} EUR"}
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_the_shipped_examples(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run(capsys, "validate")
    assert code == 0
    assert out.startswith("ok: ")


def test_validate_reports_every_problem_with_its_place(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "bad.yaml").write_text(
        "id: bad\non: shop.order.paid\nwhen:\n  - {path: data.total, equals: 3}\n"
        "actions:\n  - uses: slack.pots\n    with: {channel: '#x', text: hi}\n"
    )
    code, out, err = run(capsys, "validate")
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("rules/bad.yaml:4:")
    assert "unknown operator 'equals'" in lines[0] and "did you mean" in lines[0].lower()
    assert lines[1].startswith("rules/bad.yaml:6:")
    assert "slack.pots" in lines[1] and "slack.post" in lines[1]
    assert lines[-1] == "2 problem(s) found"


def test_bridge_test_passes_and_fails_with_expected_and_actual(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "orders.yaml").write_text(GOOD)
    (project / "rules" / "tests" / "orders.test.yaml").write_text(
        """
cases:
  - name: a big order is announced
    event: {type: shop.order.paid, data: {id: 7, total: 1500}}
    expect:
      matched: [big-order]
      actions:
        - {uses: slack.post, with: {text: "Order 7: 1500 EUR"}}
  - name: a small order is announced too (wrong on purpose)
    event: {type: shop.order.paid, data: {id: 8, total: 20}}
    expect:
      matched: [big-order]
"""
    )
    code, out, _ = run(capsys, "test")
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "ok    rules/tests/orders.test.yaml:3: a big order is announced"
    assert lines[1].startswith("FAIL  rules/tests/orders.test.yaml:9: a small order")
    assert "data.total gt 1000 (actual 20" in out
    assert lines[-1] == "1 passed, 1 failed"


def test_fire_dry_run_explains_and_renders(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "orders.yaml").write_text(GOOD)
    event = project / "order.json"
    event.write_text(
        json.dumps({"id": "o-1", "type": "shop.order.paid", "data": {"id": 7, "total": 1500}})
    )
    code, out, _ = run(capsys, "fire", "--dry-run", str(event))
    assert code == 0
    assert out.splitlines() == [
        "event o-1 (shop.order.paid): 1 of 1 candidate rules match",
        "  ✓ big-order (rules/orders.yaml:2)",
        "    ✓ data.total gt 1000 (actual 1500)",
        '      → tell: slack.post {"channel": "#sales", "text": "Order 7: 1500 EUR"}',
    ]
    event.write_text(json.dumps({"type": "shop.order.paid", "data": {"id": 8, "total": 5}}))
    code, out, _ = run(capsys, "fire", "--dry-run", str(event))
    assert "    ✗ data.total gt 1000 (actual 5" in out


def test_fire_enqueues_like_a_webhook(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    key_prefix: str,
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("BRIDGE_KEY_PREFIX", key_prefix)
    (project / "rules" / "orders.yaml").write_text(GOOD)
    event = project / "order.json"
    event.write_text(json.dumps({"id": "o-2", "type": "shop.order.paid", "data": {"total": 2}}))
    code, out, _ = run(capsys, "fire", str(event))
    assert (code, out) == (0, "o-2 (shop.order.paid): enqueued; see: bridge trace o-2\n")
    client = redis.Redis.from_url(redis_url)
    assert client.zcard(f"{key_prefix}queue") == 1
    code, out, _ = run(capsys, "fire", str(event))
    assert out == "o-2 (shop.order.paid): duplicate, not enqueued; see: bridge trace o-2\n"
    client.close()


def test_expecting_no_actions_fails_when_one_runs(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "rules" / "orders.yaml").write_text(GOOD)
    (project / "rules" / "tests" / "orders.test.yaml").write_text(
        """
cases:
  - name: nothing happens (wrong on purpose)
    event: {type: shop.order.paid, data: {id: 7, total: 1500}}
    expect: {actions: []}
"""
    )
    code, out, _ = run(capsys, "test")
    assert code == 1
    assert "expect.actions" in out and "`actions: []` means no action runs" in out
