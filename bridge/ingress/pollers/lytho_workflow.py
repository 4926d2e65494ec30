"""Lytho Workflow work requests, tasks, proofs and projects as events (pollers).

Each kind is read with `GET /{kind}/search?modifiedSince=…` from the latest `modifiedAt`
seen, so a quiet cycle costs one request per kind. (`modifiedSince` is our definition,
shared with the sandbox, like the page shape.) The first cycle of a kind reads all of
it, page by page, and seeds the snapshot silently.

Redis (under `<prefix>poll:lytho_workflow:`): one hash per kind (id → compact fields),
and `state`: `kind` (the kind the cycle is at), `<kind>:since`, `<kind>:page`,
`<kind>:high` (the latest `modifiedAt` of the pass so far), `<kind>:seeded`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from bridge.clients.lytho_workflow import LythoWorkflowClient
from bridge.errors import ClientError, ConfigError
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

SOURCE: Final = "lytho_workflow"
# Proofs first: most rules are about them, and a cycle may span several runs.
KINDS: Final = ("proof", "task", "workrequest", "project")
CHANGES: Final = ("created", "updated", "status_changed")
EVENT_TYPES: Final = tuple(f"lytho.{kind}.{change}" for kind in KINDS for change in CHANGES)
# The fields compared per kind: `status` makes `status_changed`, the others `updated`.
COMPARED: Final[Mapping[str, tuple[str, ...]]] = {
    "proof": ("status", "name", "version", "assetId", "taskId", "projectId", "reviewerIds"),
    "task": ("status", "name", "assigneeId", "dueDate", "projectId"),
    "workrequest": ("status", "title", "requesterId", "projectId"),
    "project": ("status", "name", "ownerId", "dueDate", "priority", "campaignId"),
}
PAGE_SIZE: Final = 30


def compact(kind: str, item: Mapping[str, Any]) -> Compact:
    out: Compact = {name: item.get(name) for name in COMPARED[kind]}
    out["id"] = item.get("id")
    out["modified"] = item.get("modifiedAt")
    return out


def item_events(kind: str, item: Mapping[str, Any], old: Compact | None) -> list[Event]:
    """The event of one object read now, compared with its snapshot entry (at most one)."""
    object_id = str(item["id"])
    modified = item.get("modifiedAt")
    time = modified if isinstance(modified, str) and modified else None
    data = dict(item)
    if old is None:
        return [polled_event(SOURCE, f"lytho.{kind}.created", object_id, modified, data, time=time)]
    diff = changes(old, compact(kind, item), COMPARED[kind])
    if not diff:
        return []
    change = "status_changed" if "status" in diff else "updated"
    return [
        polled_event(
            SOURCE, f"lytho.{kind}.{change}", object_id, modified, data, change=diff, time=time
        )
    ]


def _items(body: Any, kind: str) -> tuple[list[dict[str, Any]], int, int | None, int | None]:
    """A search page's objects, how many it held, its total number of pages and of objects."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise ClientError(f"GET {kind}/search: expected a page with 'items', got {body!r:.100}")
    items = [i for i in body["items"] if isinstance(i, dict) and i.get("id") is not None]
    pages, total = body.get("totalPages"), body.get("totalCount")
    return (
        items,
        len(body["items"]),
        pages if isinstance(pages, int) else None,
        total if isinstance(total, int) else None,
    )


class WorkflowPoller:
    """Lytho Workflow changes by `modifiedAt` (`BRIDGE_POLL_INTERVAL_LYTHO_WORKFLOW`)."""

    name = SOURCE
    event_types = EVENT_TYPES
    page_size = PAGE_SIZE

    def __init__(self, deps: PollerDeps) -> None:
        s = deps.settings
        if not (s.lytho_client_id and s.lytho_client_secret and s.lytho_token_url):
            raise ConfigError(
                "the Lytho Workflow poller needs LYTHO_CLIENT_ID, LYTHO_CLIENT_SECRET "
                "and LYTHO_TOKEN_URL"
            )
        self.client = LythoWorkflowClient(
            deps.http,
            s.lytho_workflow_api_url,
            s.lytho_token_url,
            s.lytho_client_id,
            s.lytho_client_secret,
            None,
            retry=POLL_RETRY,
        )
        self.store = deps.store
        self.snapshot = Snapshot(deps.redis, s.key_prefix, self.name)

    async def _search(
        self, kind: str, page: int, since: str | None
    ) -> tuple[list[dict[str, Any]], bool, int | None]:
        params: dict[str, Any] = {"page": page, "pageSize": self.page_size}
        if since:
            params["modifiedSince"] = since
        body = await self.client.request_json("GET", f"{kind}/search", params=params)
        items, held, pages, total = _items(body, kind)
        last = held < self.page_size or (pages is not None and page >= pages)
        return items, last, total

    async def poll(self, budget: Budget) -> PollResult:
        snap = self.snapshot
        state = await snap.state()
        index = int(state.get("kind", "0"))
        emitted = 0
        while index < len(KINDS):
            kind = KINDS[index]
            seeded = state.get(f"{kind}:seeded") == "1"
            since = state.get(f"{kind}:since") or None
            page = int(state.get(f"{kind}:page", "1"))
            high = state.get(f"{kind}:high") or since or ""
            if not await budget.slot():
                return PollResult(done=False, events=emitted)
            items, last, _ = await self._search(kind, page, since)
            known = await snap.get(kind, [str(i["id"]) for i in items])
            events: list[Event] = []
            commit = Commit()
            for item in items:
                object_id = str(item["id"])
                old, new = known.get(object_id), compact(kind, item)
                if old != new:
                    commit.put(snap.key(kind), object_id, new)
                    if seeded:
                        events += item_events(kind, item, old)
                modified = item.get("modifiedAt")
                if isinstance(modified, str) and modified > high:
                    high = modified
            if last:
                index += 1
                update = {
                    "kind": str(index % len(KINDS)),
                    f"{kind}:page": "1",
                    f"{kind}:high": "",
                    f"{kind}:since": high,
                    f"{kind}:seeded": "1",
                }
            else:
                update = {f"{kind}:page": str(page + 1), f"{kind}:high": high}
            commit.state.update(update)
            emitted += await record(self.store, snap, events, commit)
            state.update(update)
        return PollResult(done=True, events=emitted)

    async def backfill(self, budget: Budget, progress: Progress) -> int:
        # The first page of every kind first: their totals make the progress bar's total.
        firsts: dict[str, tuple[list[dict[str, Any]], bool]] = {}
        total = 0
        for kind in KINDS:
            if not await budget.slot():
                return 0
            items, last, count = await self._search(kind, 1, None)
            firsts[kind] = (items, last)
            total += count if count is not None else len(items)
        done = new = 0
        for kind in KINDS:
            items, last = firsts[kind]
            page = 1
            while True:
                events = [
                    polled_event(
                        SOURCE,
                        f"lytho.{kind}.created",
                        str(i["id"]),
                        i.get("modifiedAt"),
                        dict(i),
                        reason="backfill",
                    )
                    for i in items
                ]
                new += sum(await self.store.ingest(events)) if events else 0
                done += len(items)
                progress.advance(done, max(total, done))
                if last or not await budget.slot():
                    break
                page += 1
                items, last, _ = await self._search(kind, page, None)
        return new
