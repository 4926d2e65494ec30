"""`bridge worker` with the pollers' cron job, whether or not bridge/operate/worker.py adds it yet.

Run as a script by the end-to-end tests: it wraps `make_worker` so that the worker it
builds carries `cron_jobs(context)` (once), then runs the `bridge worker` command.
"""

from __future__ import annotations

import sys
from typing import Any

import bridge.operate.worker
from bridge.cli.main import main
from bridge.jobs.schedule import cron_jobs

_make_worker = bridge.operate.worker.make_worker


def with_pollers(worker: Any, context: Any) -> Any:
    names = {job.name for job in worker.cron_jobs}
    for job in cron_jobs(context):
        if job.name not in names:
            worker.cron_jobs.append(job)
            worker.functions[job.name] = job
    return worker


def make_worker(context: Any, *, burst: bool = False) -> Any:
    return with_pollers(_make_worker(context, burst=burst), context)


if __name__ == "__main__":
    bridge.operate.worker.make_worker = make_worker  # type: ignore[assignment]
    sys.exit(main(["worker"]))
