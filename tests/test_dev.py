"""`bridge dev`, the first run: its own Redis with data in `.bridge/`, the sandboxes, and the
commands beside it that find it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from bridge.cli import dev
from bridge.cli.redis_server import redis_answers
from bridge.sandbox.server import free_port
from bridge.settings import Settings
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]


def project(tmp_path: Path) -> Path:
    """A project folder as a newcomer has it after `git clone`: rules, templates, examples."""
    folder = tmp_path / "project"
    folder.mkdir()
    for name in ("rules", "templates", "examples"):
        shutil.copytree(ROOT / name, folder / name)
    return folder


def test_dev_services_run_their_own_redis_with_its_data_kept_in_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    # Even where a Redis answers on localhost:6379 (as on this machine, or not), dev never
    # takes it: without REDIS_URL it runs its own.
    with dev.dev_services(Settings.from_env({})) as settings:
        assert settings.redis_url.startswith("redis://127.0.0.1:")
        port = int(settings.redis_url.rsplit(":", 1)[1].split("/")[0])
        assert port != 6379
        client = redis.Redis.from_url(settings.redis_url)
        assert client.config_get("dir")["dir"] == str(tmp_path / ".bridge" / "redis")
        client.set("kept", "yes")
        client.close()
        assert settings.slack_bot_token is not None
        answer = httpx.post(
            f"{settings.slack_api_url}auth.test",
            headers={"authorization": f"Bearer {settings.slack_bot_token.get()}"},
        )
        assert answer.json()["ok"] is True
        # Without credentials, the Lytho and Lytics sandboxes answer in their place.
        assert settings.lytho_api_key is not None and settings.lytics_api_token is not None
        assets = httpx.get(
            f"{settings.lytho_api_url}assets", headers={"x-api-key": settings.lytho_api_key.get()}
        )
        assert assets.status_code == 200 and assets.json()["content"]
        segments = httpx.get(
            f"{settings.lytics_api_url}/api/segment",
            headers={"authorization": settings.lytics_api_token.get()},
        )
        assert segments.status_code == 200 and segments.json()["data"]
        assert settings.lytho_token_url is not None and settings.lytho_token_url.endswith(
            "/oauth/token"
        )
    # Everything is gone with the block, but the data stays in the folder for the next run.
    assert not redis_answers("127.0.0.1", port)
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        f"[dev] Redis: its own redis-server on 127.0.0.1:{port}, data in .bridge/redis/ "
        "(kept between runs; bridge dev --reset starts clean)"
    )
    assert (tmp_path / ".bridge" / ".gitignore").read_text().endswith("\n*\n")
    with dev.dev_services(Settings.from_env({})) as settings:
        client = redis.Redis.from_url(settings.redis_url)
        assert client.get("kept") == b"yes"
        client.close()
    assert "kept between runs, 1 key from earlier runs;" in capsys.readouterr().out


def test_dev_uses_redis_url_when_set(
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    with dev.dev_services(Settings.from_env({"REDIS_URL": redis_url})) as settings:
        assert settings.redis_url == redis_url
    assert capsys.readouterr().out.splitlines()[0] == (f"[dev] Redis: {redis_url} (REDIS_URL)")
    assert not (tmp_path / ".bridge").exists()


def dev_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **extra}
    for name in (
        "REDIS_URL",
        "BRIDGE_KEY_PREFIX",
        "BRIDGE_QUEUE_NAME",
        "SLACK_BOT_TOKEN",
        "BRIDGE_WEBHOOK_SECRET",
        "BRIDGE_ADMIN_TOKEN",
        "HOST",
        "BRIDGE_RULES_DIR",
        "BRIDGE_TEMPLATES_DIR",
    ):
        if name not in extra:
            env.pop(name, None)
    return env


def bridge(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def slack_lines(output: Path) -> list[str]:
    return [x for x in output.read_text().splitlines() if x.startswith(("[slack sandbox]", "  │"))]


@pytest.mark.slow
def test_bridge_dev_with_redis_url_and_its_commands_beside_it(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """With REDIS_URL and a key prefix set for dev only, send and trace still find it all."""
    folder = project(tmp_path)
    port = free_port()
    env = dev_env(REDIS_URL=redis_url, BRIDGE_KEY_PREFIX=key_prefix)
    output = tmp_path / "dev.out"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "dev", "--port", str(port)],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    beside = dev_env()  # nothing set by hand
    try:
        wait_for(lambda: "listening on" in output.read_text(), what="bridge dev to start")
        state = folder / ".bridge" / "dev.json"
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        sent = bridge(folder, beside, "send", "examples/events/proof-approved.json")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert sent.stdout.startswith('202 {"accepted":["msg_')
        event_id = json.loads(sent.stdout.splitlines()[0][4:])["accepted"][0]
        assert sent.stdout.splitlines()[1] == f"see: bridge trace {event_id}"
        lines = wait_for(lambda: len(slack_lines(output)) >= 4 and slack_lines(output))
        assert lines == [
            "[slack sandbox] #creative: Proof approved: Spring campaign hero banner",
            "  │ *Proof approved* :white_check_mark:",
            "  │ *Spring campaign hero banner* approved by Ana Lopez",
            f"  │ Lytho proof 4711 · event {event_id}",
        ]
        wait_for(lambda: "succeeded" in bridge(folder, beside, "trace", event_id).stdout)
        traced = bridge(folder, beside, "trace", event_id)
        assert traced.returncode == 0 and traced.stderr == ""
        assert traced.stdout.startswith(f"event {event_id}  lytho.proof.status_changed  from demo")
        # The dashboard works at once, with the token printed for this run.
        [dashboard] = [x for x in output.read_text().splitlines() if "[dev] dashboard:" in x]
        token = dashboard.rsplit(" ", 1)[1]
        assert token.startswith("dev-")
        rules = httpx.get(
            f"http://127.0.0.1:{port}/api/rules", headers={"authorization": f"Bearer {token}"}
        )
        assert rules.status_code == 200
        assert "proof-approved-to-slack" in rules.text
    finally:
        process.terminate()
        assert process.wait(30) == 0
    assert output.read_text().splitlines()[-1] == "[dev] stopped"
    assert not (folder / ".bridge" / "dev.json").exists()


# Run inside a network namespace of its own, where nothing answers on 127.0.0.1:6379: dev and
# the commands beside it, with nothing set by hand. Prints what each command printed as JSON.
DRIVER = r"""
import json, os, socket, subprocess, sys, time
from pathlib import Path
from tests.helpers import wait_for

