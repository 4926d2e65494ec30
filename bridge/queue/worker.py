"""arq's Worker with a lean claim and finish: one Lua script each instead of ~6 round trips.

arq 0.28 claims a job with WATCH, EXISTS, ZSCORE and MULTI/PSETEX/EXEC (four round trips,
one job at a time, racing other workers for the same ids), loads it in a second
transaction and finishes it in a third. For the bridge's small jobs that protocol was
about 60 % of a worker's Redis work (docs/performance.md). `BridgeWorker` keeps arq's data
layout (the queue sorted set and the `arq:job:`, `arq:in-progress:`, `arq:retry:` and
`arq:result:` keys, with the same job and result encoding), so arq's client and `Job`
objects still read it; only the way a worker claims and finishes its jobs changes:

- claim: one script takes the ready ids in score order, skips those in progress anywhere,
  marks up to N in progress, re-scores each to when its in-progress key expires (a running
  job is not due) and returns each with its score, payload and try number;
- finish: one script stores the result and removes the job's keys, or puts the job back
  under the score it was claimed with (plus a retry's defer);
- no polling while idle: every script that adds a ready job (the ingest, the enqueue, a
  finish that puts a job back) pushes a token on `<queue>:wake`, and an idle worker waits
  there with BLPOP, at most `poll_delay` or until the next deferred job is due (the claim
  tells it when). A job added some other way (arq's client, a cron slot queued by another
  worker) is found by the next look, within `poll_delay`.

The semantics are arq's: at least once; `Retry(defer=…)` re-scores the job; a cancelled
job (SIGTERM) is re-queued at once; an exception, a timeout or too many tries fails the
job for good with its result kept; a cron job keeps its in-progress key for a minute so
that no other worker runs the same slot. arq options this loop does not honour
(`on_job_start`, `keep_result_forever`, `allow_abort_jobs`, …) are refused when the worker
is built (bridge/queue/contract.py), and so is an arq that lacks a name the loop drives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from arq import Retry, Worker
from arq.cron import CronJob
from arq.jobs import SerializationError, deserialize_job_raw, serialize_result
from arq.utils import ms_to_datetime, timestamp_ms
from arq.worker import Function, JobExecutionFailed, RetryJob
from redis.exceptions import RedisError

from bridge.errors import ConfigError
from bridge.queue import scripts
from bridge.queue.codec import CRON_KEEP_IN_PROGRESS, FINISH_APPENDS, RETRY_KEY_TTL
from bridge.queue.contract import refused_options, require_worker_names
from bridge.queue.keys import (
    ARQ_IN_PROGRESS_PREFIX,
    ARQ_JOB_PREFIX,
    ARQ_RETRY_PREFIX,
    Keys,
)
from bridge.queue.redis_io import FastScript, fast_command

logger = logging.getLogger(__name__)

# Ids a claim looks at beyond those it takes: ids in progress in any worker sit at the head
# of the queue, and each costs the script one EXISTS.
CLAIM_SCAN_EXTRA = 256

_NO_RESULT = object()

# Bounds of one wait (seconds): Redis rounds shorter BLPOP timeouts up, the connection's
# read timeout is 5 s, and the worker beats (health key, cron) between waits.
MIN_WAIT = 0.001
MAX_WAIT = 2.0


def _wait_for(next_due_ms: int | None, poll_delay: float) -> float:
    """How long an idle worker waits: the poll delay, or until the next deferred job."""
    if next_due_ms is None:
        return poll_delay
    return min(poll_delay, max(MIN_WAIT, (next_due_ms - timestamp_ms()) / 1000))


class BridgeWorker(Worker):
    """An arq Worker that claims jobs in batches and finishes each in one round trip."""

    def __init__(self, functions: Sequence[Function | Any] = (), **kwargs: Any) -> None:
        refused = refused_options(kwargs, [*functions, *(kwargs.get("cron_jobs") or ())])
        if kwargs.get("redis_pool") is None:
            refused.insert(0, "redis_pool is required (the worker runs on a given ArqRedis)")
        if refused:
            raise ConfigError("BridgeWorker: " + "; ".join(refused))
        super().__init__(functions, **kwargs)
        require_worker_names(self)
        self._claim_script: FastScript | None = None
        self._finish_script: FastScript | None = None
        self._slot_free = asyncio.Event()

    def _scripts(self) -> tuple[FastScript, FastScript]:
        if self._claim_script is None or self._finish_script is None:
            self._claim_script = FastScript(self.pool, scripts.CLAIM)
            self._finish_script = FastScript(self.pool, scripts.FINISH)
        return self._claim_script, self._finish_script

    async def main(self) -> None:
        """Claim what is ready, then wait for a wake-up instead of polling (module doc)."""
        logger.debug("worker for %s on %s", ", ".join(self.functions), self.queue_name)
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        while True:
            wanted, claimed, next_due = await self._poll_once()
            if self.burst:
                if 0 <= self.max_burst_jobs <= self._jobs_started():
                    await asyncio.gather(*self.tasks.values())
                    return
                if await self.pool.zcard(self.queue_name) == 0:
                    await asyncio.gather(*self.tasks.values())
                    return
                await asyncio.sleep(self.poll_delay_s)
            elif not self.allow_pick_jobs:
                await asyncio.sleep(min(self.poll_delay_s, MAX_WAIT))  # draining: only beat
            elif wanted == 0:
                await self._wait_for_slot(min(self.poll_delay_s, MAX_WAIT))  # slots all busy
            elif claimed == wanted:
                await asyncio.sleep(0)  # more may be ready: claim again at once
            else:
                await self._wait_for_wake(_wait_for(next_due, self.poll_delay_s))

    async def drain(self, completion_wait: float, runner: asyncio.Task[None] | None = None) -> None:
        """Stop claiming, let running jobs finish within `completion_wait`, cancel (and so
        re-queue) the rest, stop the loop (and `runner`, the task awaiting async_run) and
        remove the heartbeat."""
        self.allow_pick_jobs = False
        running = {j: t for j, t in self.tasks.items() if not t.done()}
        # A cron job (a poll pass, the schedule's tick; its id is arq's `<name>:<slot>`) is
        # cut short at once: the next tick runs it again, as after a crash.
        names = {job.name for job in self.cron_jobs}
        passes = [t for j, t in running.items() if j.rpartition(":")[0] in names]
        for task in passes:
            task.cancel()
        logger.info(
            "worker stopping: waiting up to %.0f s for the running jobs (%d)%s",
            completion_wait,
            len(running) - len(passes),
            f"; cron jobs cut short for the next tick: {len(passes)}" if passes else "",
        )
        if running:
            await asyncio.wait(running.values(), timeout=completion_wait)
        await self.cancel_running()
        # Cancel the poll loop as well as the task around it, and wait for both: a loop left
        # running would keep polling (and beating) after the worker said it stopped.
        loops = [t for t in (self.main_task, runner) if t is not None]
        for task in loops:
            task.cancel()
        if loops:
            await asyncio.wait(loops, timeout=5)
        with contextlib.suppress(RedisError, OSError):
            await self.pool.delete(self.health_check_key)

    async def cancel_running(self) -> None:
        """Cancel the running jobs (each goes back to the queue) and wait for them."""
        tasks = [t for t in self.tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _wait_for_slot(self, seconds: float) -> None:
        """Until a running job ends, or `seconds` pass."""
        self._slot_free.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._slot_free.wait()

    async def _wait_for_wake(self, seconds: float) -> None:
        """Block on the wake list until a producer pushes a token, or `seconds` pass."""
        # BLPOP takes seconds as a decimal (Redis 6+); the read timeout of the connection
        # (5 s) must not cut it short.
        wait = min(max(seconds, MIN_WAIT), MAX_WAIT)
        await fast_command(self.pool, "BLPOP", Keys.wake(self.queue_name), wait)

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._slot_free.set()

    async def _poll_once(self) -> tuple[int, int, int | None]:
        """Beat (which may queue a cron job), reap finished tasks, claim and start ready
        jobs: (how many were wanted, how many claimed, the next deferred job's score)."""
        await self.heart_beat()
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()  # an error in our own job runner must not pass silently

        count = min(self.queue_read_limit, self.max_jobs - self.job_counter)
        if self.burst and self.max_burst_jobs >= 0:
            count = min(count, self.max_burst_jobs - self._jobs_started())
        if not self.allow_pick_jobs or count <= 0:
            return 0, 0, None
        claimed, next_due = await self._claim_and_start(count)
        return count, claimed, next_due

    async def _claim_and_start(self, count: int) -> tuple[int, int | None]:
        claim, _ = self._scripts()
        reply = await claim(
            keys=[self.queue_name],
            args=[
                timestamp_ms(),
                count,
                int(self.in_progress_timeout_s * 1000),
                count + CLAIM_SCAN_EXTRA,
                ARQ_IN_PROGRESS_PREFIX,
                ARQ_RETRY_PREFIX,
                ARQ_JOB_PREFIX,
                RETRY_KEY_TTL,
                # The next due job matters only within the longest wait (_wait_for).
                int(min(self.poll_delay_s, MAX_WAIT) * 1000),
            ],
        )
        later = reply.pop()
        for i in range(0, len(reply), 4):
            job_id = reply[i].decode()
            score = int(float(reply[i + 1]))
            payload: bytes | None = reply[i + 2]
            job_try = int(reply[i + 3])
            # Slots are free (count ≤ max_jobs - running), so this never waits; arq's
            # done-callback releases it again.
            await self.sem.acquire()
            self.job_counter += 1
            task = self.loop.create_task(self._run(job_id, score, payload, job_try))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task
        return len(reply) // 4, None if later is None else int(float(later))

    async def _run(self, job_id: str, score: int, payload: bytes | None, job_try: int) -> None:
        """Run one claimed job and finish it: arq's `run_job`, without its claim round trips."""
        start_ms = timestamp_ms()
        function_name, enqueue_ms = "<unknown>", 0
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] = {}

        async def failed(exc: BaseException) -> None:
            self.jobs_failed += 1
            result = serialize_result(
                function_name,
                args,
                kwargs,
                job_try,
                enqueue_ms,
                False,
                exc,
                start_ms,
                timestamp_ms(),
                f"{job_id}:{function_name}",
                self.queue_name,
                job_id=job_id,
                serializer=self.job_serializer,
            )
            await asyncio.shield(
                self._finish(job_id, score, True, result, self.keep_result_s, 0, None)
            )

        if payload is None:
            logger.warning("job %s expired before it ran", job_id)
            return await failed(JobExecutionFailed("job expired"))
        try:
            function_name, args, kwargs, enqueue_try, enqueue_ms = deserialize_job_raw(
                payload, deserializer=self.job_deserializer
            )
        except SerializationError as exc:
            logger.exception("job %s cannot be read", job_id)
            return await failed(exc)

        function = self.functions.get(function_name)
        if function is None:
            logger.warning("job %s: no function %r", job_id, function_name)
            return await failed(JobExecutionFailed(f"function {function_name!r} not found"))

        is_cron = isinstance(function, CronJob)
        ref = function_name if is_cron else f"{job_id}:{function_name}"
        keep_in_progress = CRON_KEEP_IN_PROGRESS if is_cron else None
        if enqueue_try and enqueue_try > job_try:
            job_try = enqueue_try
            await self.pool.setex(Keys.retry(job_id), RETRY_KEY_TTL, str(job_try))

        max_tries = self.max_tries if function.max_tries is None else function.max_tries
        if job_try > max_tries:
            logger.warning("%s: more than %d tries, giving up", ref, max_tries)
            return await failed(JobExecutionFailed(f"max {max_tries} retries exceeded"))

        appends: list[tuple[str, int, list[bytes]]] = []  # ctx[FINISH_APPENDS]
        outcome = await self._call(
            function, job_id, job_try, enqueue_ms, score, args, kwargs, appends
        )
        result, finish, success, incr_score, start_ms, finished_ms = outcome

        keep_s = self.keep_result_s if function.keep_result_s is None else function.keep_result_s
        result_data = None
        if result is not _NO_RESULT and keep_s > 0:
            result_data = serialize_result(
                function_name,
                args,
                kwargs,
                job_try,
                enqueue_ms,
                success,
                result,
                start_ms,
                finished_ms,
                ref,
                self.queue_name,
                job_id=job_id,
                serializer=self.job_serializer,
            )
        then = (incr_score or 0, keep_in_progress, appends)
        await asyncio.shield(self._finish(job_id, score, finish, result_data, keep_s, *then))

    async def _call(
        self,
        function: Function | CronJob,
        job_id: str,
        job_try: int,
        enqueue_ms: int,
        score: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        appends: list[tuple[str, int, list[bytes]]],
    ) -> tuple[Any, bool, bool, int | None, int, int]:
        """Run the job's coroutine: (result, finish, success, score increment, start, end);
        what it puts in `appends` goes with its finish."""
        ctx = {
            **self.ctx,
            "job_id": job_id,
            "job_try": job_try,
            "enqueue_time": ms_to_datetime(enqueue_ms),
            "score": score,
            FINISH_APPENDS: appends,
        }
        timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s
        result: Any = _NO_RESULT
        finish = success = False
        incr_score: int | None = None
        start_ms = timestamp_ms()
        task = self.loop.create_task(function.coroutine(ctx, *args, **kwargs))
        self.job_tasks[job_id] = task
        try:
            result = await asyncio.wait_for(task, timeout_s)
        except Retry as exc:
            # Re-scored from its old score, so that it runs `defer` after now.
            if exc.defer_score:
                incr_score = exc.defer_score + (timestamp_ms() - score)
            self.jobs_retried += 1
            logger.debug("job %s retrying in %.2f s", job_id, (exc.defer_score or 0) / 1000)
        except (asyncio.CancelledError, RetryJob):
            # Cancelled (stopping): back to the queue; a cron slot ends (the next one retries).
            finish = isinstance(function, CronJob)
            self.jobs_retried += not finish
            logger.debug("job %s cancelled%s", job_id, "" if finish else ", will run again")
        except Exception as exc:
            logger.exception("job %s failed: %s: %s", job_id, type(exc).__name__, exc)
            result, finish = exc, True
            self.jobs_failed += 1
        else:
            finish = success = True
            self.jobs_complete += 1
        finally:
            del self.job_tasks[job_id]
        return result, finish, success, incr_score, start_ms, timestamp_ms()

    async def _finish(
        self,
        job_id: str,
        score: int,
        finish: bool,
        result_data: bytes | None,
        keep_result_s: float,
        incr_score: int,
        keep_in_progress: float | None,
        appends: Sequence[tuple[str, int, list[bytes]]] = (),
    ) -> None:
        _, finish_script = self._scripts()
        keep_ms = int(keep_result_s * 1000)
        handed: list[bytes | int] = []
        for _key, ttl, values in appends:
            handed += [ttl, len(values), *values]
        await finish_script(
            keys=[
                self.queue_name,
                Keys.in_progress(job_id),
                Keys.job(job_id),
                Keys.retry(job_id),
                Keys.result(job_id),
                *(key for key, _ttl, _values in appends),
            ],
            args=[
                job_id,
                "done" if finish else "again",
                result_data if result_data and keep_ms > 0 else b"",
                keep_ms,
                incr_score,
                int((keep_in_progress or 0) * 1000),
                score,
                *handed,
            ],
        )
