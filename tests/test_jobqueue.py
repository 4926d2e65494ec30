"""BridgeWorker: arq's job semantics with one-script claims and finishes, on a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from arq import Retry
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job, JobStatus
from arq.worker import JobExecutionFailed, func
from redis.asyncio import ConnectionPool

from bridge.errors import ConfigError
from bridge.queue.codec import job_deserializer, job_serializer
from bridge.queue.store import Job as StoreJob
from bridge.queue.store import Keys, Store
from bridge.queue.worker import BridgeWorker
from tests.helpers import HANG_GUARD_SECONDS


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    redis = ArqRedis(
        ConnectionPool.from_url(redis_url),
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
    )
    yield redis
    await redis.aclose(close_connection_pool=True)


def worker(
    pool: ArqRedis, key_prefix: str, *functions: Any, burst: bool = True, **kwargs: Any
) -> BridgeWorker:
    return BridgeWorker(
        functions=list(functions),
        queue_name=f"{key_prefix}queue",
        redis_pool=pool,
        burst=burst,
        poll_delay=0,
        handle_signals=False,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
        **kwargs,
    )


async def enqueue(pool: ArqRedis, key_prefix: str, function: str, n: int, *args: Any) -> list[str]:
    """Enqueue through arq's own client: the worker reads arq's layout."""
    ids = []
    for i in range(n):
        job = await pool.enqueue_job(
            function, *args, _job_id=f"{key_prefix}job{i}", _queue_name=f"{key_prefix}queue"
        )
        assert job is not None
        ids.append(job.job_id)
    return ids


async def job_keys(pool: ArqRedis, job_id: str) -> list[str]:
    """Which of arq's per-job keys other than the result still exist."""
    names = ("arq:job:", "arq:in-progress:", "arq:retry:")
    return [n for n in names if await pool.exists(n + job_id)]


async def test_jobs_run_once_and_leave_only_their_results(pool: ArqRedis, key_prefix: str) -> None:
    async def double(ctx: dict[str, Any], x: int) -> dict[str, Any]:
        return {"double": x * 2, "try": ctx["job_try"]}

    ids = await enqueue(pool, key_prefix, "double", 3, 21)
    w = worker(pool, key_prefix, func(double, name="double"))
    await w.main()

    assert (w.jobs_complete, w.jobs_failed, w.jobs_retried) == (3, 0, 0)
    for job_id in ids:
        job = Job(job_id, pool, _queue_name=f"{key_prefix}queue", _deserializer=job_deserializer)
        assert await job.result() == {"double": 42, "try": 1}
        assert await job.status() == JobStatus.complete
        assert await job_keys(pool, job_id) == []
    assert await pool.zcard(f"{key_prefix}queue") == 0


async def test_retry_defers_the_job_and_counts_the_try(pool: ArqRedis, key_prefix: str) -> None:
    started: list[float] = []

    async def flaky(ctx: dict[str, Any]) -> int:
        started.append(time.monotonic())
        if ctx["job_try"] == 1:
            raise Retry(defer=0.2)
        return int(ctx["job_try"])

    [job_id] = await enqueue(pool, key_prefix, "flaky", 1)
    w = worker(pool, key_prefix, func(flaky, name="flaky"))
    await w.main()

    job = Job(job_id, pool, _queue_name=f"{key_prefix}queue", _deserializer=job_deserializer)
    assert await job.result() == 2
    assert len(started) == 2
    assert started[1] - started[0] >= 0.19  # re-scored into the future, not run at once
    assert (w.jobs_complete, w.jobs_retried) == (1, 1)
    assert await job_keys(pool, job_id) == []


async def test_a_failing_job_fails_for_good_with_its_error(pool: ArqRedis, key_prefix: str) -> None:
    calls = Counter[str]()

    async def broken(ctx: dict[str, Any]) -> None:
        calls[ctx["job_id"]] += 1
        raise ValueError("no such asset")

    [job_id] = await enqueue(pool, key_prefix, "broken", 1)
    w = worker(pool, key_prefix, func(broken, name="broken"))
    await w.main()

    info = await Job(job_id, pool, _deserializer=job_deserializer).result_info()
    assert info is not None and info.success is False
    assert info.result == "ValueError('no such asset')"
    assert calls == {job_id: 1}
    assert await job_keys(pool, job_id) == []
    assert await pool.zcard(f"{key_prefix}queue") == 0