port, out = sys.argv[1], Path(sys.argv[2])
def bridge(*args):
    done = subprocess.run([sys.executable, "-m", "bridge.cli", *args], capture_output=True,
                          text=True, timeout=60)
    return {"code": done.returncode, "out": done.stdout, "err": done.stderr}
def slack():
    return [x for x in out.read_text().splitlines() if x.startswith("[slack sandbox]")]

results = {}
probe = socket.socket()
try:
    probe.connect(("127.0.0.1", 6379))
    results["6379"] = "answers"
except OSError as exc:
    results["6379"] = exc.strerror
finally:
    probe.close()
results["trace_without_dev"] = bridge("trace", "nothing")
with out.open("wb") as log:
    dev = subprocess.Popen([sys.executable, "-m", "bridge.cli", "dev", "--port", port],
                           stdout=log, stderr=subprocess.STDOUT)
try:
    wait_for(lambda: "listening on" in out.read_text(), what="bridge dev", timeout=60)
    results["state"] = json.loads(Path(".bridge/dev.json").read_text())
    results["second_dev"] = bridge("dev", "--port", "0")
    results["send"] = bridge("send", "examples/events/proof-approved.json")
    wait_for(lambda: slack(), what="the first Slack message", timeout=60)
    event_id = json.loads(results["send"]["out"].splitlines()[0][4:])["accepted"][0]
    wait_for(lambda: "run proof-approved-to-slack" in bridge("trace", event_id)["out"])
    results["trace"] = bridge("trace", event_id)
    results["dlq"] = bridge("dlq", "list")
    results["send_lytics"] = bridge("send", "--source", "lytics", "job-failed.json")
    results["fire"] = bridge("fire", "tagged.json", "--source", "lytho")
    wait_for(lambda: len(slack()) >= 3, what="three Slack messages", timeout=60)
    lytics_id = json.loads(results["send_lytics"]["out"].splitlines()[0][4:])["accepted"][0]
    wait_for(lambda: "succeeded" in bridge("trace", lytics_id)["out"])
    results["trace_lytics"] = bridge("trace", lytics_id)
finally:
    dev.terminate()
    results["dev_code"] = dev.wait(30)
results["slack"] = slack()
results["state_after"] = Path(".bridge/dev.json").exists()
print(json.dumps(results))
"""

JOB_FAILED = {
    "type": "lytics.job.failed",
    "subject": "77ab",
    "data": {"id": "77ab", "type": "export", "status": "failed", "error": "permission denied"},
    "changes": {"status": {"from": "running", "to": "failed"}},
}
RULES = """
id: job-failed-to-data-alerts
on: lytics.job.failed
when:
  - {path: source, eq: lytics}
actions:
  - uses: slack.post
    with: {channel: "#data-alerts", text: "Lytics {{ data.type }} job failed: {{ data.error }}"}
---
id: tagged-to-dam-ops
on: lytho.asset.tagged
actions:
  - uses: slack.post
    with: {channel: "#dam-ops", text: "{{ data.name }} tagged {{ data.added_tags | join(', ') }}"}
