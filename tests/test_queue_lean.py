"""What the queue's scripts cost in Redis commands, and that each saving keeps its guarantee.

Each test counts the commands a script ran (INFO commandstats counts the commands run inside
Lua scripts too) on a redis-server of its own, so the counts are exact (issue 17).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.jobs import JobStatus
from arq.worker import func
from redis.asyncio import ConnectionPool, Redis

from bridge.cli.redis_server import EmbeddedRedis
from bridge.errors import StoreUnavailable
from bridge.events import Event
from bridge.queue import scripts
from bridge.queue.codec import FINISH_APPENDS, RETRY_KEY_TTL, job_deserializer, job_serializer
from bridge.queue.redis_io import FastScript
from bridge.queue.scripts import WAKE_TOKENS
from bridge.queue.store import INDEX_TRIM_EVERY_MS, Job, Keys, Store
from bridge.queue.worker import BridgeWorker


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as embedded:
        yield embedded


@pytest.fixture
async def redis(server: EmbeddedRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url)
    await client.flushdb()  # our own server: nothing else lives there
    yield client
    await client.aclose()


async def reset(redis: Redis) -> None:
    await redis.config_resetstat()


async def calls(redis: Redis) -> dict[str, int]:
    """Commands run since the last reset, by name (in lower case), without INFO itself."""
    stats: dict[str, Any] = await redis.info("commandstats")
    counts = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    for own in ("info", "config|resetstat", "config"):  # ("config": Redis 6)
        counts.pop(own, None)
    return counts


def store_for(redis: Redis, **ttls: int) -> Store:
    options = {"dedup_ttl": 600, "event_ttl": 600} | ttls
    return Store(redis, Keys("b:"), "b:queue", **options)


# --- wake tokens ------------------------------------------------------------------------


async def test_a_wake_token_is_trimmed_only_when_the_list_is_full(redis: Redis) -> None:
    store = store_for(redis)
    await store.enqueue([Job("f", (), "warm")])  # the script loaded
    await reset(redis)
    for n in range(WAKE_TOKENS + 10):
        assert await store.enqueue([Job("f", (), f"j{n}")]) == [True]
    counts = await calls(redis)
    assert counts["lpush"] == WAKE_TOKENS + 10
    # The first pushes (1 token was there) fit; each of the last 11 trims the list.
    assert counts.get("ltrim", 0) == 11
    assert await redis.llen("b:queue:wake") == WAKE_TOKENS


# --- the worker: claim and finish ---------------------------------------------------------


@pytest.fixture
async def pool(server: EmbeddedRedis, redis: Redis) -> AsyncIterator[ArqRedis]:
    arq_redis = ArqRedis(
        ConnectionPool.from_url(server.url),
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
    )
    yield arq_redis
    await arq_redis.aclose(close_connection_pool=True)


def worker(pool: ArqRedis, *functions: Any, burst: bool = True, **options: Any) -> BridgeWorker:
    return BridgeWorker(
        functions=list(functions),
        queue_name="b:queue",
        redis_pool=pool,
        burst=burst,
        poll_delay=0,
        handle_signals=False,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
        **options,
    )


async def noop(ctx: dict[str, Any]) -> str:
    return "ok"


async def test_a_finished_job_is_removed_with_one_del(redis: Redis, pool: ArqRedis) -> None:
    store = store_for(redis)
    assert await store.enqueue([Job("noop", (), f"j{n}") for n in range(5)]) == [True] * 5
    w = worker(pool, func(noop, name="noop"))
    await reset(redis)
    await w.main()
    assert w.jobs_complete == 5
    assert (await calls(redis))["del"] == 5
    for n in range(5):
        assert await redis.exists(f"arq:in-progress:j{n}", f"arq:job:j{n}", f"arq:retry:j{n}") == 0
        assert await redis.exists(f"arq:result:j{n}") == 1


# --- ingest: the dedupe fast path ---------------------------------------------------------


def ev(event_id: str, source: str = "s") -> Event:
    return Event(id=event_id, source=source, type="a.b", data={"n": 1})


async def test_a_new_event_costs_one_exists_and_one_set_nx_to_dedupe(redis: Redis) -> None:
    store = store_for(redis)
    await store.ingest([ev("warm")])
    await reset(redis)
    assert await store.ingest([ev("e1")]) == [True]
    counts = await calls(redis)
    assert counts.get("get", 0) == 0
    assert counts["exists"] == 1
    assert counts["set"] == 2  # seen (NX) and the event record
    assert await redis.get("b:seen:e1") == b"s"
    assert 590 < await redis.ttl("b:seen:e1") <= 600


async def test_an_event_stored_under_an_alias_stays_a_duplicate_when_its_ids_expire(
    redis: Redis,
) -> None:
    """The fast path looks at the alias too: b's event, stored under a fresh id because a
    owns `X` and c owns `b:X`, is still known once both claims expire."""
    store = store_for(redis)
    await redis.set("b:seen:X", "a")
    await redis.set("b:seen:b:X", "c")
    [(new, stored)] = await store.admit([ev("X", "b")])
    assert new and stored.startswith("evt_")
    await redis.delete("b:seen:X", "b:seen:b:X")
    assert await store.admit([ev("X", "b")]) == [(False, stored)]
    assert await redis.exists("b:seen:X") == 0  # the plain id was not taken


async def test_an_id_marked_by_an_older_version_stays_a_duplicate_for_any_source(
    redis: Redis,
) -> None:
    store = store_for(redis)
    await redis.set("b:seen:old", "1")  # written before duplicates were told apart by source
    assert await store.admit([ev("old", "anyone")]) == [(False, "old")]
    assert await redis.exists("b:event:old") == 0


# --- ingest: the events index trim --------------------------------------------------------


class Clock:
    """Stands in for the time module in bridge.queue.store."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


