"""`.bridge/dev.json`: how the commands beside `bridge dev` find its Redis, secret and token."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.cli.config import companion_settings
from bridge.cli.dev_state import (
    DevState,
    read_state,
    remove_state,
    single_instance,
    state_env,
    write_state,
)
from bridge.errors import ConfigError
from bridge.settings import Settings

DEV_ENV = {
    "REDIS_URL": "redis://127.0.0.1:45678/0",
    "BRIDGE_KEY_PREFIX": "dev:",
    "BRIDGE_WEBHOOK_SECRET": "whsec_ZGV2LXNlY3JldA==",
    "BRIDGE_ADMIN_TOKEN": "dev-token",
}


def gone_pid() -> int:
    """The id of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in (*DEV_ENV, "BRIDGE_QUEUE_NAME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def running(folder: Path) -> Iterator[None]:
    """This test process holds the folder's lock, as a running `bridge dev` does."""
    with single_instance():
        yield


def test_the_state_file_is_private_and_ignored_by_git(folder: Path, running: None) -> None:
    write_state(DevState(pid=os.getpid(), url="http://127.0.0.1:8123", env=DEV_ENV))
    state_file = folder / ".bridge" / "dev.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / ".bridge").stat().st_mode) == 0o700
    assert (folder / ".bridge" / ".gitignore").read_text().splitlines()[-1] == "*"
    state, note = read_state()
    assert note is None and state is not None and state.env == DEV_ENV
    remove_state(os.getpid() + 1)  # not ours: kept
    assert state_file.exists()
    remove_state(os.getpid())
    assert not state_file.exists()


def test_commands_take_dev_settings_where_the_environment_sets_none(
    folder: Path, running: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_state(DevState(pid=os.getpid(), url="http://127.0.0.1:8123", env=DEV_ENV))
    settings, state = companion_settings()
    assert state is not None and state.url == "http://127.0.0.1:8123"
    assert settings.redis_url == "redis://127.0.0.1:45678/0"
    assert settings.key_prefix == "dev:" and settings.queue_name == "dev:queue"
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get() == "whsec_ZGV2LXNlY3JldA=="
    assert settings.admin_token is not None and settings.admin_token.get() == "dev-token"
    # An explicit variable wins over the state file.
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6380/2")
    settings, _ = companion_settings()
    assert settings.redis_url == "redis://127.0.0.1:6380/2"
    assert settings.key_prefix == "dev:"
    assert capsys.readouterr().err == ""


def test_a_stale_or_unreadable_state_file_is_ignored_with_a_note(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pid = gone_pid()
    write_state(DevState(pid=pid, url="http://127.0.0.1:8123", env=DEV_ENV))
    settings, state = companion_settings()
    assert state is None and settings.redis_url == "redis://localhost:6379/0"
    assert capsys.readouterr().err == (
        f"note: ignoring .bridge/dev.json: the bridge dev that wrote it (pid {pid}) is no "
        "longer running\n"
    )
    (folder / ".bridge" / "dev.json").write_text("{not json")
    assert companion_settings()[1] is None
    assert capsys.readouterr().err == (
        "note: ignoring .bridge/dev.json: it is not a state file bridge dev wrote\n"
    )


def test_a_state_file_whose_pid_lives_on_without_the_lock_is_stale(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a kill or a restart the pid may belong to another process (pid 1 in a
    container): only the folder's lock says that bridge dev runs."""
    write_state(DevState(pid=1, url="http://127.0.0.1:8123", env=DEV_ENV))
    settings, state = companion_settings(redis=False)
    assert state is None and settings.redis_url == "redis://localhost:6379/0"
    assert "(pid 1) is no longer running" in capsys.readouterr().err


def test_without_bridge_dev_running_a_redis_command_is_refused(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bridge dev ran here (its data is in .bridge/redis/) but runs no more: a command
    must not read or write whatever Redis answers on localhost instead."""
    (folder / ".bridge" / "redis").mkdir(parents=True)
    with pytest.raises(ConfigError) as refused:
        companion_settings()
    assert str(refused.value) == (
        "bridge dev is not running in this folder (its data is kept in .bridge/redis/); "
        "start `bridge dev` here, or set REDIS_URL to the bridge's Redis"
    )
    # `bridge send` talks HTTP only: it may go on (to --url, say).
    settings, state = companion_settings(redis=False)
    assert state is None and settings.redis_url == "redis://localhost:6379/0"


def test_state_env_holds_what_the_commands_need(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            **DEV_ENV,
            "BRIDGE_WEBHOOK_SECRET_SHOP_EU": "whsec_c2hvcA==",
            "BRIDGE_WEBHOOK_SCHEME_SHOP_EU": "github",
            "BRIDGE_RULES_DIR": str(tmp_path / "rules"),
            "SLACK_BOT_TOKEN": "xoxb-not-written",
        }
    )
    env = state_env(settings)
    assert Settings.from_env(env).secret_for("shop-eu") == settings.secret_for("shop-eu")
    assert Settings.from_env(env).scheme_for("shop-eu") == "github"
    assert env["BRIDGE_RULES_DIR"] == str(tmp_path / "rules")
    # API credentials stay out of the file: the commands beside dev do not call the APIs.
    assert "xoxb-not-written" not in env.values()