"""


def network_namespace() -> list[str] | None:
    """A command prefix that runs in a network namespace of its own with `lo` up, if possible."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        return None
    probe = subprocess.run(
        ["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=10
    )
    if probe.returncode != 0:
        return None
    return ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_commands_beside_bridge_dev_find_it_where_nothing_answers_on_6379(
    tmp_path: Path,
) -> None:
    folder = project(tmp_path)
    (folder / "rules" / "mine.yaml").write_text(RULES.split("---")[0])
    (folder / "rules" / "dam-ops.yaml").write_text(RULES.split("---")[1])
    (folder / "job-failed.json").write_text(json.dumps(JOB_FAILED))
    tagged = {"type": "lytho.asset.tagged", "data": {"name": "Hero", "added_tags": ["spring"]}}
    (folder / "tagged.json").write_text(json.dumps(tagged))
    prefix = network_namespace()
    isolated = prefix is not None
    run = subprocess.run(
        [
            *(prefix or []),
            sys.executable,
            "-c",
            DRIVER,
            str(free_port()),
            str(tmp_path / "dev.out"),
        ],
        cwd=folder,
        env=dev_env(),
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert run.returncode == 0, run.stderr + (tmp_path / "dev.out").read_text()
    results = json.loads(run.stdout.splitlines()[-1])
    if isolated:
        assert results["6379"] == "Connection refused"
        # Without bridge dev, a command says where it looked and what to do: no traceback.
        assert results["trace_without_dev"] == {
            "code": 1,
            "out": "",
            "err": "bridge trace: cannot reach Redis at localhost:6379 (connection refused)\n"
            "start `bridge dev` in this folder (its commands find it), or set REDIS_URL to "
            "the bridge's Redis\n",
        }
    state = results["state"]
    # The commands used dev's own Redis, never one on 6379.
    assert state["env"]["REDIS_URL"].startswith("redis://127.0.0.1:")
    assert ":6379/" not in state["env"]["REDIS_URL"]
    assert state["env"]["BRIDGE_ADMIN_TOKEN"].startswith("dev-")
    assert results["second_dev"]["code"] == 1
    assert results["second_dev"]["err"] == (
        f"bridge dev is already running in this folder (pid {state['pid']}, "
        f"{state['url']}); stop it first (Ctrl-C in its terminal), or use its commands beside it\n"
    )
    assert results["send"]["code"] == 0 and results["send"]["err"] == ""
    trace = results["trace"]
    assert trace["code"] == 0 and trace["err"] == ""
    assert "run proof-approved-to-slack  succeeded" in trace["out"]
    assert results["dlq"] == {"code": 0, "out": "no dead letters\n", "err": ""}
    assert results["send_lytics"]["code"] == 0
    assert results["send_lytics"]["err"] == (
        "note: /hooks/lytics takes another shape; sent as CloudEvents with source 'lytics' "
        "to /hooks/cloudevents\n"
    )
    assert results["trace_lytics"]["out"].startswith(
        f"event {json.loads(results['send_lytics']['out'].splitlines()[0][4:])['accepted'][0]}"
        "  lytics.job.failed  from lytics"
    )
    assert results["fire"]["code"] == 0
    assert results["fire"]["out"].endswith(
        "(lytho.asset.tagged): enqueued; see: bridge trace "
        + results["fire"]["out"].split(" ")[0]
        + "\n"
    )
    # Every channel exists in dev: the newcomer's own channels are created on first post.
    assert sorted(results["slack"]) == sorted(
        [
            "[slack sandbox] #creative: Proof approved: Spring campaign hero banner",
            "[slack sandbox] #data-alerts created on its first post (in dev every channel "
            "exists; in Slack, invite the bot to it)",
            "[slack sandbox] #data-alerts: Lytics export job failed: permission denied",
            "[slack sandbox] #dam-ops created on its first post (in dev every channel "
            "exists; in Slack, invite the bot to it)",
            "[slack sandbox] #dam-ops: Hero tagged spring",
        ]
    )
    assert results["dev_code"] == 0
    assert results["state_after"] is False


def test_dev_says_when_its_lytho_sandboxes_speak_an_override_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lytho.yaml").write_text("dam:\n  pages: {first_page: 1}\n")
    env = {"BRIDGE_LYTHO_PROFILE": "lytho.yaml"}
    with dev.dev_services(Settings.from_env(env)) as settings:
        assert settings.lytho_api_key is not None
        # The sandbox does speak it: its pages count from 1.
        first = httpx.get(
            f"{settings.lytho_api_url}assets",
            params={"page": 1, "size": 1},
            headers={"x-api-key": settings.lytho_api_key.get()},
        )
        assert first.status_code == 200 and first.json()["first"] is True, first.json()
    lines = capsys.readouterr().out.splitlines()
    speaking = ", speaking the dialect of lytho.yaml (BRIDGE_LYTHO_PROFILE)"
    assert [line for line in lines if line.endswith(speaking)] == [
        f"[dev] no LYTHO_API_KEY: Lytho DAM sandbox at {settings.lytho_api_url}{speaking}",
        f"[dev] no LYTHO_CLIENT_ID: Lytho Workflow sandbox at "
        f"{settings.lytho_workflow_api_url}{speaking}",
    ]


def test_the_sandboxes_stop_together_even_one_that_never_started() -> None:
    from starlette.applications import Starlette

    from bridge.sandbox.server import ThreadedServer, stop_all

    started = [ThreadedServer(Starlette()) for _ in range(3)]
    for server in started:
        server.start()
    never = ThreadedServer(Starlette())  # its start timed out before it ran, say
    stop_all([*started, never])
    for server in started:
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url)
