"""Lytho Workflow proofs, tasks, work requests, projects and campaigns as events (pollers).

Each kind is read with `GET {kind}/search?modifiedSince=…` from the latest modification
time seen, so a quiet cycle costs one request per kind. Paths, page parameters, the
filter's name (`workflow.search.modified_since`) and the field names (`workflow.fields.*`,
`workflow.compared.<kind>`) come from the Lytho profile: no public document gives them.
The first cycle of a kind reads all of it, page by page, and seeds the snapshot silently.

**When the filter is not honoured.** An object modified more than a second (`SKEW`, as
`bridge doctor` allows) before the filter's time that comes back from a filtered search
proves the API ignores the filter (a 400 to the filtered search that the same search
without it does not get proves it refused): the poller logs it, keeps the verdict for a
day (`VERDICT_SECONDS`; then a filtered search tests it again), and until then reads that
kind in *full passes* (every page, every cycle, within the pollers' share of the budget),
compared with the snapshot, so each change is reported once and none is missed. With
no filter in the profile (`workflow.search.modified_since: ""`) every cycle is a full
pass, and so it is for a kind whose objects carry no modification time (a work request,
in Lytho's reference). `filter_status` and the poller's status (dashboard, /api/pollers, /metrics'
`lytbridge_poller_full_passes`) say so.

Redis (under `<prefix>poll:lytho_workflow:`): one hash per kind (id → compact fields),
and `state`: `kind` (the kind the cycle is at), `<kind>:since`, `<kind>:page`,
`<kind>:high` (the latest modification time of the pass so far), `<kind>:seeded`,
`<kind>:timeless` (its last pass read objects with no modification time),
`<kind>:checked` (a filtered search was made), `<kind>:read` and `<kind>:prev` (how far the
pass got: a list that never ends is stopped, bridge/ingress/pollers/paging.py), and the
filter's verdict: `<kind>:filter` (`ignored` or `refused`), `<kind>:filter_param` (the
parameter it concerns: a profile naming another one tries the filter again),
`<kind>:filter_proof`, `<kind>:filter_at` (when, in Unix seconds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from redis.asyncio import Redis

from bridge.clients.lytho_profile import LythoProfile, default_profile, load_profile
from bridge.clients.lytho_workflow import LythoWorkflowClient
from bridge.clients.pages import Page, Walk
from bridge.errors import ConfigError, PermanentError
from bridge.events import Event
from bridge.ingress.pollers.paging import kept, restarting, resumed
from bridge.ingress.pollers.poller import POLL_RETRY, Budget, PollerDeps, PollResult, Progress
from bridge.ingress.pollers.snapshot import (
    Commit,
    Compact,
    Snapshot,
    changes,
    polled_event,
    record,
)

logger = logging.getLogger(__name__)

SOURCE: Final = "lytho_workflow"
# Proofs first: most rules are about them, and a cycle may span several runs. Campaigns
# last: a deployment that polled the four others keeps its cursor (`kind` is an index).
KINDS: Final = ("proof", "task", "workrequest", "project", "campaign")
CHANGES: Final = ("created", "updated", "status_changed")
EVENT_TYPES: Final = tuple(f"lytho.{kind}.{change}" for kind in KINDS for change in CHANGES)
IGNORED: Final = "ignored"
REFUSED: Final = "refused"
SKEW: Final = timedelta(seconds=1)  # an API may keep times to the second (bridge doctor's)
VERDICT_SECONDS: Final = 86_400  # a verdict is tested again after a day


@dataclass(frozen=True)
class Fields:
    """The field names the poller reads, from the profile (`workflow.fields.*`)."""

    id: str
    modified: str
    status: str
    compared: Mapping[str, tuple[str, ...]]

    @classmethod
    def of(cls, profile: LythoProfile) -> Fields:
        return cls(
            id=str(profile.value("workflow.fields.id")),
            modified=str(profile.value("workflow.fields.modified")),
            status=str(profile.value("workflow.fields.status")),
            compared={
                kind: tuple(str(f) for f in profile.value(f"workflow.compared.{kind}"))
                for kind in KINDS
            },
        )

    def compact(self, kind: str, item: Mapping[str, Any]) -> Compact:
        out: Compact = {name: item.get(name) for name in self.compared[kind]}
        out["id"] = item.get(self.id)
        out["modified"] = item.get(self.modified)
        return out

    def events(self, kind: str, item: Mapping[str, Any], old: Compact | None) -> list[Event]:
        """The event of one object read now, compared with its snapshot entry (at most one)."""
        object_id = str(item[self.id])
        modified = item.get(self.modified)
        time = modified if isinstance(modified, str) and modified else None
        data = dict(item)
        if old is None:
            created = f"lytho.{kind}.created"
            return [polled_event(SOURCE, created, object_id, modified, data, time=time)]
        diff = changes(old, self.compact(kind, item), self.compared[kind])
        if not diff:
            return []
        change = "status_changed" if self.status in diff else "updated"
        event_type = f"lytho.{kind}.{change}"
        return [polled_event(SOURCE, event_type, object_id, modified, data, change=diff, time=time)]


def instant(value: Any) -> datetime | None:
    """An ISO 8601 time as an aware datetime (UTC when it names no zone), else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def later(a: str, b: str, by: timedelta = timedelta(0)) -> bool:
    """Whether time `a` is more than `by` after time `b` (as times when both parse, else
    as text)."""
    ta, tb = instant(a), instant(b)
    return ta - by > tb if ta is not None and tb is not None else a > b


