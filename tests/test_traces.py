"""Trace entries: appended with their ttl, and never holding a secret."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bridge.context import create_redis
from bridge.settings import Settings
from bridge.store import Keys
from bridge.traces import Tracer

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
    assert [e["kind"] for e in entries] == ["evaluated", "run"]
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
