"""Trace entries: appended with their ttl, and never holding a secret."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bridge.jobs.traces import Tracer
from bridge.operate.context import create_redis
from bridge.queue.store import Keys
from bridge.redaction import MASK, SHOWN_DEPTH, TOO_DEEP, displayable, redact
from bridge.settings import Settings

TOKEN = "xoxb-trace-secret-93b1"
QUOTED = 'pa"ss\\word-77'  # written escaped inside JSON


class Leaky:
    def __repr__(self) -> str:
        return f"Leaky(token={TOKEN})"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(Settings.from_env({"REDIS_URL": redis_url}))
    yield client
    await client.aclose(close_connection_pool=True)


async def test_entries_are_appended_in_order_with_the_ttl(redis: Redis, key_prefix: str) -> None:
    tracer = Tracer(redis, Keys(key_prefix), ttl=600, secrets=[TOKEN])
    await tracer.record("e1", "evaluated", matched=["r1"], rules=[{"rule": "r1"}])
    await tracer.record("e1", "run", rule="r1", status="succeeded")
    entries = await tracer.read("e1")
    assert [e.get("kind") for e in entries] == ["evaluated", "run"]
    assert entries[0]["matched"] == ["r1"] and entries[1]["status"] == "succeeded"
    assert 590 <= await redis.ttl(f"{key_prefix}trace:e1") <= 600


async def test_secrets_are_redacted_wherever_they_sit(redis: Redis, key_prefix: str) -> None:
    tracer = Tracer(redis, Keys(key_prefix), ttl=600, secrets=[TOKEN, QUOTED, ""])
    await tracer.record(
        "e2",
        "step",
        error=f"Slack said no to {TOKEN}",
        attempts=[{"request": {"headers": {"authorization": f"Bearer {TOKEN}"}}}],
        password=QUOTED,
        thing=Leaky(),
    )
    raw = b"".join(await redis.lrange(f"{key_prefix}trace:e2", 0, -1))
    assert TOKEN.encode() not in raw
    assert b"ss\\\\word" not in raw  # the escaped form of QUOTED
    [entry] = await tracer.read("e2")
    assert entry["error"] == "Slack said no to **********"
    assert entry["attempts"][0]["request"]["headers"]["authorization"] == "Bearer **********"
    assert entry["password"] == "**********"
    assert entry["thing"] == "Leaky(token=**********)"


# --- redact, displayable and what is read back ------------------------------------------

SECRETS = [TOKEN, "lytics-93f1", "whsec_abc"]


def nested(depth: int, leaf: object) -> object:
    value = leaf
    for _ in range(depth):
        value = {"a": [value]}
    return value


def test_redact_masks_secrets_in_keys_and_values_at_any_depth() -> None:
    value = {
        TOKEN: {"note": f"Bearer {TOKEN}", "lytics-93f1-key": ("whsec_abc",)},
        "deep": nested(3000, {TOKEN: "whsec_abc"}),
        "n": [float("inf"), float("nan"), -float("inf"), 10**400, None, True],
    }
    out = redact(value, SECRETS)
    assert set(out) == {MASK, "deep", "n"}
    assert out[MASK] == {"note": f"Bearer {MASK}", f"{MASK}-key": [MASK]}
    inner = out["deep"]
    for _ in range(3000):
        inner = inner["a"][0]
    assert inner == {MASK: MASK}
    assert out["n"][0] == float("inf") and out["n"][3] == 10**400
    assert value[TOKEN]["note"] == f"Bearer {TOKEN}"  # the input is left as it was


def test_displayable_is_safe_for_every_encoder() -> None:
    value = {
        "lone": "a\ud800b",
        "\udfff": 1,
        "inf": [float("inf"), -float("inf"), float("nan")],
        "deep": nested(2000, "bottom"),
        "huge": 10**4200,
        "secret": {TOKEN: f"x{TOKEN}"},
    }
    shown = displayable(value, [TOKEN])
    text = json.dumps(shown, ensure_ascii=False, allow_nan=False).encode()
    assert TOKEN.encode() not in text
    assert shown["lone"] == "a\ufffdb" and shown["\ufffd"] == 1
    assert shown["inf"] == ["Infinity", "-Infinity", "NaN"]
    assert shown["secret"] == {MASK: f"x{MASK}"}
    assert TOO_DEEP in text.decode()
    # The root, then "deep" and its levels: what is nested SHOWN_DEPTH deep is a note.
    assert text.count(b'{"a": [') == (SHOWN_DEPTH - 2) // 2
    assert shown["huge"] == 10**4200


async def test_entries_that_cannot_be_encoded_or_decoded_are_kept_as_notes(
    redis: Redis, key_prefix: str
) -> None:
    tracer = Tracer(redis, Keys(key_prefix), ttl=600, secrets=[TOKEN])
    looped: list[object] = []
    looped.append(looped)
    await tracer.record("e3", "step", result=nested(5000, TOKEN), loop=looped)
    await tracer.record("e3", "run", status="succeeded", at_inf=float("inf"))
    key = f"{key_prefix}trace:e3"
    await redis.rpush(key, b"[" * 100_000, b"not json", b'"a string"', b"{}")
    raw = b"".join(await redis.lrange(key, 0, -1))
    assert TOKEN.encode() not in raw
    entries = await tracer.read("e3")
    assert [e.get("kind") for e in entries] == ["step", "run", *["unreadable"] * 3, None]
    assert TOO_DEEP in json.dumps(entries[0]["result"], ensure_ascii=False)
    assert entries[1]["at_inf"] == float("inf")
    assert entries[2]["error"] == "this trace entry cannot be read: nested too deep"
    assert entries[3]["error"].startswith("this trace entry cannot be read: not JSON (")
    assert entries[4]["error"] == "this trace entry cannot be read: a JSON str, not an object"