def _timeless(kind: str, state: Mapping[str, str]) -> bool:
    """A kind whose last pass read objects but no modification time: nothing to filter by."""
    return state.get(f"{kind}:timeless") == "1"


def filter_codes(state: Mapping[str, str], param: str) -> dict[str, str]:
    """Per kind, what the poller's state says of the modified-since filter named `param`."""
    out: dict[str, str] = {}
    for kind in KINDS:
        verdict = state.get(f"{kind}:filter", "")
        if not param:
            out[kind] = "absent"
        elif verdict and state.get(f"{kind}:filter_param") == param:
            out[kind] = verdict
        elif _timeless(kind, state):
            out[kind] = "timeless"
        else:
            out[kind] = "honoured" if state.get(f"{kind}:checked") else "unchecked"
    return out


async def filter_status(
    redis: Redis, key_prefix: str, profile: LythoProfile | None = None
) -> dict[str, str]:
    """Per kind, what the poller knows of the modified-since filter (for `bridge doctor`):
    `ignored` or `refused` (proved; full passes), `absent` (the profile names no filter:
    full passes), `timeless` (its objects carry no modification time: full passes),
    `honoured` (filtered searches made, nothing proved otherwise), `unchecked` (none yet).
    A verdict about a parameter other than the profile's (`profile`, else the defaults)
    no longer counts."""
    state = await Snapshot(redis, key_prefix, SOURCE).state()
    chosen = profile if profile is not None else default_profile()
    return filter_codes(state, str(chosen.value("workflow.search.modified_since")))


