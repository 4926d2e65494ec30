"""Lytics jobs and segments as events: two list calls per cycle, against a snapshot (pollers).

Lytics answers `GET /api/job` and `GET /api/segment` with every job and segment at once,
so a cycle is two requests. Segment membership (entered/exited) comes by webhook instead
(`POST /hooks/lytics`, bridge/ingress/normalize.py).

Redis (under `<prefix>poll:lytics:`): `jobs` and `segments` (id → compact fields), and
`state`: `part` (where the cycle is), `jobs:seeded`, `segments:seeded`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from bridge.clients.lytics import LyticsClient
from bridge.errors import ConfigError
from bridge.events import Event
from bridge.ingress.pollers.poller import POLL_RETRY, Budget, PollerDeps, PollResult, Progress
from bridge.ingress.pollers.snapshot import (
    Commit,
    Compact,
    Snapshot,
    changes,
    polled_event,
    record,
)

SOURCE: Final = "lytics"
JOB_CREATED: Final = "lytics.job.created"
JOB_STATUS_CHANGED: Final = "lytics.job.status_changed"
JOB_FAILED: Final = "lytics.job.failed"
JOB_COMPLETED: Final = "lytics.job.completed"
SEGMENT_CREATED: Final = "lytics.segment.created"
SEGMENT_UPDATED: Final = "lytics.segment.updated"
EVENT_TYPES: Final = (
    JOB_CREATED,
    JOB_STATUS_CHANGED,
    JOB_FAILED,
    JOB_COMPLETED,
    SEGMENT_CREATED,
    SEGMENT_UPDATED,
)
FAILED: Final = frozenset({"failed", "error"})
COMPLETED: Final = frozenset({"complete", "completed"})
JOB_FIELDS: Final = ("status", "error")
SEGMENT_FIELDS: Final = ("name", "slug_name", "kind", "filter_ql", "description")
PARTS: Final = ("jobs", "segments")


def _time(item: Mapping[str, Any]) -> str | None:
    value = item.get("modified")
    return value if isinstance(value, str) and value else None


def job_compact(job: Mapping[str, Any]) -> Compact:
    return {"status": job.get("status"), "error": job.get("error"), "modified": job.get("modified")}


def status_type(status: Any) -> str:
    """The event type of a job that has just reached `status`."""
    if status in FAILED:
        return JOB_FAILED
    if status in COMPLETED:
        return JOB_COMPLETED
    return JOB_STATUS_CHANGED


def job_events(job: Mapping[str, Any], old: Compact | None) -> list[Event]:
    """One event per status change: `failed`, `completed`, else `status_changed`.

    A job first seen (after seeding) is `created`, and also `failed` or `completed` when it
    already ended, so that no failure goes unreported however fast it was.
    """
    object_id, version, data = str(job["id"]), job.get("modified"), dict(job)
    if old is None:
        events = [polled_event(SOURCE, JOB_CREATED, object_id, version, data, time=_time(job))]
        if status_type(job.get("status")) != JOB_STATUS_CHANGED:
            events.append(
                polled_event(
                    SOURCE,
                    status_type(job.get("status")),
                    object_id,
                    version,
                    data,
                    change={"status": {"from": None, "to": job.get("status")}},
                    time=_time(job),
                )
            )
        return events
    diff = changes(old, job_compact(job), JOB_FIELDS)
    if "status" not in diff:
        return []
    return [
        polled_event(
            SOURCE,
            status_type(job.get("status")),
            object_id,
            version,
            data,
            change=diff,
            time=_time(job),
        )
    ]


def segment_compact(segment: Mapping[str, Any]) -> Compact:
    out: Compact = {name: segment.get(name) for name in SEGMENT_FIELDS}
    out["modified"] = segment.get("modified")
    return out


def segment_events(segment: Mapping[str, Any], old: Compact | None) -> list[Event]:
    """`created` or `updated`; the subject is the slug, as in segment webhooks."""
    object_id, version = str(segment["id"]), segment.get("modified")
    data, slug = dict(segment), str(segment.get("slug_name") or segment["id"])
    if old is None:
        return [
            polled_event(
                SOURCE, SEGMENT_CREATED, object_id, version, data, time=_time(segment), subject=slug
            )
        ]
    diff = changes(old, segment_compact(segment), SEGMENT_FIELDS)
    if not diff:
        return []
    return [
        polled_event(
            SOURCE,
            SEGMENT_UPDATED,
            object_id,
            version,
            data,
            change=diff,
            time=_time(segment),
            subject=slug,
        )
    ]


class LyticsPoller:
    """Lytics jobs and segments (`BRIDGE_POLL_INTERVAL_LYTICS`)."""

    name = SOURCE
    event_types = EVENT_TYPES

    def __init__(self, deps: PollerDeps) -> None:
        settings = deps.settings
        if settings.lytics_api_token is None:
            raise ConfigError("the Lytics poller needs LYTICS_API_TOKEN")
        self.client = LyticsClient(
            deps.http,
            settings.lytics_api_url,
            settings.lytics_api_token,
            None,
            retry=POLL_RETRY,
        )
        self.store = deps.store
        self.snapshot = Snapshot(deps.redis, settings.key_prefix, self.name)

    async def _list(self, part: str) -> list[dict[str, Any]]:
        found = await (self.client.list_jobs() if part == "jobs" else self.client.list_segments())
        return [i for i in found if isinstance(i, dict) and i.get("id") is not None]

    async def poll(self, budget: Budget) -> PollResult:
        snap = self.snapshot
        state = await snap.state()
        index = int(state.get("part", "0"))
        emitted = 0
        while index < len(PARTS):
            part = PARTS[index]
            seeded = state.get(f"{part}:seeded") == "1"
            if not await budget.slot():
                return PollResult(done=False, events=emitted)
            items = await self._list(part)
            known = await snap.get(part, [str(i["id"]) for i in items])
            compact, events_of = (
                (job_compact, job_events) if part == "jobs" else (segment_compact, segment_events)
            )
            events: list[Event] = []
            commit = Commit()
            for item in items:
                object_id = str(item["id"])
                old, new = known.get(object_id), compact(item)
                if old != new:
                    commit.put(snap.key(part), object_id, new)
                    if seeded:
                        events += events_of(item, old)
            index += 1
            update = {"part": str(index % len(PARTS)), f"{part}:seeded": "1"}
            commit.state.update(update)
            emitted += await record(self.store, snap, events, commit)
            state.update(update)
        return PollResult(done=True, events=emitted)

    async def backfill(self, budget: Budget, progress: Progress) -> int:
        found: dict[str, list[dict[str, Any]]] = {}
        for part in PARTS:
            if not await budget.slot():
                return 0
            found[part] = await self._list(part)
        total = sum(len(items) for items in found.values())
        done = new = 0
        for part, items in found.items():
            event_type = JOB_CREATED if part == "jobs" else SEGMENT_CREATED
            events = [
                polled_event(
                    SOURCE,
                    event_type,
                    str(i["id"]),
                    i.get("modified"),
                    dict(i),
                    reason="backfill",
                    subject=str(i.get("slug_name") or i["id"]) if part == "segments" else None,
                )
                for i in items
            ]
            new += sum(await self.store.ingest(events)) if events else 0
            done += len(items)
            progress.advance(done, total)
        return new
