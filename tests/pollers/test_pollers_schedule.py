"""Scheduling and safety: one runner per poller, intervals, crashes, shares of the limits."""

from __future__ import annotations

import asyncio
import time

import pytest

from bridge.clients.ratelimit import Limit, RateLimiter
from bridge.errors import StoreUnavailable
from bridge.ingress.pollers.snapshot import Snapshot
from bridge.jobs import schedule
from bridge.jobs.schedule import RunBudget, cron_jobs, poll_limits, tick
from bridge.operate.context import Context
from bridge.queue.store import Store
from tests.pollers.support import Sandboxes, make_context, poll, poller, stored_events


def test_the_cron_job_ticks_every_5_s_once_per_slot_with_a_short_timeout(
    context: Context,
) -> None:
    [job] = cron_jobs(context)
    assert job.second == set(range(0, 60, 5))
    assert job.unique is True
    assert job.timeout_s is not None and job.timeout_s <= 15
    assert context.settings.key_prefix in job.name


async def test_no_credentials_no_cron_job(redis_url: str, key_prefix: str) -> None:
    ctx = await make_context(redis_url, key_prefix, {})
    try:
        assert cron_jobs(ctx) == []
        assert await tick(ctx) == {}
    finally:
        await ctx.close()


async def test_a_tick_runs_what_is_due_and_a_finished_cycle_waits_its_interval(
    context: Context, sandboxes: Sandboxes
) -> None:
    assert await tick(context) == {"lytho": "done", "lytho_workflow": "done", "lytics": "done"}
    sandboxes.set_tags(1001, "hero")
    assert set((await tick(context)).values()) == {"not due"}  # 60 s have not passed
    assert await stored_events(context) == []
    prefix = context.settings.key_prefix
    await context.redis.delete(f"{prefix}poll:lytho:due")
    assert (await tick(context))["lytho"] == "done"
    [event] = await stored_events(context)
    assert event.type == "lytho.asset.untagged"


async def test_the_interval_comes_from_the_settings(
    redis_url: str, key_prefix: str, sandboxes: Sandboxes
) -> None:
    env = {**sandboxes.env(), "BRIDGE_POLL_INTERVAL": "30", "BRIDGE_POLL_INTERVAL_LYTICS": "7"}
    ctx = await make_context(redis_url, key_prefix, env)
    try:
        await tick(ctx)
        ttl = {
            name: await ctx.redis.pttl(f"{key_prefix}poll:{name}:due")
            for name in ("lytho", "lytics")
        }
        assert 25_000 < ttl["lytho"] <= 29_000
        assert 3_000 < ttl["lytics"] <= 6_000
    finally:
        await ctx.close()


async def test_two_workers_ticking_together_emit_each_change_once(
    context: Context, sandboxes: Sandboxes, redis_url: str, key_prefix: str
) -> None:
    other = await make_context(redis_url, key_prefix, sandboxes.env())
    try:
        await tick(context)
        sandboxes.set_tags(1002, "social", "hero")
        sandboxes.edit_workflow("proof", 8, status="approved")
        await context.redis.delete(
            *(f"{key_prefix}poll:{n}:due" for n in ("lytho", "lytho_workflow", "lytics"))
        )
        first, second = await asyncio.gather(tick(context), tick(other))
        for name in ("lytho", "lytho_workflow", "lytics"):
            assert sorted([first[name], second[name]]) in (["busy", "done"], ["done", "not due"])
        events = await stored_events(context)
        assert sorted(e.type for e in events) == [
            "lytho.asset.tagged",
            "lytho.proof.status_changed",
        ]
    finally:
        await other.close()


async def test_two_pollers_running_at_once_without_the_lock_still_emit_once(
    context: Context, sandboxes: Sandboxes, redis_url: str, key_prefix: str
) -> None:
    other = await make_context(redis_url, key_prefix, sandboxes.env())
    try:
        for name in ("lytho", "lytics"):
            await poll(poller(context, name))
        sandboxes.set_tags(1004, "logo")  # it had [logo, approved]
        job = sandboxes.lytics_jobs()[1]
        sandboxes.set_job(job["id"], "failed")
        for name in ("lytho", "lytics"):
            await asyncio.gather(poll(poller(context, name)), poll(poller(other, name)))
        events = await stored_events(context)
        assert sorted(e.type for e in events) == ["lytho.asset.untagged", "lytics.job.failed"]
        assert len(await context.redis.zrange(context.settings.queue_name, 0, -1)) == 2
    finally:
        await other.close()


