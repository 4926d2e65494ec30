"""Every Redis key lytbridge reads or writes, built in one place (→ queue).

Our own keys sit under the key prefix (`BRIDGE_KEY_PREFIX`, default `bridge:`). Two families
sit outside it, on purpose:

- arq's job keys, `arq:job:<job id>`, `arq:in-progress:…`, `arq:retry:…`, `arq:result:…`:
  they are arq's data format, read under these names by stock arq's client, its `Job`
  objects and its workers (tests/test_arq_contract.py). Renaming them would break that
  contract and orphan the jobs already queued. The job ids carry the prefix instead
  (`arq:job:bridge:handle:<event id>`), so two bridges on one Redis never share a job.
- the queue (`BRIDGE_QUEUE_NAME`, default `<prefix>queue`) and the keys named after it:
  `<queue>:wake` (our idle workers' wake-up list) and `<queue>:health-check` (arq's name
  for a worker's heartbeat).

The key strings never change: data already in a user's Redis must still be found. The Lua
ingest script builds `seen:`, `alias:`, `event:` and `handle:` keys from the prefix the same
way (bridge/queue/store.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from arq.constants import (
    health_check_key_suffix,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)

# arq's key prefixes (arq.constants), outside BRIDGE_KEY_PREFIX (module docstring).
ARQ_JOB_PREFIX: str = job_key_prefix
ARQ_RESULT_PREFIX: str = result_key_prefix
ARQ_IN_PROGRESS_PREFIX: str = in_progress_key_prefix
ARQ_RETRY_PREFIX: str = retry_key_prefix

# Workers wait on `<queue>:wake` for a token rather than polling (bridge/queue/worker.py).
WAKE_SUFFIX = ":wake"


def run_name(rule_id: str, run: str) -> str:
    """A rule's runs for one event: the first has no name; replays are `rule@replay-…`."""
    return f"{rule_id}@{run}" if run else rule_id


