"""Store.ingest's group commit: concurrent webhooks share script calls, each still answered
only once its own events are stored, and a failure reaches every caller of the batch."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bridge.errors import StoreUnavailable
from bridge.events import Event
from bridge.operate.context import create_redis
from bridge.queue.store import MAX_INGEST_BATCH, Keys, Store
from bridge.settings import Settings
from tests.helpers import HANG_GUARD_SECONDS


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(Settings.from_env({"REDIS_URL": redis_url}))
    yield client
    await client.aclose(close_connection_pool=True)


def store_for(redis: Redis, key_prefix: str) -> Store:
    return Store(redis, Keys(key_prefix), f"{key_prefix}queue", dedup_ttl=600, event_ttl=600)


def event(event_id: str) -> Event:
    return Event(id=event_id, source="test", type="lytho.asset.updated", data={"n": 1})


class Counting:
    """Wraps the ingest script: how many calls, with how many events each."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.sizes: list[int] = []

    async def __call__(self, keys: list[Any], args: list[Any]) -> Any:
        self.sizes.append((len(args) - 6) // 3)  # 6 arguments, then 3 per event
        return await self.script(keys=keys, args=args)


def counted(redis: Redis, key_prefix: str) -> tuple[Store, Counting]:
    store = store_for(redis, key_prefix)
    counting = Counting(store._ingest)
    store._ingest = counting  # type: ignore[assignment]
    return store, counting


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Let the other tasks run until `predicate` holds (a hung one fails)."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0)


async def test_concurrent_calls_share_script_calls_and_get_their_own_answers(
    redis: Redis, key_prefix: str
) -> None:
    store, counting = counted(redis, key_prefix)
    # 60 webhooks at once; "dup" arrives in two of them: one stores it, one is told it is
    # a duplicate, whichever goes first.
    calls = [[event(f"e{i}")] for i in range(58)] + [[event("dup")], [event("dup")]]
    answers = await asyncio.gather(*(store.ingest(c) for c in calls))

    assert answers[:58] == [[True]] * 58
    assert sorted(answers[58:]) == [[False], [True]]
    assert sum(counting.sizes) == 60
    assert len(counting.sizes) < 60  # written together, not one call per webhook
    assert max(counting.sizes) <= MAX_INGEST_BATCH
    assert await redis.zcard(f"{key_prefix}queue") == 59
    assert await redis.zcard(f"{key_prefix}events") == 59
    # A call alone is written at once, on its own.
    assert await store.ingest([event("later")]) == [True]
    assert counting.sizes[-1] == 1


async def test_a_large_webhook_goes_alone_and_batches_stay_bounded(
    redis: Redis, key_prefix: str
) -> None:
    store, counting = counted(redis, key_prefix)
    big = [event(f"big{i}") for i in range(MAX_INGEST_BATCH + 40)]
    small = [[event(f"s{i}")] for i in range(300)]
    answers = await asyncio.gather(store.ingest(big), *(store.ingest(c) for c in small))
    assert answers[0] == [True] * len(big)
    assert answers[1:] == [[True]] * 300
    assert len(big) in counting.sizes  # alone in its call
    assert all(size <= MAX_INGEST_BATCH for size in counting.sizes if size != len(big))
    assert sum(counting.sizes) == len(big) + 300


async def test_a_failed_write_reaches_every_caller_and_nothing_hangs(
    redis: Redis, key_prefix: str
) -> None:
    store = store_for(redis, key_prefix)

    async def down(keys: list[Any], args: list[Any]) -> Any:
        if len(keys) == 5:  # the first call, alone: fail once the others queued behind it
            await until(lambda: len(store._waiting) == 19, "the others to queue up")
        raise RedisConnectionError("Connection refused")

    store._ingest = down  # type: ignore[assignment]
    results = await asyncio.wait_for(
        asyncio.gather(
            *(store.ingest([event(f"f{i}")]) for i in range(20)), return_exceptions=True
        ),
        10,
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert {str(r) for r in results} == {"Redis cannot store events: ConnectionError"}
    assert await redis.zcard(f"{key_prefix}queue") == 0
    # And the store writes again once Redis answers.
    store._ingest = store_for(redis, key_prefix)._ingest
    assert await store.ingest([event("after")]) == [True]


async def test_a_cancelled_writer_does_not_strand_the_others(redis: Redis, key_prefix: str) -> None:
    store = store_for(redis, key_prefix)
    real = store._ingest
    started, gate = asyncio.Event(), asyncio.Event()

    async def slow(keys: list[Any], args: list[Any]) -> Any:
        started.set()
        await gate.wait()
        return await real(keys=keys, args=args)

    store._ingest = slow  # type: ignore[assignment]
    leader = asyncio.create_task(store.ingest([event("leader")]))
    await asyncio.wait_for(started.wait(), 5)  # the leader's call is in flight
    others = [asyncio.create_task(store.ingest([event(f"o{i}")])) for i in range(5)]
    await until(lambda: len(store._waiting) == 5, "the others to queue up")
    leader.cancel()
    await asyncio.gather(leader, return_exceptions=True)
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(*others, return_exceptions=True), 10)
    # The others were waiting for the next call: it still happens, and they are answered.
    assert results == [[True]] * 5


async def test_an_id_another_source_owns_is_stored_under_a_qualified_id(
    redis: Redis, key_prefix: str
) -> None:
    store = store_for(redis, key_prefix)
    tricky = 'x","source":"evil\\"é'
    theirs = Event(id=tricky, source="a", type="a.b", data={"n": 1})
    mine = Event(id=tricky, source="b", type="a.b", data={"n": 2})
    assert await store.admit([theirs]) == [(True, tricky)]
    assert await store.admit([mine, mine]) == [(True, f"b:{tricky}"), (False, f"b:{tricky}")]
    stored = json.loads(await redis.get(f"{key_prefix}event:b:{tricky}"))
    assert stored == mine.to_dict() | {"id": f"b:{tricky}"}
    job = json.loads(await redis.get(f"arq:job:{key_prefix}handle:b:{tricky}"))
    assert job["f"] == "handle_event" and job["a"] == [stored]
    # The first source's record is untouched.
    assert json.loads(await redis.get(f"{key_prefix}event:{tricky}")) == theirs.to_dict()
    # An id too long to qualify as it is gets a bounded one.
    long_id = "L" * 256
    await store.admit([Event(id=long_id, source="a", type="a.b")])
    [(new, stored_id)] = await store.admit([Event(id=long_id, source="b", type="a.b")])
    assert new and stored_id.startswith("evt_") and len(stored_id) == 36


async def test_a_redelivery_stays_a_duplicate_when_another_sources_claim_expires(
    redis: Redis, key_prefix: str
) -> None:
    """Source b's event is stored as `b:X` because a owns `X`; when a's claim on `X`
    expires first, b's redelivery must still be known (not stored again under `X`)."""
    store = store_for(redis, key_prefix)
    assert await store.admit([Event(id="X", source="a", type="a.b")]) == [(True, "X")]
    assert await store.admit([Event(id="X", source="b", type="a.b")]) == [(True, "b:X")]
    await redis.delete(f"{key_prefix}seen:X")  # a's claim expires before b's
    assert await store.admit([Event(id="X", source="b", type="a.b")]) == [(False, "b:X")]
    assert await redis.exists(f"{key_prefix}event:X") == 1  # a's record, not b's
    assert json.loads(await redis.get(f"{key_prefix}event:X"))["source"] == "a"
    # A source's own plain id is still known when its qualified id would be free.
    assert await store.admit([Event(id="X", source="a", type="a.b")]) == [(True, "X")]
    assert await store.admit([Event(id="X", source="a", type="a.b")]) == [(False, "X")]


async def test_an_event_no_id_can_be_found_for_is_refused_not_a_duplicate(
    redis: Redis, key_prefix: str
) -> None:
    """Every id the event could be stored under is taken (on purpose): the write fails
    (a 503 to the sender) instead of answering an event that was not stored as known."""
    store = store_for(redis, key_prefix)
    await redis.set(f"{key_prefix}seen:X", "a")
    await redis.set(f"{key_prefix}seen:b:X", "c")
    alias = f"{key_prefix}alias:" + hashlib.sha1(b"b\nX").hexdigest()
    for n in range(1, 17):
        candidate = "evt_" + hashlib.sha1(f"{alias}#{n}".encode()).hexdigest()[:32]
        await redis.set(f"{key_prefix}seen:{candidate}", "c")
    with pytest.raises(StoreUnavailable):
        await store.admit([Event(id="X", source="b", type="a.b")])
    assert await redis.exists(f"{key_prefix}alias:next") == 1
    assert await redis.ttl(f"{key_prefix}alias:next") > 0  # the counter expires too
    assert [k async for k in redis.scan_iter(f"{key_prefix}event:*")] == []
