"""Jobs in Redis: keys, Lua scripts, the job codec, enqueue, claim and finish, the worker loop.

The only package that imports arq (docs/queue.md says what it takes from arq and why).
Other packages take what they need from here: `Retry` (raise it in a job to run it again
later), `cron`/`CronJob`/`func` (declare a worker's functions), `ArqRedis` (the client
type), `Keys` (every Redis key). The worker itself is in bridge.queue.worker, the atomic
writes of events and jobs in bridge.queue.store.
"""

from __future__ import annotations

from arq import Retry
from arq.connections import ArqRedis
from arq.cron import CronJob, cron
from arq.worker import func

from bridge.queue.keys import Keys

__all__ = ["ArqRedis", "CronJob", "Keys", "Retry", "cron", "func"]
