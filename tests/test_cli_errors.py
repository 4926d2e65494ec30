"""Every command's failure is one or two lines saying what is wrong and what to do, with a
non-zero exit; never a traceback. And what the commands print never shows a secret."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from bridge.cli.main import main
from bridge.events import Event
from bridge.jobs.deadletters import DeadLetter
from bridge.operate.context import build_context
from bridge.queue.store import Keys
from bridge.sandbox.server import free_port
from bridge.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
REFUSED = free_port()  # nothing listens here: a Redis or a bridge that is not running

REDIS_DOWN = (
    "cannot reach Redis at 127.0.0.1:{port} (connection refused)\n"
    "start `bridge dev` in this folder (its commands find it), or set REDIS_URL to the "
    "bridge's Redis\n"
)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder (no `bridge dev` state), Redis and the bridge both refused."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{REFUSED}/0")
    (tmp_path / "event.json").write_text(json.dumps({"id": "e-1", "type": "shop.order.paid"}))
    (tmp_path / "broken.json").write_text("type: shop.order.paid\n")
    return tmp_path


FAILURES = [
    (
        ["send", "nope.json"],
        "bridge send: no file nope.json; give the path of a JSON file\n",
    ),
    (
        ["send", "."],
        "bridge send: . is a folder; give the path of a JSON file\n",
    ),
    (
        ["send", "broken.json"],
        "bridge send: broken.json is not a JSON event file (malformed JSON at line 1 column 1:"
        " Expecting value); expected an event object or an array\n",
    ),
    (
        ["send", "event.json", "--url", f"http://127.0.0.1:{REFUSED}"],
        f"bridge send: no bridge answers at http://127.0.0.1:{REFUSED} (connection refused)\n"
        "start one with `bridge dev` in this folder, or pass --url\n",
    ),
    (
        ["send", "event.json", "--url", "http://[::1"],
        "bridge send: Invalid port: ':1'\n"
        "give the bridge's base URL, like --url http://127.0.0.1:8000\n",
    ),
    (["trace", "e-1"], "bridge trace: " + REDIS_DOWN.format(port=REFUSED)),
    (["dlq", "list"], "bridge dlq list: " + REDIS_DOWN.format(port=REFUSED)),
    (["dlq", "retry", "dl_x"], "bridge dlq retry: " + REDIS_DOWN.format(port=REFUSED)),
    (["dlq", "drop", "dl_x"], "bridge dlq drop: " + REDIS_DOWN.format(port=REFUSED)),
    (["replay", "e-1"], "bridge replay: " + REDIS_DOWN.format(port=REFUSED)),
    (["fire", "event.json"], "bridge fire: " + REDIS_DOWN.format(port=REFUSED)),
    (
        ["fire", "nope.json"],
        "bridge fire: no file nope.json; give the path of a JSON file\n",
    ),
    (
        ["fire", "--dry-run", "broken.json"],
        "bridge fire: broken.json is not a JSON event file (malformed JSON at line 1 column 1:"
        " Expecting value); expected an event object or an array\n",
    ),
]


@pytest.mark.parametrize(
    ("argv", "message"), FAILURES, ids=[" ".join(argv) for argv, _ in FAILURES]
)
def test_each_failure_is_one_clear_message(
    folder: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = main(argv)
    out, err = capsys.readouterr()
    assert (code, out, err) == (1, "", message)


def test_reset_with_redis_url_says_why_it_cannot(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dev", "--reset"]) == 1
    assert capsys.readouterr().err == (
        "bridge dev --reset clears the data of its own Redis in .bridge/redis, "
        "but REDIS_URL is set; unset REDIS_URL, or clear that Redis yourself\n"
    )


def test_an_unexpected_error_is_one_line_and_a_hint(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bridge.cli.rules

    def broken(path: Path, source: str | None = None) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(bridge.cli.rules, "read_event_file", broken)
    assert main(["fire", "--dry-run", "event.json"]) == 1
    assert capsys.readouterr().err == (
        "bridge fire: unexpected error: ZeroDivisionError: division by zero\n"
        "this is a bug in lytbridge; run again with `bridge --traceback …` and report it\n"
    )
    assert main(["--traceback", "fire", "--dry-run", "event.json"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.endswith("report it\n")


def run_cli(cwd: Path, env: dict[str, str], *args: str, stdout: int) -> tuple[int, str]:
    process = subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    return process.returncode, process.stderr


def test_output_into_a_closed_pipe_ends_quietly(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """`bridge trace … | head`: the reader has gone; no BrokenPipeError traceback."""
    env = {"REDIS_URL": redis_url, "BRIDGE_KEY_PREFIX": key_prefix}
    event = Event(id="big", source="demo", type="shop.order.paid", data={"n": list(range(5000))})
    asyncio.run(ingest(Settings.from_env(env), event))
    read, write = os.pipe()
    os.close(read)  # no reader from the start: the first write fails
    try:
        code, err = run_cli(tmp_path, env, "trace", "big", stdout=write)
    finally:
        os.close(write)
    assert (code, err) == (141, "")


async def ingest(settings: Settings, *events: Event) -> None:
    context = await build_context(settings, load_rules=False)
    try:
        await context.store.ingest(list(events))
    finally:
        await context.close()


SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-11111-secret-slack",
    "LYTICS_API_TOKEN": "lytics-secret-22222",
    "LYTHO_API_KEY": "lytho-secret-33333",
    "LYTHO_CLIENT_ID": "client",
    "LYTHO_CLIENT_SECRET": "lytho-client-secret-44444",
    "LYTHO_TOKEN_URL": "https://auth.example/token",
    "BRIDGE_ADMIN_TOKEN": "admin-secret-55555",
    "BRIDGE_WEBHOOK_SECRET": "whsec_c2VjcmV0LXdlYmhvb2stNjY2NjY=",
    "BRIDGE_WEBHOOK_SECRET_SHOP": "whsec_c2hvcC1zZWNyZXQtNzc3Nzc=",
}


def test_trace_and_dlq_list_never_print_a_configured_secret(
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"REDIS_URL": redis_url, "BRIDGE_KEY_PREFIX": key_prefix, **SECRETS}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    values = list(SECRETS.values())
    values.remove("client")  # an id and a URL, not secrets
    values.remove("https://auth.example/token")
    data = {"tokens": values, **{value: "as a key" for value in values}}
    event = Event(id="leaky", source="demo", type="shop.order.paid", subject=values[0], data=data)
    asyncio.run(ingest(Settings.from_env(env), event))
    # A dead letter as an older bridge stored it, unmasked: the command masks what it prints.
    keys = Keys(key_prefix)
    letter = DeadLetter(
        id="dl_leaky",
        event_id="leaky",
        rule_id="r",
        run="",
        step="notify",
        uses="slack.post",
        error="upstream said: " + " ".join(values),
        attempts=3,
        failed_at=1_700_000_000.0,
        event=event.to_dict(),
    )
    client = redis.Redis.from_url(redis_url)
    client.hset(keys.dead_letters, letter.id, json.dumps(letter.to_dict()))
    client.zadd(keys.dead_letter_index, {letter.id: letter.failed_at})
    client.close()
    assert main(["trace", "leaky"]) == 0
    traced = capsys.readouterr().out
    assert "tokens" in traced and "**********" in traced
    assert main(["dlq", "list", "--limit", "5"]) == 0
    listed = capsys.readouterr().out
    assert "dl_leaky" in listed and "upstream said: **********" in listed
    for value in values:
        assert value not in traced
        assert value not in listed


def test_trace_replay_and_dlq_outside_the_dev_folder_name_the_redis_they_asked(
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No `.bridge/dev.json` and no REDIS_URL: the default Redis may be another bridge's, so
    an event not found there is told with the Redis asked and what to do (review R3 S5)."""
    if "127.0.0.1:6379/" not in redis_url:  # the default, redis://localhost:6379/0, is not it
        pytest.skip("the default Redis (localhost:6379) is not the test Redis here")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("BRIDGE_KEY_PREFIX", key_prefix)
    assert main(["trace", "evt_not_here"]) == 1
    assert capsys.readouterr().err == (
        "no event 'evt_not_here' in the Redis at redis://localhost:6379/0 (REDIS_URL unset); "
        "run bridge trace in the folder of `bridge dev`, or set REDIS_URL\n"
    )
    # So do replay and the dead letters: "none" there may only mean "not this Redis".
    assert main(["replay", "evt_not_here"]) == 1
    assert capsys.readouterr().err == (
        "no event 'evt_not_here' in the Redis at redis://localhost:6379/0 (REDIS_URL unset); "
        "run bridge replay in the folder of `bridge dev`, or set REDIS_URL\n"
    )
    assert main(["dlq", "list"]) == 0
    assert capsys.readouterr().out == (
        "no dead letters in the Redis at redis://localhost:6379/0 (REDIS_URL unset); "
        "run bridge dlq list in the folder of `bridge dev`, or set REDIS_URL\n"
    )
    for action in ("retry", "drop"):
        assert main(["dlq", action, "dl_not_here"]) == 1
        assert capsys.readouterr().err == (
            "no dead letter 'dl_not_here' in the Redis at redis://localhost:6379/0 "
            f"(REDIS_URL unset); run bridge dlq {action} in the folder of `bridge dev`, "
            "or set REDIS_URL\n"
        )
    # With REDIS_URL set, the Redis is the one asked for: the message says only not stored.
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert main(["trace", "evt_not_here"]) == 1
    assert capsys.readouterr().err == (
        "no event 'evt_not_here' is stored (unknown, or older than BRIDGE_TRACE_TTL)\n"
    )
    assert main(["replay", "evt_not_here"]) == 1
    assert capsys.readouterr().err == "no event 'evt_not_here' is stored\n"
    assert main(["dlq", "list"]) == 0
    assert capsys.readouterr().out == "no dead letters\n"
    assert main(["dlq", "drop", "dl_not_here"]) == 1
    assert capsys.readouterr().err == "no dead letter 'dl_not_here'\n"


@pytest.mark.parametrize(
    ("port", "message"),
    [
        ("99999", "argument --port: 99999 is no port number (0 to 65535)"),
        ("-1", "argument --port: -1 is no port number (0 to 65535)"),
        ("web", "argument --port: 'web' is no port number (0 to 65535)"),
    ],
)
def test_bridge_dev_refuses_a_port_out_of_range_before_starting_anything(
    folder: Path, capsys: pytest.CaptureFixture[str], port: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["dev", "--port", port])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"bridge dev: error: {message}"
    assert not (folder / ".bridge").exists()  # no Redis, no state: nothing was started
