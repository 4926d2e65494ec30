"""`bridge backfill SOURCE`: every object once, on purpose, with progress on stderr."""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import pytest
import redis

from bridge.cli.backfill import ProgressBar, add_backfill_command, backfill
from bridge.errors import ConfigError
from bridge.operate.context import Context
from tests.pollers.support import Sandboxes, make_context, poll, poller, stored_events


async def test_backfill_emits_every_asset_once(context: Context, sandboxes: Sandboxes) -> None:
    out = io.StringIO()
    assert await backfill(context, "lytho", ProgressBar("backfill lytho", out)) == 12
    events = await stored_events(context)
    assert len(events) == 12
    assert {e.type for e in events} == {"lytho.asset.created"}
    assert out.getvalue().splitlines()[-1] == f"backfill lytho [{'#' * 30}] 12/12"
    # Again: nothing new. After a change: that asset's new version only.
    assert await backfill(context, "lytho", ProgressBar("again", io.StringIO())) == 0
    sandboxes.edit_asset(1001, name="Spring hero (final)")
    assert await backfill(context, "lytho", ProgressBar("again", io.StringIO())) == 1
    # The poller's snapshot is left alone: its first poll is still silent.
    await poll(poller(context, "lytho"))
    assert len(await stored_events(context)) == 13


async def test_backfill_of_workflow_and_lytics(context: Context) -> None:
    assert await backfill(context, "lytho_workflow", ProgressBar("wf", io.StringIO())) == 22
    assert await backfill(context, "lytics", ProgressBar("lytics", io.StringIO())) == 6
    types = sorted({e.type for e in await stored_events(context)})
    assert types == [
        "lytho.campaign.created",
        "lytho.project.created",
        "lytho.proof.created",
        "lytho.task.created",
        "lytho.workrequest.created",
        "lytics.job.created",
        "lytics.segment.created",
    ]


async def test_backfill_needs_the_credentials(redis_url: str, key_prefix: str) -> None:
    ctx = await make_context(redis_url, key_prefix, {})
    try:
        with pytest.raises(ConfigError, match="bridge backfill lytics needs LYTICS_API_TOKEN"):
            await backfill(ctx, "lytics", ProgressBar("x", io.StringIO()))
    finally:
        await ctx.close()


def test_the_command(
    sandboxes: Sandboxes,
    redis_url: str,
    key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in {
        **sandboxes.env(),
        "REDIS_URL": redis_url,
        "BRIDGE_KEY_PREFIX": key_prefix,
    }.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser(prog="bridge")
    add_backfill_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["backfill", "lytics"])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "backfill lytics [" in captured.err
    assert captured.err.rstrip().endswith("backfill lytics: 6 events emitted")
    with pytest.raises(SystemExit):
        parser.parse_args(["backfill", "slack"])


def test_the_command_beside_bridge_dev_takes_its_redis_and_sandboxes(
    sandboxes: Sandboxes,
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Run in the folder of `bridge dev` with nothing set, it reads dev's state file (its
    Redis, its prefix, its sandboxes), as `bridge doctor` does: the events go to dev."""
    from bridge.cli.dev_state import DevState, single_instance, write_state

    monkeypatch.chdir(tmp_path)
    for name in ("REDIS_URL", "BRIDGE_KEY_PREFIX", "BRIDGE_QUEUE_NAME", *sandboxes.env()):
        monkeypatch.delenv(name, raising=False)
    env = {**sandboxes.env(), "REDIS_URL": redis_url, "BRIDGE_KEY_PREFIX": key_prefix}
    parser = argparse.ArgumentParser(prog="bridge")
    add_backfill_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["backfill", "lytics"])
    with single_instance():  # this process holds the folder, as a running `bridge dev`
        write_state(DevState(pid=os.getpid(), url="http://127.0.0.1:8123", env=env))
        assert args.func(args) == 0
    assert capsys.readouterr().err.rstrip().endswith("backfill lytics: 6 events emitted")
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.zcard(f"{key_prefix}events") == 6
    finally:
        client.close()
