"""`bridge send` and `bridge fire` take any documented event with the source the user names."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.cli.main import main
from tests.helpers import Bridge, running_bridge

ROOT = Path(__file__).resolve().parents[1]

JOB_FAILED = {
    "type": "lytics.job.failed",
    "subject": "77ab",
    "data": {"id": "77ab", "type": "export", "status": "failed", "error": "permission denied"},
    "changes": {"status": {"from": "running", "to": "failed"}},
}
# As docs/events.md shows a polled event.
DOCUMENTED = {
    "specversion": "1.0",
    "id": "evt_53cc52450aada71cef28ba9c070411cb",
    "source": "lytho",
    "type": "lytho.asset.tagged",
    "subject": "1002",
    "time": "2026-11-25T21:41:02Z",
    "data": {"id": 1002, "name": "Spring social square", "added_tags": ["hero"]},
}
RULE = """
id: lytics-jobs
on: lytics.job.failed
when:
  - {path: source, eq: lytics}
actions:
  - uses: slack.post
    with: {channel: "#ops", text: "job {{ data.id }} failed"}
"""


@pytest.fixture
def bridge(
    redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path) as b:
        b.write_rule("jobs.yaml", RULE)
        b.start_web()
        for name, value in b.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        (tmp_path / "job.json").write_text(json.dumps(JOB_FAILED))
        (tmp_path / "documented.json").write_text(json.dumps(DOCUMENTED))
        shutil.copy(
            ROOT / "examples/rules/tests/events/lytics-audience-webhook.payload.json",
            tmp_path / "audience.json",
        )
        yield b


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def sent_ids(out: str) -> list[str]:
    status, _, body = out.splitlines()[0].partition(" ")
    assert status in ("200", "202"), out
    accepted: list[str] = json.loads(body)["accepted"]
    return accepted


def first_trace_line(capsys: pytest.CaptureFixture[str], event_id: str) -> str:
    code, out, err = cli(capsys, "trace", event_id)
    assert (code, err) == (0, ""), err
    return out.splitlines()[0]


@pytest.mark.parametrize(
    ("argv", "shown", "note"),
    [
        (
            ["job.json", "--source", "lytics"],
            "lytics.job.failed  from lytics",
            "note: /hooks/lytics takes another shape; sent as CloudEvents with source 'lytics' "
            "to /hooks/cloudevents\n",
        ),
        (["job.json", "--source", "lytho"], "lytics.job.failed  from lytho", ""),
        (["job.json"], "lytics.job.failed  from demo", ""),
        (["documented.json"], "lytho.asset.tagged  from lytho", ""),
        (["documented.json", "--source", "shop"], "lytho.asset.tagged  from shop", ""),
    ],
)
def test_send_stores_the_event_with_the_source_named(
    bridge: Bridge,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    shown: str,
    note: str,
) -> None:
    code, out, err = cli(capsys, "send", *argv, "--url", bridge.web_url)
    assert (code, err) == (0, note), out
    [event_id] = sent_ids(out)
    assert out.splitlines()[1] == f"see: bridge trace {event_id}"
    assert first_trace_line(capsys, event_id).startswith(f"event {event_id}  {shown}  at ")


def test_send_a_lytics_audience_webhook_as_lytics_sends_it(
    bridge: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "send", "audience.json", "--url", bridge.web_url)
    assert (code, err) == (0, "")
    entered, exited = sent_ids(out)
    assert first_trace_line(capsys, entered).startswith(
        f"event {entered}  lytics.segment.entered  from lytics"
    )
    assert first_trace_line(capsys, exited).startswith(
        f"event {exited}  lytics.segment.exited  from lytics"
    )


def test_fire_takes_the_source_named(bridge: Bridge, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "fire", "--dry-run", "job.json", "--source", "lytics")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("(lytics.job.failed): 1 of 1 candidate rules match")
    assert "    ✓ source eq 'lytics' (actual 'lytics')" in lines
    code, out, _ = cli(capsys, "fire", "--dry-run", "job.json")
    assert "    ✗ source eq 'lytics' (actual 'cli': not equal)" in out.splitlines()

    code, out, _ = cli(capsys, "fire", "job.json", "--source", "lytics")
    assert code == 0
    event_id = out.split(" ")[0]
    assert out == f"{event_id} (lytics.job.failed): enqueued; see: bridge trace {event_id}\n"
    assert first_trace_line(capsys, event_id).startswith(
        f"event {event_id}  lytics.job.failed  from lytics"
    )


def test_fire_names_the_id_an_event_is_stored_under(
    bridge: Bridge, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An id another source owns is stored under another one: fire prints that one."""
    (tmp_path / "first.json").write_text(json.dumps({**JOB_FAILED, "id": "shared-7"}))
    code, out, _ = cli(capsys, "fire", "first.json", "--source", "lytho")
    assert (code, out) == (
        0,
        "shared-7 (lytics.job.failed): enqueued; see: bridge trace shared-7\n",
    )
    code, out, _ = cli(capsys, "fire", "first.json", "--source", "lytics")
    assert code == 0
    stored = out.split(" ")[0]
    assert stored != "shared-7"
    assert out == f"{stored} (lytics.job.failed): enqueued; see: bridge trace {stored}\n"
    assert first_trace_line(capsys, stored).startswith(
        f"event {stored}  lytics.job.failed  from lytics"
    )
    assert first_trace_line(capsys, "shared-7").startswith(
        "event shared-7  lytics.job.failed  from lytho"
    )
