"""The contract with arq: the private names bridge.queue relies on, and jobs read both ways.

An arq release that renames a name BridgeWorker drives, or changes the job format, fails
here by name instead of in production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import arq.worker
import pytest
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus
from arq.worker import Worker, func
from redis.asyncio import ConnectionPool

from bridge.events import Event
from bridge.queue.codec import job_deserializer, job_serializer
from bridge.queue.contract import (
    ArqContractError,
    arq_version,
    missing_message,
    missing_module_names,
    missing_worker_names,
)
from bridge.queue.keys import Keys
from bridge.queue.store import Job as StoreJob
from bridge.queue.store import Store
from bridge.queue.worker import BridgeWorker


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    redis = ArqRedis(
        ConnectionPool.from_url(redis_url),
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
    )
    yield redis
    await redis.aclose(close_connection_pool=True)


def options(pool: ArqRedis, key_prefix: str) -> dict[str, Any]:
    return {
        "queue_name": f"{key_prefix}queue",
        "redis_pool": pool,
        "burst": True,
        "poll_delay": 0,
        "handle_signals": False,
        "job_serializer": job_serializer,
        "job_deserializer": job_deserializer,
    }


async def noop(ctx: dict[str, Any]) -> None:
    return None


# --- the names -----------------------------------------------------------------------------


def test_every_module_level_name_bridge_queue_imports_exists() -> None:
    missing = missing_module_names()
    assert missing == [], "\n".join(missing_message(name) for name in missing)


async def test_every_worker_name_bridge_queue_drives_exists(
    pool: ArqRedis, key_prefix: str
) -> None:
    stock = Worker(functions=[func(noop, name="noop")], **options(pool, key_prefix))
    missing = missing_worker_names(stock)
    assert missing == [], "\n".join(missing_message(name) for name in missing)
    assert (
        missing_worker_names(BridgeWorker([func(noop, name="noop")], **options(pool, key_prefix)))
        == []
    )


async def test_a_missing_method_stops_the_worker_at_start_naming_it_and_the_version(
    pool: ArqRedis, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(arq.worker.Worker, "_release_sem_dec_counter_on_complete")
    with pytest.raises(ArqContractError) as raised:
        BridgeWorker([func(noop, name="noop")], **options(pool, key_prefix))
    assert str(raised.value) == (
        f"arq {arq_version()} has no Worker._release_sem_dec_counter_on_complete, which"
        " bridge.queue relies on (lytbridge is tested with arq 0.28); install arq==0.28.*"
        " or adapt bridge/queue (tests/test_arq_contract.py lists every name)"
    )
    assert arq_version() == arq.VERSION


async def test_a_missing_attribute_stops_the_worker_at_start_naming_it(
    pool: ArqRedis, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stock_init = arq.worker.Worker.__init__

    def without_job_counter(self: Worker, *args: Any, **kwargs: Any) -> None:
        stock_init(self, *args, **kwargs)
        del self.job_counter  # as if an arq release renamed it

    monkeypatch.setattr(arq.worker.Worker, "__init__", without_job_counter)
    with pytest.raises(ArqContractError, match=r"^arq \S+ has no Worker\.job_counter, which"):
        BridgeWorker([func(noop, name="noop")], **options(pool, key_prefix))


def test_the_key_strings_stay_what_users_redis_holds() -> None:
    keys = Keys("bridge:")
    assert [
        keys.job("bridge:handle:e1"),
        keys.result("j"),
        keys.in_progress("j"),
        keys.retry("j"),
        keys.wake("bridge:queue"),
        keys.health_check("bridge:queue"),
        keys.handle_job_id("e1"),
        keys.run_job_id("e1", "r", "replay-1"),
        keys.poll_tick_name,
        keys.slots("e1", "r"),
        keys.dedupe("r", "d"),
        keys.throttle("r", "d"),
        keys.ratelimit_prefix,
        keys.poll_budget_prefix,
        keys.poll_lock("lytho"),
        keys.poll_due("lytho"),
        keys.poll_status("lytho"),
        keys.metrics_counters,
        keys.metrics_last_fired,
        keys.metrics_hour_prefix,
        keys.auth_failures("127.0.0.1"),
        keys.auth_refused("127.0.0.1"),
        keys.auth_session("d"),
    ] == [
        "arq:job:bridge:handle:e1",
        "arq:result:j",
        "arq:in-progress:j",
        "arq:retry:j",
        "bridge:queue:wake",
        "bridge:queue:health-check",
        "bridge:handle:e1",
        "bridge:run:e1:r@replay-1",
        "cron:bridge:poll",
        "bridge:slots:e1:r",
        "bridge:dedupe:r:d",
        "bridge:throttle:r:d",
        "bridge:ratelimit:",
        "bridge:poll:budget:",
        "bridge:poll:lytho:lock",
        "bridge:poll:lytho:due",
        "bridge:poll:lytho:status",
        "bridge:metrics:counters",
        "bridge:metrics:last_fired",
        "bridge:metrics:hour:",
        "bridge:auth:failures:127.0.0.1",
        "bridge:auth:refused:127.0.0.1",
        "bridge:auth:session:d",
    ]


# --- jobs read both ways -----------------------------------------------------------------


async def test_stock_arq_runs_the_jobs_our_store_writes(pool: ArqRedis, key_prefix: str) -> None:
    store = Store(pool, Keys(key_prefix), f"{key_prefix}queue", dedup_ttl=60, event_ttl=60)
    event = Event(id="e-1", source="test", type="lytho.asset.updated", data={"name": "ünï"})
    [admitted] = await store.admit([event])
    assert admitted.new
    job_id = f"{key_prefix}run:e-1:r"
    assert await store.enqueue([StoreJob("run_rule", (event.to_dict(), "r", ""), job_id)]) == [True]
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    async def handle_event(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> str:
        calls.append(("handle_event", args, kwargs))
        return "handled"

    async def run_rule(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> str:
        calls.append(("run_rule", args, kwargs))
        return "ran"

    stock = Worker(
        functions=[func(handle_event, name="handle_event"), func(run_rule, name="run_rule")],
        **options(pool, key_prefix),
    )
    await stock.async_run()

    assert sorted(calls, key=lambda c: c[0]) == [
        ("handle_event", (event.to_dict(),), {}),
        ("run_rule", (event.to_dict(), "r", ""), {}),
    ]
    assert (stock.jobs_complete, stock.jobs_failed) == (2, 0)
    handle = Job(Keys(key_prefix).handle_job_id("e-1"), pool, _deserializer=job_deserializer)
    assert (await handle.result_info()).result == "handled"  # type: ignore[union-attr]
    run = await Job(job_id, pool, _deserializer=job_deserializer).result_info()
    assert run is not None and run.success and run.result == "ran"
    assert list(run.args) == [event.to_dict(), "r", ""]  # JSON: a list


async def test_our_worker_runs_the_jobs_stock_arq_enqueues(pool: ArqRedis, key_prefix: str) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def record(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append((args, kwargs))
        return {"seen": len(args)}

    queue = f"{key_prefix}queue"
    job = await pool.enqueue_job(
        "record", 1, "two", [3], _job_id=f"{key_prefix}stock", _queue_name=queue, flag=True
    )
    assert job is not None
    ours = BridgeWorker([func(record, name="record")], **options(pool, key_prefix))
    await ours.async_run()

    assert calls == [((1, "two", [3]), {"flag": True})]
    assert await job.status() == JobStatus.complete
    info = await job.result_info()
    assert info is not None and info.success and info.result == {"seen": 3}
    assert info.kwargs == {"flag": True} and info.job_try == 1
    assert await pool.zcard(queue) == 0