async def test_the_events_index_is_trimmed_once_a_minute_not_per_call(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(1_800_000_000.0)
    monkeypatch.setattr("bridge.queue.store.time", clock)
    store = store_for(redis)
    await reset(redis)
    for n in range(100):  # 100 calls over 10 s
        assert await store.ingest([ev(f"e{n}")]) == [True]
        clock.now += 0.1
    assert (await calls(redis))["zremrangebyscore"] == 1
    clock.now += INDEX_TRIM_EVERY_MS / 1000
    await store.ingest([ev("a minute on")])
    assert (await calls(redis))["zremrangebyscore"] == 2


async def test_the_events_index_stays_bounded(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One event every 10 s for 1,000 s, events kept 100 s: after every call the index holds
    nothing more than event_ttl + a minute old."""
    clock = Clock(1_800_000_000.0)
    monkeypatch.setattr("bridge.queue.store.time", clock)
    store = store_for(redis, event_ttl=100)
    bound_ms = (100 + INDEX_TRIM_EVERY_MS / 1000) * 1000
    for n in range(100):
        assert await store.ingest([ev(f"e{n}")]) == [True]
        oldest = await redis.zrange("b:events", 0, 0, withscores=True)
        assert clock.now * 1000 - oldest[0][1] <= bound_ms
        assert await redis.zcard("b:events") <= bound_ms / 10_000 + 1
        clock.now += 10
    assert await redis.zcard("b:events") < 100


# --- one ZADD per key and call ------------------------------------------------------------


async def test_a_batch_of_events_is_indexed_and_queued_with_one_zadd_each(redis: Redis) -> None:
    store = store_for(redis)
    await store.ingest([ev("warm")])
    await reset(redis)
    assert await store.ingest([ev(f"e{n}") for n in range(10)] + [ev("e0")]) == [True] * 10 + [
        False
    ]
    assert (await calls(redis))["zadd"] == 2
    assert await redis.zcard("b:events") == 11
    assert await redis.zcard("b:queue") == 11
    assert await redis.zscore("b:queue", "b:handle:e9") is not None


async def test_a_batch_of_jobs_is_queued_with_one_zadd(redis: Redis) -> None:
    store = store_for(redis)
    await store.enqueue([Job("f", (), "warm")])
    await reset(redis)
    jobs = [Job("f", (n,), f"j{n}", defer_seconds=n) for n in range(5)] + [Job("f", (), "j0")]
    assert await store.enqueue(jobs) == [True] * 5 + [False]
    assert (await calls(redis))["zadd"] == 1
    scores = [await redis.zscore("b:queue", f"j{n}") for n in range(5)]
    assert all(s is not None for s in scores)
    gaps = [round(later - earlier) for earlier, later in itertools.pairwise(scores)]  # type: ignore[operator]
    assert gaps == [1000] * 4


async def test_events_before_a_refused_one_in_the_same_call_are_stored_and_queued(
    redis: Redis,
) -> None:
    store = store_for(redis)
    await redis.set("b:seen:X", "a")
    await redis.set("b:seen:b:X", "c")
    alias = "b:alias:" + hashlib.sha1(b"b\nX").hexdigest()
    for n in range(1, 17):
        candidate = "evt_" + hashlib.sha1(f"{alias}#{n}".encode()).hexdigest()[:32]
        await redis.set(f"b:seen:{candidate}", "c")
    with pytest.raises(StoreUnavailable):
        await store.ingest([ev("first", "b"), ev("X", "b")])
    assert await redis.zscore("b:events", "first") is not None
    assert await redis.zscore("b:queue", "b:handle:first") is not None
    assert await redis.exists("b:event:X") == 0
    # The retry of the whole webhook: the first event is a duplicate (X finds a fresh id).
    assert await store.ingest([ev("first", "b"), ev("X", "b")]) == [False, True]


# --- the claim ----------------------------------------------------------------------------


def claim_args(now: int, wanted: int = 10, horizon_ms: int = 500) -> list[Any]:
    return [
        now,
        wanted,
        25_000,
        wanted + 256,
        "arq:in-progress:",
        "arq:retry:",
        "arq:job:",
        RETRY_KEY_TTL,
        horizon_ms,
    ]


async def claim(redis: Redis, now: int, **options: int) -> list[Any]:
    return list(await FastScript(redis, scripts.CLAIM)(["b:queue"], claim_args(now, **options)))


async def queue_job(redis: Redis, job_id: str, score: int) -> None:
    await redis.set(f"arq:job:{job_id}", f"payload {job_id}")
    await redis.zadd("b:queue", {job_id: score})


async def test_a_claim_of_one_job_costs_a_page_two_set_nx_an_mget_and_a_zadd(
    redis: Redis,
) -> None:
    now = 1_800_000_000_000
    await queue_job(redis, "j1", now - 5)
    await claim(redis, now - 10)  # loaded
    await reset(redis)
    reply = await claim(redis, now)
    assert reply[:4] == [b"j1", b"1799999999995", b"payload j1", 1]
    assert reply[4] is None  # nothing due later within the horizon
    assert await calls(redis) == {"evalsha": 1, "zrangebyscore": 1, "set": 2, "mget": 1, "zadd": 1}
    assert await redis.get("arq:in-progress:j1") == b"1"
    assert 24_000 < await redis.pttl("arq:in-progress:j1") <= 25_000
    assert await redis.get("arq:retry:j1") == b"1"
    assert RETRY_KEY_TTL - 5 < await redis.ttl("arq:retry:j1") <= RETRY_KEY_TTL
    # Re-scored to when its in-progress key expires.
    assert await redis.zscore("b:queue", "j1") == now + 25_000


async def test_claims_do_not_look_at_running_jobs_again(redis: Redis) -> None:
    now = 1_800_000_000_000
    for n in range(20):
        await queue_job(redis, f"run{n}", now - 100 + n)
    assert len(await claim(redis, now, wanted=20)) == 20 * 4 + 1
    await queue_job(redis, "new", now)
    await reset(redis)
    reply = await claim(redis, now + 1)
    assert reply[0] == b"new"
    assert (await calls(redis))["set"] == 2  # new's in-progress and retry keys, nothing else


async def test_a_job_whose_worker_died_is_due_when_its_in_progress_key_expires(
    redis: Redis,
) -> None:
    now = 1_800_000_000_000
    await queue_job(redis, "j1", now)
    await claim(redis, now)
    # Its worker dies. Until the in-progress key expires no claim takes it (or looks at it),
    # and the next due score tells an idle worker when to look.
    assert await claim(redis, now + 24_999, horizon_ms=500) == [str(now + 25_000).encode()]
    await redis.delete("arq:in-progress:j1")  # expired
    reply = await claim(redis, now + 25_000)
    assert reply[:4] == [b"j1", str(now + 25_000).encode(), b"payload j1", 2]


async def test_a_cancelled_job_is_queued_again_under_its_own_score(
    redis: Redis, pool: ArqRedis
) -> None:
    started = asyncio.Event()

    async def long(ctx: dict[str, Any]) -> None:
        started.set()
        await asyncio.Event().wait()

    queued = await pool.enqueue_job("long", _job_id="j1", _queue_name="b:queue")
    assert queued is not None
    score = await redis.zscore("b:queue", "j1")
    w = worker(pool, func(long, name="long"), burst=False)
    main = asyncio.create_task(w.main())
    await asyncio.wait_for(started.wait(), 10)
    assert await queued.status() == JobStatus.in_progress
    assert await redis.zscore("b:queue", "j1") != score  # re-scored while it runs
    w.allow_pick_jobs = False
    await w.cancel_running()
    main.cancel()
    await asyncio.gather(main, return_exceptions=True)
    assert await redis.zscore("b:queue", "j1") == score
    assert await queued.status() == JobStatus.queued
    assert await redis.exists("arq:in-progress:j1") == 0


async def test_a_second_pickup_counts_the_try_and_renews_the_counters_ttl(redis: Redis) -> None:
    now = 1_800_000_000_000
    await queue_job(redis, "j1", now)
    await claim(redis, now)
    # As a finish that puts the job back does:
    await redis.delete("arq:in-progress:j1")
    await redis.zadd("b:queue", {"j1": now})
    await redis.expire("arq:retry:j1", 100)
    reply = await claim(redis, now)
    assert reply[3] == 2
    assert await redis.ttl("arq:retry:j1") > 100  # renewed, as arq's worker does


async def test_a_claim_reports_the_next_due_job_within_the_horizon(redis: Redis) -> None:
    now = 1_800_000_000_000
    await queue_job(redis, "soon", now + 300)
    await queue_job(redis, "later", now + 60_000)
    assert await claim(redis, now) == [b"1800000000300"]
    assert await claim(redis, now, horizon_ms=100) == [None]
    assert await claim(redis, now, horizon_ms=3_600_000) == [b"1800000000300"]


# --- finish: what a job hands over goes with it ---------------------------------------------


async def hands_over(ctx: dict[str, Any], key: str, fail: bool = False) -> str:
    ctx[FINISH_APPENDS].append(("b:nothing", 600, []))  # an empty hand is no error
    ctx[FINISH_APPENDS].append((key, 600, [b"first", b"second"]))
    if fail:
        raise ValueError("this job fails")
    return "ok"


async def test_what_a_job_hands_over_is_appended_by_its_finish_script(
    redis: Redis, pool: ArqRedis
) -> None:
    store = store_for(redis)
    await redis.rpush("b:list", b"before")
    jobs = [Job("hands_over", ("b:list",), "h1"), Job("hands_over", ("b:again", True), "h2")]
    assert await store.enqueue(jobs) == [True, True]
    w = worker(pool, func(hands_over, name="hands_over"))
    await reset(redis)
    await w.main()
    assert (w.jobs_complete, w.jobs_failed) == (1, 1)
    assert await redis.lrange("b:list", 0, -1) == [b"before", b"first", b"second"]
    assert 0 < await redis.ttl("b:list") <= 600
    # A job that failed hands its lists over too.
    assert await redis.lrange("b:again", 0, -1) == [b"first", b"second"]
    assert (await calls(redis))["rpush"] == 2  # inside the two finish scripts, no more
    assert await redis.exists("b:nothing") == 0