class WorkflowPoller:
    """Lytho Workflow changes by modification time (`BRIDGE_POLL_INTERVAL_LYTHO_WORKFLOW`)."""

    name = SOURCE
    event_types = EVENT_TYPES

    def __init__(self, deps: PollerDeps, profile: LythoProfile | None = None) -> None:
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
            profile=profile if profile is not None else load_profile(s.lytho_profile),
        )
        self.profile = self.client.profile
        self.fields = Fields.of(self.profile)
        self.since_param = str(self.profile.value("workflow.search.modified_since"))
        self.page_size = self.client.pages.size
        self.first_page = self.client.pages.first_page
        self.store = deps.store
        self.redis = deps.redis
        self.key_prefix = s.key_prefix
        self.snapshot = Snapshot(deps.redis, s.key_prefix, self.name)

    def full_passes(self, kind: str, state: Mapping[str, str]) -> bool:
        """Whether `kind` is read whole every cycle: no filter, one proved not to work, or
        objects that carry no modification time to filter from."""
        if not self.since_param or _timeless(kind, state):
            return True
        at = state.get(f"{kind}:filter_at", "")
        # A verdict a day old (or from before verdicts had a time) is tested again.
        fresh = at.isdigit() and time.time() - int(at) < VERDICT_SECONDS
        return (
            bool(state.get(f"{kind}:filter"))
            and state.get(f"{kind}:filter_param") == self.since_param
            and (fresh or state.get(f"{kind}:page", str(self.first_page)) != str(self.first_page))
        )

    def _walk(self, kind: str, state: Mapping[str, str]) -> Walk:
        what = f"GET {self.client.path('search', kind)}"
        pages = self.client.pages
        return resumed(state, f"{kind}:", what, "workflow", pages, self.page_size)

    async def _search(
        self, kind: str, page: int, since: str | None, walk: Walk
    ) -> tuple[Page, bool]:
        criteria = {self.since_param: since} if since and self.since_param else None
        found = await self.client.search_page(kind, page, criteria, page_size=self.page_size)
        return found, walk.last(page, found)

    async def _filtered(
        self, budget: Budget, kind: str, page: int, since: str, walk: Walk
    ) -> tuple[Page, bool, dict[str, str]] | None:
        """A filtered search, with the verdict it proves (state fields: the filter's
        fields cleared when it proves nothing, so a verdict tested again can be lifted)."""
        try:
            found, last = await self._search(kind, page, since, walk)
        except PermanentError as exc:
            if exc.status != 400:
                raise
            if not await budget.slot():
                return None
            # The same search without the filter: if that passes, the filter was the fault.
            found, last = await self._search(kind, page, None, walk)
            return found, last, self._verdict(kind, REFUSED, f"{exc}")
        for item in found.items:
            modified = item.get(self.fields.modified)
            if isinstance(modified, str) and later(since, modified, SKEW):
                proof = (
                    f"{kind} {item.get(self.fields.id)} modified {modified} came back for "
                    f"{self.since_param}={since}"
                )
                return found, last, self._verdict(kind, IGNORED, proof)
        cleared = {f"{kind}:{k}": "" for k in ("filter", "filter_proof", "filter_at")}
        return found, last, {f"{kind}:checked": "1", **cleared}

    def _verdict(self, kind: str, verdict: str, proof: str) -> dict[str, str]:
        logger.warning(
            "Lytho Workflow %s the %s filter for %s (%s): reading %s in full passes for a day, "
            "compared with the snapshot, then testing it again. If the API names the filter "
            'otherwise, set workflow.search.modified_since in BRIDGE_LYTHO_PROFILE ("" for none).',
            "ignores" if verdict == IGNORED else "refuses",
            self.since_param,
            kind,
            proof,
            kind,
        )
        return {
            f"{kind}:filter": verdict,
            f"{kind}:filter_param": self.since_param,
            f"{kind}:filter_proof": proof[:300],
            f"{kind}:filter_at": str(int(time.time())),
        }

    async def poll(self, budget: Budget) -> PollResult:
        snap, fields = self.snapshot, self.fields
        state = await snap.state()
        index = int(state.get("kind", "0")) % len(KINDS)
        emitted = 0
        while index < len(KINDS):
            kind = KINDS[index]
            seeded = state.get(f"{kind}:seeded") == "1"
            since = state.get(f"{kind}:since") or None
            page = int(state.get(f"{kind}:page", str(self.first_page)))
            high = state.get(f"{kind}:high") or since or ""
            if not await budget.slot():
                return PollResult(done=False, events=emitted)
            verdict: dict[str, str] = {}
            walk, start = self._walk(kind, state), {f"{kind}:page": str(self.first_page)}
            if since and not self.full_passes(kind, state):
                filtered = self._filtered(budget, kind, page, since, walk)
                outcome = await restarting(snap, start, f"{kind}:", filtered)
                if outcome is None:
                    return PollResult(done=False, events=emitted)
                found, last, verdict = outcome
            else:
                searched = self._search(kind, page, None, walk)
                found, last = await restarting(snap, start, f"{kind}:", searched)
            items = [i for i in found.items if i.get(fields.id) is not None]
            known = await snap.get(kind, [str(i[fields.id]) for i in items])
            events: list[Event] = []
            commit = Commit()
            for item in items:
                object_id = str(item[fields.id])
                old, new = known.get(object_id), fields.compact(kind, item)
                if old != new:
                    commit.put(snap.key(kind), object_id, new)
                    if seeded:
                        events += fields.events(kind, item, old)
                modified = item.get(fields.modified)
                if isinstance(modified, str) and (not high or later(modified, high)):
                    high = modified
            if last:
                index += 1
                # Objects read (this page, or a full one before it) but no time on them.
                timeless = not high and bool(items or page != self.first_page)
                update = {
                    "kind": str(index % len(KINDS)),
                    f"{kind}:page": str(self.first_page),
                    f"{kind}:high": "",
                    f"{kind}:since": high,
                    f"{kind}:seeded": "1",
                    f"{kind}:timeless": "1" if timeless else "",
                }
            else:
                update = {f"{kind}:page": str(page + 1), f"{kind}:high": high}
            update.update(verdict, **kept(walk, f"{kind}:", last))
            commit.state.update(update)
            emitted += await record(self.store, snap, events, commit)
            state.update(update)
        return PollResult(done=True, events=emitted)

    async def status_extra(self) -> dict[str, Any]:
        """What the poller's status adds (dashboard, /api/pollers, /metrics): which kinds
        are read in full passes, and a line saying why."""
        state = await self.snapshot.state()
        full = {kind: self.full_passes(kind, state) for kind in KINDS}
        notes: list[str] = []
        if not self.since_param:
            notes.append(
                "no modified-since filter in the Lytho profile "
                "(workflow.search.modified_since); full passes"
            )
        timeless = [k for k in KINDS if self.since_param and _timeless(k, state)]
        if timeless:
            notes.append(
                f"{', '.join(timeless)}: no {self.fields.modified} on the objects "
                "(workflow.fields.modified); full passes"
            )
        for verdict, said in ((IGNORED, "ignored"), (REFUSED, "refused")):
            kinds = [k for k in KINDS if full[k] and state.get(f"{k}:filter") == verdict]
            if kinds:
                notes.append(
                    f"{self.since_param} {said} by the API for {', '.join(kinds)}; full passes"
                )
        codes = filter_codes(state, self.since_param)
        filters = {
            kind: {"state": code, "proof": state.get(f"{kind}:filter_proof", "")}
            if code in (IGNORED, REFUSED)
            else {"state": code}
            for kind, code in codes.items()
        }
        return {"notes": notes, "full_passes": full, "filter": filters}

    async def backfill(self, budget: Budget, progress: Progress) -> int:
        # The first page of every kind first: their totals make the progress bar's total.
        firsts: dict[str, tuple[Page, bool]] = {}
        walks: dict[str, Walk] = {}
        total = 0
        for kind in KINDS:
            if not await budget.slot():
                return 0
            walks[kind] = self._walk(kind, {})
            found, last = await self._search(kind, self.first_page, None, walks[kind])
            firsts[kind] = (found, last)
            total += found.total if found.total is not None else len(found.items)
        done = new = 0
        fields = self.fields
        for kind in KINDS:
            found, last = firsts[kind]
            page = self.first_page
            while True:
                items = [i for i in found.items if i.get(fields.id) is not None]
                events = [
                    polled_event(
                        SOURCE,
                        f"lytho.{kind}.created",
                        str(i[fields.id]),
                        i.get(fields.modified),
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
                found, last = await self._search(kind, page, None, walks[kind])
        return new