@dataclass(frozen=True)
class Keys:
    """Every Redis key lytbridge writes, in one place, under one prefix (and arq's, outside)."""

    prefix: str

    # --- events, traces, dead letters ---------------------------------------------------

    def seen(self, event_id: str) -> str:
        """A stored id, holding the source that owns it (written by the ingest script)."""
        return f"{self.prefix}seen:{event_id}"

    def event(self, event_id: str) -> str:
        return f"{self.prefix}event:{event_id}"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    def trace(self, event_id: str) -> str:
        return f"{self.prefix}trace:{event_id}"

    def steps(self, event_id: str, rule_id: str, run: str = "") -> str:
        return f"{self.prefix}steps:{event_id}:{run_name(rule_id, run)}"

    def attempts(self, event_id: str, rule_id: str, run: str = "") -> str:
        return f"{self.prefix}attempts:{event_id}:{run_name(rule_id, run)}"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}dlq"

    @property
    def dead_letter_index(self) -> str:
        return f"{self.prefix}dlq:index"

    # --- job ids (the arq job key is `arq:job:` + id) -----------------------------------

    def handle_job_id(self, event_id: str, run: str = "") -> str:
        # The ingest script builds the first run's id the same way: `<prefix>handle:<id>`.
        return f"{self.prefix}handle:{event_id}" + (f"@{run}" if run else "")

    def run_job_id(self, event_id: str, rule_id: str, run: str = "", retry: int = 0) -> str:
        base = f"{self.prefix}run:{event_id}:{run_name(rule_id, run)}"
        return base if not retry else f"{base}:retry{retry}"

    @property
    def poll_tick_name(self) -> str:
        """The pollers' cron job; arq derives its job ids from it, and job ids are global
        across queues, so the prefix keeps two bridges on one Redis from sharing a tick."""
        return f"cron:{self.prefix}poll"

    @property
    def schedule_tick_name(self) -> str:
        """The time triggers' cron job (bridge/jobs/ticks.py), prefixed as the pollers' is."""
        return f"cron:{self.prefix}schedule"

    @property
    def schedule_ticks(self) -> str:
        """The last tick emitted per scheduled rule: a hash, rule id → JSON {tick, schedule,
        timezone} (bridge/jobs/ticks.py)."""
        return f"{self.prefix}schedule:ticks"

    # --- dedupe and throttle of rule runs (bridge/jobs/limits.py) ----------------------

    def slots(self, event_id: str, rule_id: str) -> str:
        """The dedupe/throttle slots one run booked, kept until it ends."""
        return f"{self.prefix}slots:{event_id}:{rule_id}"

    def dedupe(self, rule_id: str, digest: str) -> str:
        return f"{self.prefix}dedupe:{rule_id}:{digest}"

    def throttle(self, rule_id: str, digest: str) -> str:
        return f"{self.prefix}throttle:{rule_id}:{digest}"

    # --- digests and throttle roll-ups (bridge/jobs/digest.py) --------------------------

    def digest_window(self, rule_id: str, digest: str) -> str:
        """The id of the open digest of one rule and rendered key (absent: none is open)."""
        return f"{self.prefix}digest:window:{rule_id}:{digest}"

    def digest_members(self, digest_id: str) -> str:
        """A digest's members in order (JSON events), until its run is queued."""
        return f"{self.prefix}digest:members:{digest_id}"

    def digest_joined(self, event_id: str, rule_id: str, run: str = "") -> str:
        """The digest an event joined for a rule: matching it again never joins twice."""
        return f"{self.prefix}digest:joined:{event_id}:{run_name(rule_id, run)}"

    def digest_close_job_id(self, digest_id: str) -> str:
        return f"{self.prefix}digest:close:{digest_id}"

    def rollup(self, rule_id: str, digest: str) -> str:
        """The matches a roll-up throttle held back (a list; `:count` counts them all)."""
        return f"{self.prefix}rollup:{rule_id}:{digest}"

    def rollup_seen(self, rule_id: str, event_id: str) -> str:
        return f"{self.prefix}rollup:seen:{rule_id}:{event_id}"

    def rollup_run(self, event_id: str, rule_id: str) -> str:
        """What a run of a roll-up throttle took over: [count, events…], kept with the run."""
        return f"{self.prefix}rollup:run:{event_id}:{rule_id}"

    # --- `for:` waits (bridge/jobs/waits.py) ---------------------------------------------

    def wait_object(self, obj: str) -> str:
        """One object's pending waits (a hash: rule id → wait) and its latest state
        (`_latest`, `_t`), kept while a wait is pending."""
        return f"{self.prefix}wait:object:{obj}"

    def wait_match(self, event_id: str, rule_id: str) -> str:
        """What an event's match of a `for:` rule did: matching it again does the same."""
        return f"{self.prefix}wait:match:{event_id}:{rule_id}"

    def wait_current(self, event_id: str, rule_id: str) -> str:
        """The state a wait's check found, kept with the run it queued (`current`)."""
        return f"{self.prefix}wait:current:{event_id}:{rule_id}"

    def wait_check_job_id(self, rule_id: str, obj: str, event_id: str) -> str:
        return f"{self.prefix}wait:check:{rule_id}:{obj}:{event_id}"

    # --- rate limits and pollers ----------------------------------------------------------

    @property
    def ratelimit_prefix(self) -> str:
        """The shared rate limiter's keys start with this (bridge/clients/ratelimit.py)."""
        return f"{self.prefix}ratelimit:"

    @property
    def poll_budget_prefix(self) -> str:
        """The pollers' share of each API's limits (a second limiter's keys)."""
        return f"{self.prefix}poll:budget:"

    def poller(self, name: str) -> str:
        """The start of every key of one poller: its snapshot, lock, due mark and status."""
        return f"{self.prefix}poll:{name}:"

    def poll_lock(self, name: str) -> str:
        return self.poller(name) + "lock"

    def poll_due(self, name: str) -> str:
        return self.poller(name) + "due"

    def poll_status(self, name: str) -> str:
        return self.poller(name) + "status"

    # --- Slack threads and living messages (bridge/actions/slack_keys.py) -----------------

    def slack_key(self, kind: str, channel: str, key: str) -> str:
        """The message a `thread_key` or `message_key` (kind) names in one channel."""
        return f"{self.prefix}slack:{kind}:{channel}:{key}"

    def slack_claim(self, kind: str, channel: str, key: str) -> str:
        """Held while the first message of a key is being posted."""
        return f"{self.prefix}slack:claim:{kind}:{channel}:{key}"

    def slack_step(self, step_id: str) -> str:
        """What one step (event, rule run, step) posted for a key."""
        return f"{self.prefix}slack:step:{step_id}"

    # --- metrics and admin login ----------------------------------------------------------

    @property
    def metrics_counters(self) -> str:
        return f"{self.prefix}metrics:counters"

    @property
    def metrics_last_fired(self) -> str:
        return f"{self.prefix}metrics:last_fired"

    @property
    def metrics_hour_prefix(self) -> str:
        """One hash per hour: this, then the hour's start in epoch seconds."""
        return f"{self.prefix}metrics:hour:"

    def auth_failures(self, address: str) -> str:
        return f"{self.prefix}auth:failures:{address}"

    def auth_refused(self, address: str) -> str:
        return f"{self.prefix}auth:refused:{address}"

    def auth_session(self, digest: str) -> str:
        return f"{self.prefix}auth:session:{digest}"

    # --- outside the prefix: arq's keys and the queue's (module docstring) -------------------

    @staticmethod
    def job(job_id: str) -> str:
        return ARQ_JOB_PREFIX + job_id

    @staticmethod
    def result(job_id: str) -> str:
        return ARQ_RESULT_PREFIX + job_id

    @staticmethod
    def in_progress(job_id: str) -> str:
        return ARQ_IN_PROGRESS_PREFIX + job_id

    @staticmethod
    def retry(job_id: str) -> str:
        return ARQ_RETRY_PREFIX + job_id

    @staticmethod
    def wake(queue_name: str) -> str:
        return queue_name + WAKE_SUFFIX

    @staticmethod
    def health_check(queue_name: str) -> str:
        """A worker's heartbeat, named as arq names it."""
        return queue_name + health_check_key_suffix
