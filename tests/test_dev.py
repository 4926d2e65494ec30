"""`bridge dev`, the first run: one process, an embedded Redis when none answers, the sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from bridge import dev
from bridge.sandbox.server import free_port
from bridge.settings import Settings
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]


def test_dev_services_start_an_embedded_redis_and_the_slack_sandbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dev, "redis_answers", lambda *args: False)
    with dev.dev_services(Settings.from_env({})) as settings:
        assert settings.redis_url.startswith("redis://127.0.0.1:")
        assert settings.redis_url != "redis://localhost:6379/0"
        client = redis.Redis.from_url(settings.redis_url)
        assert client.ping() is True
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
    # Both are gone with the block.
    assert not dev.redis_answers("127.0.0.1", int(settings.redis_url.rsplit(":", 1)[1][:-2]))


@pytest.mark.slow
def test_bridge_dev_then_bridge_send_prints_the_slack_message(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "BRIDGE_KEY_PREFIX": key_prefix,
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("SLACK_BOT_TOKEN", "BRIDGE_WEBHOOK_SECRET", "HOST"):
        env.pop(name, None)
    out = (tmp_path / "dev.out").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "dev", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    output = tmp_path / "dev.out"
    try:
        wait_for(lambda: "listening on" in output.read_text(), what="bridge dev to start")
        sent = subprocess.run(
            [
                sys.executable,
                "-m",
                "bridge.cli",
                "send",
                "examples/events/proof-approved.json",
                "--url",
                f"http://127.0.0.1:{port}",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert sent.stdout.startswith('202 {"accepted":["msg_')
        line = wait_for(
            lambda: [x for x in output.read_text().splitlines() if x.startswith("[slack sandbox]")],
            what="the sandbox to print the message",
        )
        assert line == [
            "[slack sandbox] #creative: Proof approved: Spring campaign hero banner [+2 blocks]"
        ]
        assert "127.0.0.1:" + str(port) in output.read_text()
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
