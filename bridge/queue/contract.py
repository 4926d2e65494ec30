"""What bridge.queue takes from arq, named in one place and checked (→ queue).

`BridgeWorker` subclasses arq's `Worker` and drives some of its private state (the
semaphore, the job counter, the task maps). arq does not promise those names, so a worker
checks them when it is built and says plainly which one a new arq release took away,
rather than failing later in the middle of a claim. tests/test_arq_contract.py runs the
same check, and runs stock arq against our jobs, so an upgrade fails one named test.
The arq options BridgeWorker does not honour are refused here too (`refused_options`).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from arq.cron import CronJob

from bridge.queue.codec import JOB_EXPIRY_MS

# The arq release lytbridge is built and tested against.
TESTED_ARQ = "0.28"

# Methods and properties of arq.worker.Worker that BridgeWorker overrides, calls or relies on.
WORKER_METHODS = (
    "main",  # overridden: our claim/wake loop; async_run starts it as main_task
    "async_run",
    "heart_beat",  # health key and cron slots, called by our loop
    "_release_sem_dec_counter_on_complete",  # overridden to wake a loop waiting for a slot
    "_jobs_started",
    "pool",
)
# Attributes a Worker sets in __init__ that BridgeWorker reads or writes.
WORKER_ATTRIBUTES = (
    "sem",
    "job_counter",
    "tasks",
    "job_tasks",
    "main_task",
    "allow_pick_jobs",
    "_pool",
    "loop",
    "ctx",
    "functions",
    "cron_jobs",
    "queue_name",
    "burst",
    "max_burst_jobs",
    "max_jobs",
    "poll_delay_s",
    "queue_read_limit",
    "in_progress_timeout_s",
    "job_timeout_s",
    "keep_result_s",
    "max_tries",
    "on_startup",
    "health_check_key",
    "job_serializer",
    "job_deserializer",
    "jobs_complete",
    "jobs_failed",
    "jobs_retried",
)
# Attributes of a registered function (arq.worker.Function, arq.cron.CronJob).
FUNCTION_ATTRIBUTES = (
    "name",
    "coroutine",
    "timeout_s",
    "max_tries",
    "keep_result_s",
    "keep_result_forever",
)
# Module-level names imported from arq (modules other than bridge.queue import none).
MODULE_NAMES = {
    "arq": ("Retry", "Worker"),
    "arq.connections": ("ArqRedis",),
    "arq.constants": (
        "job_key_prefix",
        "in_progress_key_prefix",
        "retry_key_prefix",
        "result_key_prefix",
        "health_check_key_suffix",
        "expires_extra_ms",
        "keep_cronjob_progress",
    ),
    "arq.cron": ("CronJob", "cron"),
    "arq.jobs": ("deserialize_job_raw", "serialize_result", "SerializationError"),
    "arq.utils": ("ms_to_datetime", "timestamp_ms"),
    "arq.worker": ("Function", "JobExecutionFailed", "RetryJob", "func"),
}


class ArqContractError(RuntimeError):
    """The installed arq lacks a name bridge.queue relies on."""


def arq_version() -> str:
    try:
        return version("arq")
    except PackageNotFoundError:
        return "(version unknown)"


def missing_message(name: str) -> str:
    return (
        f"arq {arq_version()} has no {name}, which bridge.queue relies on "
        f"(lytbridge is tested with arq {TESTED_ARQ}); install arq=={TESTED_ARQ}.* "
        "or adapt bridge/queue (tests/test_arq_contract.py lists every name)"
    )


def missing_module_names() -> list[str]:
    """Each pinned module-level name the installed arq lacks, as `module.name`."""
    import importlib

    missing = []
    for module_name, names in MODULE_NAMES.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            missing.append(module_name)
            continue
        missing += [f"{module_name}.{n}" for n in names if not hasattr(module, n)]
    return missing


def missing_worker_names(worker: Any) -> list[str]:
    """Each pinned name a built Worker (or one of its functions) lacks."""
    from arq.worker import Worker

    # Methods are looked up on arq's class: BridgeWorker's overrides call them with super().
    missing = [f"Worker.{n}" for n in WORKER_METHODS if not hasattr(Worker, n)]
    missing += [f"Worker.{n}" for n in WORKER_ATTRIBUTES if n not in vars(worker)]
    for function in getattr(worker, "functions", {}).values():
        kind = type(function).__name__
        missing += [f"{kind}.{n}" for n in FUNCTION_ATTRIBUTES if not hasattr(function, n)]
    return sorted(set(missing), key=missing.index)


def require_worker_names(worker: Any) -> None:
    """Raise ArqContractError naming the first pinned name the worker lacks."""
    missing = missing_worker_names(worker)
    if missing:
        raise ArqContractError(missing_message(missing[0]))


# arq options BridgeWorker does not honour, with the one value that matches what it does
# (arq's default but for log_results) and why. Any other value is refused at start-up.
UNSUPPORTED_OPTIONS: dict[str, tuple[object, str]] = {
    "redis_settings": (None, "it runs on the redis_pool it is given"),
    "on_job_start": (None, "it never calls it"),
    "on_job_end": (None, "it never calls it"),
    "after_job_end": (None, "it never calls it"),
    "keep_result_forever": (False, "results are kept for keep_result seconds"),
    "retry_jobs": (True, "a Retry or a cancelled job always goes back to the queue"),
    "allow_abort_jobs": (False, "aborting jobs is not supported"),
    "log_results": (False, "it never logs job results"),
    "expires_extra_ms": (JOB_EXPIRY_MS, f"jobs expire {JOB_EXPIRY_MS} ms after they are due"),
}


def refused_options(options: dict[str, Any], functions: Sequence[Any]) -> list[str]:
    """Why each arq option (or function setting) given is one BridgeWorker cannot honour."""
    refused = []
    for name, (honoured, why) in UNSUPPORTED_OPTIONS.items():
        if name in options and options[name] != honoured:
            value = options[name]
            # Plain values are shown; others (a hook, RedisSettings with its password) are not.
            plain = value is None or isinstance(value, bool | int | float)
            shown = f"{name}={value!r}" if plain else name
            refused.append(f"arq option {shown} is not supported ({why}); leave it unset")
    for function in functions:
        if getattr(function, "keep_result_forever", None):
            refused.append(
                f"arq option keep_result_forever=True of function {function.name!r} is not"
                " supported (results are kept for keep_result seconds); leave it unset"
            )
        if isinstance(function, CronJob) and (not function.unique or function.job_id):
            # A stopping worker tells a cron job by arq's id for a slot, `<name>:<slot>`.
            refused.append(
                f"cron job {function.name!r} must be unique=True without job_id (a stopping"
                " worker cuts a cron job short by the id arq gives its slot)"
            )
    return refused