async def test_max_tries_ends_a_job_that_keeps_asking_for_retries(
    pool: ArqRedis, key_prefix: str
) -> None:
    tries: list[int] = []

    async def again(ctx: dict[str, Any]) -> None:
        tries.append(ctx["job_try"])
        raise Retry(defer=0)

    [job_id] = await enqueue(pool, key_prefix, "again", 1)
    w = worker(pool, key_prefix, func(again, name="again", max_tries=3))
    await w.main()

    assert tries == [1, 2, 3]
    info = await Job(job_id, pool, _deserializer=job_deserializer).result_info()
    assert info is not None and info.success is False
    assert info.result == repr(JobExecutionFailed("max 3 retries exceeded"))
    assert await job_keys(pool, job_id) == []


async def test_a_timeout_fails_the_job_and_frees_the_slot(pool: ArqRedis, key_prefix: str) -> None:
    async def slow(ctx: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    [job_id] = await enqueue(pool, key_prefix, "slow", 1)
    w = worker(pool, key_prefix, func(slow, name="slow", timeout=0.1))
    await w.main()

    info = await Job(job_id, pool, _deserializer=job_deserializer).result_info()
    assert info is not None and info.success is False
    assert info.result == "TimeoutError()"
    assert w.job_counter == 0
    assert await job_keys(pool, job_id) == []


async def test_a_job_whose_payload_expired_is_failed_and_dropped(
    pool: ArqRedis, key_prefix: str
) -> None:
    ran: list[str] = []

    async def noop(ctx: dict[str, Any]) -> None:
        ran.append(ctx["job_id"])

    job_id = f"{key_prefix}gone"
    await pool.zadd(f"{key_prefix}queue", {job_id: 1})  # queued id, no job key
    w = worker(pool, key_prefix, func(noop, name="noop"))
    await w.main()

    assert ran == []
    info = await Job(job_id, pool, _deserializer=job_deserializer).result_info()
    assert info is not None and info.success is False
    # Results are JSON: an exception is stored as its repr.
    assert info.result == repr(JobExecutionFailed("job expired"))
    assert await pool.zcard(f"{key_prefix}queue") == 0


async def test_an_unknown_function_fails_the_job(pool: ArqRedis, key_prefix: str) -> None:
    async def known(ctx: dict[str, Any]) -> None:
        return None

    [job_id] = await enqueue(pool, key_prefix, "renamed_since", 1)
    w = worker(pool, key_prefix, func(known, name="known"))
    await w.main()

    info = await Job(job_id, pool, _deserializer=job_deserializer).result_info()
    assert info is not None
    assert info.result == repr(JobExecutionFailed("function 'renamed_since' not found"))
    assert await pool.zcard(f"{key_prefix}queue") == 0


async def test_two_workers_never_run_a_job_twice(pool: ArqRedis, key_prefix: str) -> None:
    runs = Counter[str]()
    by_worker = Counter[int]()

    def counting(n: int) -> Callable[[dict[str, Any]], Awaitable[None]]:
        async def count(ctx: dict[str, Any]) -> None:
            runs[ctx["job_id"]] += 1
            by_worker[n] += 1
            await asyncio.sleep(0)  # let the other worker claim in between

        return count

    ids = await enqueue(pool, key_prefix, "count", 300)
    workers = [
        worker(pool, key_prefix, func(counting(n), name="count"), max_jobs=10) for n in range(2)
    ]
    await asyncio.gather(*(w.main() for w in workers))

    assert runs == {job_id: 1 for job_id in ids}
    assert sum(by_worker.values()) == 300
    assert min(by_worker.values()) > 0  # both took part
    assert await pool.zcard(f"{key_prefix}queue") == 0


async def test_a_cancelled_job_goes_back_to_the_queue(pool: ArqRedis, key_prefix: str) -> None:
    started = asyncio.Event()

    async def long(ctx: dict[str, Any]) -> None:
        started.set()
        await asyncio.Event().wait()

    [job_id] = await enqueue(pool, key_prefix, "long", 1)
    w = worker(pool, key_prefix, func(long, name="long"), burst=False)
    main = asyncio.create_task(w.main())
    await asyncio.wait_for(started.wait(), 10)
    w.allow_pick_jobs = False
    for task in list(w.tasks.values()):
        task.cancel()
    await asyncio.wait_for(asyncio.gather(*w.tasks.values(), return_exceptions=True), 10)
    main.cancel()
    await asyncio.gather(main, return_exceptions=True)

    # Still queued, its payload kept, nothing in progress: the next worker runs it again.
    assert await pool.zscore(f"{key_prefix}queue", job_id) is not None
    assert await job_keys(pool, job_id) == ["arq:job:", "arq:retry:"]
    assert w.jobs_retried == 1


async def noop(ctx: dict[str, Any]) -> None:
    return None


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("on_job_start", noop, "arq option on_job_start is not supported (it never calls it)"),
        ("on_job_end", noop, "arq option on_job_end is not supported (it never calls it)"),
        ("after_job_end", noop, "arq option after_job_end is not supported (it never calls it)"),
        (
            "keep_result_forever",
            True,
            "arq option keep_result_forever=True is not supported"
            " (results are kept for keep_result seconds)",
        ),
        (
            "retry_jobs",
            False,
            "arq option retry_jobs=False is not supported"
            " (a Retry or a cancelled job always goes back to the queue)",
        ),
        (
            "allow_abort_jobs",
            True,
            "arq option allow_abort_jobs=True is not supported (aborting jobs is not supported)",
        ),
        (
            "log_results",
            True,
            "arq option log_results=True is not supported (it never logs job results)",
        ),
        (
            "expires_extra_ms",
            1000,
            "arq option expires_extra_ms=1000 is not supported"
            " (jobs expire 86400000 ms after they are due)",
        ),
        (
            "redis_settings",
            RedisSettings(password="hunter2"),
            "arq option redis_settings is not supported (it runs on the redis_pool it is given)",
        ),
    ],
)
async def test_an_arq_option_the_worker_does_not_honour_is_refused_at_start(
    pool: ArqRedis, key_prefix: str, option: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        worker(pool, key_prefix, func(noop, name="noop"), **{option: value})
    assert str(raised.value) == f"BridgeWorker: {message}; leave it unset"
    assert "hunter2" not in str(raised.value)
    assert await pool.exists(f"{key_prefix}queue:health-check") == 0


async def test_every_refused_option_is_named_at_once(pool: ArqRedis, key_prefix: str) -> None:
    forever = func(noop, name="forever", keep_result_forever=True)
    with pytest.raises(ConfigError) as raised:
        BridgeWorker(functions=[forever], on_job_start=noop, retry_jobs=False)
    assert str(raised.value) == (
        "BridgeWorker: redis_pool is required (the worker runs on a given ArqRedis); "
        "arq option on_job_start is not supported (it never calls it); leave it unset; "
        "arq option retry_jobs=False is not supported"
        " (a Retry or a cancelled job always goes back to the queue); leave it unset; "
        "arq option keep_result_forever=True of function 'forever' is not supported"
        " (results are kept for keep_result seconds); leave it unset"
    )


@pytest.mark.parametrize("options", [{"unique": False}, {"job_id": "mine"}])
async def test_a_cron_job_a_stop_could_not_tell_is_refused(
    pool: ArqRedis, key_prefix: str, options: dict[str, Any]
) -> None:
    from arq.cron import cron

    tick = cron(noop, name="tick", second=0, **options)
    with pytest.raises(ConfigError) as raised:
        worker(pool, key_prefix, func(noop, name="noop"), cron_jobs=[tick])
    assert str(raised.value) == (
        "BridgeWorker: cron job 'tick' must be unique=True without job_id (a stopping worker"
        " cuts a cron job short by the id arq gives its slot)"
    )


async def test_options_at_the_value_the_worker_honours_are_accepted(
    pool: ArqRedis, key_prefix: str
) -> None:
    ran: list[int] = []

    async def record(ctx: dict[str, Any], n: int) -> None:
        ran.append(n)

    w = worker(
        pool,
        key_prefix,
        func(record, name="record"),
        retry_jobs=True,
        allow_abort_jobs=False,
        keep_result_forever=False,
        log_results=False,
        on_job_start=None,
    )
    await enqueue(pool, key_prefix, "record", 1, 7)
    await w.async_run()
    assert ran == [7]


def test_an_idle_worker_waits_until_the_poll_delay_or_the_next_deferred_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bridge.queue import worker as jobqueue

    now = 1_800_000_000_000
    monkeypatch.setattr(jobqueue, "timestamp_ms", lambda: now)  # a clock that stands still

    assert jobqueue._wait_for(None, 0.5) == 0.5
    assert jobqueue._wait_for(now + 200, 0.5) == 0.2
    assert jobqueue._wait_for(now + 60_000, 0.5) == 0.5
    assert jobqueue._wait_for(now - 1_000, 0.5) == jobqueue.MIN_WAIT  # overdue: look at once


@contextlib.asynccontextmanager
async def running(w: BridgeWorker) -> AsyncIterator[BridgeWorker]:
    main = asyncio.create_task(w.main())
    try:
        yield w
    finally:
        main.cancel()
        await asyncio.gather(main, *w.tasks.values(), return_exceptions=True)


async def blocked_on_wake(pool: ArqRedis) -> bool:
    clients = await pool.client_list()
    return any(c.get("cmd") == "blpop" for c in clients)


@pytest.fixture
def no_polling(monkeypatch: pytest.MonkeyPatch) -> float:
    """A poll delay (and cap on the wake-list wait) of an hour: only a wake-up or a due
    deferred job can make an idle worker look at the queue within a test."""
    from bridge.queue import worker as jobqueue

    monkeypatch.setattr(jobqueue, "MAX_WAIT", 3600.0)
    return 3600.0


async def test_a_new_job_wakes_an_idle_worker_at_once(
    pool: ArqRedis, key_prefix: str, no_polling: float
) -> None:
    done = asyncio.Event()

    async def ping(ctx: dict[str, Any]) -> None:
        done.set()

    store = Store(pool, Keys(key_prefix), f"{key_prefix}queue", dedup_ttl=60, event_ttl=60)
    w = worker(pool, key_prefix, func(ping, name="ping"), burst=False)
    w.poll_delay_s = no_polling
    async with running(w):
        deadline = time.monotonic() + HANG_GUARD_SECONDS
        while not await blocked_on_wake(pool):  # idle, waiting on the wake list
            assert time.monotonic() < deadline, "the worker never waited for a wake-up"
            await asyncio.sleep(0.01)  # ok-sleep: polling interval of a bounded wait
        assert await store.enqueue([StoreJob("ping", (), f"{key_prefix}ping")]) == [True]
        # Its next look would be an hour away: the job runs because the enqueue woke it.
        await done.wait()


async def test_a_deferred_retry_runs_when_due_not_after_the_poll_delay(
    pool: ArqRedis, key_prefix: str, no_polling: float
) -> None:
    started: list[float] = []
    done = asyncio.Event()

    async def flaky(ctx: dict[str, Any]) -> None:
        started.append(time.monotonic())
        if ctx["job_try"] == 1:
            raise Retry(defer=0.3)
        done.set()

    await enqueue(pool, key_prefix, "flaky", 1)
    w = worker(pool, key_prefix, func(flaky, name="flaky"), burst=False)
    w.poll_delay_s = no_polling
    async with running(w):
        # With no poll for an hour, the retry runs only because the worker waits for it.
        await done.wait()
    assert started[1] - started[0] >= 0.29  # not before it was due


async def test_a_job_queued_without_a_token_is_found_by_the_poll(
    pool: ArqRedis, key_prefix: str
) -> None:
    done = asyncio.Event()

    async def ping(ctx: dict[str, Any]) -> None:
        done.set()

    w = worker(pool, key_prefix, func(ping, name="ping"), burst=False)
    w.poll_delay_s = 0.2
    async with running(w):
        await enqueue(pool, key_prefix, "ping", 1)  # arq's client pushes no wake-up token
        await asyncio.wait_for(done.wait(), 10)


async def test_a_stopping_worker_cuts_a_cron_job_short_and_waits_for_the_rest(
    pool: ArqRedis, key_prefix: str
) -> None:
    """A poll pass (a cron job) is redone by the next tick, so a stop does not wait for it;
    a job that acts (a rule's run) still gets its time to finish."""
    from arq.cron import cron

    run_started, pass_started, pass_cut, release = (asyncio.Event() for _ in range(4))
    slots: list[str] = []  # the cron slots that started

    async def act(ctx: dict[str, Any]) -> str:
        run_started.set()
        await release.wait()
        return "acted"

    async def poll_pass(ctx: dict[str, Any]) -> None:
        slots.append(ctx["job_id"])
        pass_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass_cut.set()
            raise

    [job_id] = await enqueue(pool, key_prefix, "act", 1)
    w = worker(
        pool,
        key_prefix,
        func(act, name="act"),
        burst=False,
        cron_jobs=[cron(poll_pass, name=f"{key_prefix}tick", second=set(range(60)), unique=True)],
    )
    main = asyncio.create_task(w.main())
    await asyncio.wait_for(run_started.wait(), 30)
    await asyncio.wait_for(pass_started.wait(), 30)

    draining = asyncio.create_task(w.drain(completion_wait=600))
    await asyncio.wait_for(pass_cut.wait(), 30)
    # The pass is cut short while the run still runs, and the stop waits for the run.
    assert not release.is_set() and not draining.done()
    release.set()
    await asyncio.wait_for(draining, 30)
    main.cancel()
    await asyncio.gather(main, return_exceptions=True)

    job = Job(job_id, pool, _queue_name=f"{key_prefix}queue", _deserializer=job_deserializer)
    assert await job.result() == "acted"
    # A slot cut short ends there: not queued again (its next slot is its retry), and no
    # other worker runs it (its in-progress key stays, as for a slot that finished).
    assert slots and all(s.startswith(f"{key_prefix}tick:") for s in slots)
    for slot in slots:
        assert await pool.zscore(f"{key_prefix}queue", slot) is None
        assert await job_keys(pool, slot) == ["arq:in-progress:"]
    assert w.jobs_retried == 0 and w.jobs_failed == 0