async def test_a_crash_between_ingest_and_snapshot_neither_loses_nor_repeats(
    context: Context, sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    dam = poller(context, "lytho")
    await poll(dam)
    sandboxes.set_tags(1005, "logo", "approved")
    real_commit = Snapshot.commit
    crashes = []

    async def crash_once(self: Snapshot, commit: object) -> None:
        if not crashes:
            crashes.append(commit)
            raise RuntimeError("killed after ingest, before the snapshot write")
        await real_commit(self, commit)  # type: ignore[arg-type]

    monkeypatch.setattr(Snapshot, "commit", crash_once)
    with pytest.raises(RuntimeError, match="killed after ingest"):
        await poll(dam)
    [event] = await stored_events(context)  # stored before the crash: not lost
    assert event.type == "lytho.asset.tagged"
    assert (await poll(dam)).done  # the same change again: the same id, a duplicate
    assert [e.id for e in await stored_events(context)] == [event.id]
    assert await context.redis.zcard(context.settings.queue_name) == 1
    assert (await poll(dam)).done  # the snapshot has moved on: nothing more
    assert len(await stored_events(context)) == 1


async def test_a_store_outage_before_ingest_loses_nothing(
    context: Context, sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    lytics = poller(context, "lytics")
    await poll(lytics)
    job = sandboxes.lytics_jobs()[1]
    sandboxes.set_job(job["id"], "failed")
    real_ingest = Store.ingest

    async def down(self: Store, events: object) -> list[bool]:
        raise StoreUnavailable("Redis cannot store events: ConnectionError")

    monkeypatch.setattr(Store, "ingest", down)
    with pytest.raises(StoreUnavailable):
        await poll(lytics)
    monkeypatch.setattr(Store, "ingest", real_ingest)
    await poll(lytics)
    [event] = await stored_events(context)
    assert event.type == "lytics.job.failed"


def test_pollers_take_half_of_each_limit() -> None:
    assert poll_limits((Limit(20, 60, burst=1), Limit(30_000, 86_400))) == (
        Limit(10, 60),
        Limit(15_000, 86_400),
    )


async def test_a_poll_request_waits_behind_a_busy_limiter_and_gives_way(
    context: Context,
) -> None:
    limits = {"lytho": (Limit(10, 1.0, burst=1),)}
    shared = RateLimiter(context.redis, limits, key_prefix=f"{context.settings.key_prefix}rl:")
    share = RateLimiter(
        context.redis,
        {"lytho": poll_limits(limits["lytho"])},
        key_prefix=f"{context.settings.key_prefix}share:",
    )
    budget = RunBudget(shared, share, "lytho", seconds=5)
    # The clock starts before the first slot is booked: the next one is 0.1 s after it.
    started = time.monotonic()
    assert await budget.slot()  # free now
    # The next slot is 0.1 s away; an action waiting for it books it first (wait until it
    # has: which request reaches Redis first must not depend on the connections' order).
    booked = shared.keys("lytho", None)[0]
    before = await context.redis.get(booked)
    action = asyncio.create_task(shared.acquire("lytho"))
    for _ in range(10_000):
        if await context.redis.get(booked) != before:
            break
        await asyncio.sleep(0.001)  # ok-sleep: a loop turn while the action books
    assert await context.redis.get(booked) != before
    assert not await budget.slot()
    await action
    assert time.monotonic() - started >= 0.1
    # With no action waiting, the poller gets the next slot after a short grace.
    assert await budget.slot()
    assert budget.requests == 2


async def test_a_poll_run_stops_when_its_share_is_spent(context: Context) -> None:
    shared = RateLimiter(context.redis, {}, key_prefix=f"{context.settings.key_prefix}rl:")
    share = RateLimiter(
        context.redis,
        {"lytics": (Limit(2, 60),)},
        key_prefix=f"{context.settings.key_prefix}share:",
    )
    budget = RunBudget(shared, share, "lytics", seconds=5)
    assert [await budget.slot() for _ in range(3)] == [True, True, False]


async def test_a_poll_run_stops_at_its_time_box(context: Context) -> None:
    now = [100.0]
    unlimited = RateLimiter(context.redis, {})
    budget = RunBudget(unlimited, unlimited, "lytics", seconds=10, clock=lambda: now[0])
    assert await budget.slot()
    now[0] += 10
    assert budget.time_left() <= 0
    assert not await budget.slot()
    assert schedule.RUN_SECONDS <= 10 < schedule.JOB_TIMEOUT <= 15
