"""Lytho DAM assets as events: a rolling rescan, page by page, against a snapshot (pollers).

Lytho has no webhooks and no sort or filter by modification date, so every asset is
read again, a few pages per run, in passes. An asset that is new, edited, tagged or
untagged since the snapshot becomes an event when its page is read. An asset that a
whole pass did not see may have moved between pages while they shifted, so it is only
reported deleted after a GET of it answers 404.

Lytho's asset model is not fully documented, so every field counts: an asset whose
version or modification date moved, or any of whose fields changed, is `updated` (or
`tagged`/`untagged` when its tags are what changed), except for a short list of fields
that move by themselves (`IGNORED`, and the signature of signed links).

Pages, their shape and the asset's field names (tags, metadata, version, modification date)
are read as the Lytho API profile says (BRIDGE_LYTHO_PROFILE, docs/lytho-api.md).

Redis (under `<prefix>poll:lytho:`): `assets` (id → the asset without its volatile fields),
`seen` (ids read in this pass), `gone` (ids to confirm with a GET), `state` (`page`,
`pass`, `seeded`, `shape`: the shape of the last page read; `read`, `prev`: how far the
pass got, so a list that never ends is stopped, bridge/ingress/pollers/paging.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from bridge.clients.lytho import LythoClient
from bridge.clients.lytho_profile import LythoProfile, load_profile
from bridge.clients.pages import Walk
from bridge.errors import ConfigError, PermanentError
from bridge.events import Event
from bridge.ingress.pollers.paging import kept, restarting, resumed
from bridge.ingress.pollers.poller import POLL_RETRY, Budget, PollerDeps, PollResult, Progress
from bridge.ingress.pollers.snapshot import Commit, Compact, Snapshot, encode, polled_event, record

SOURCE: Final = "lytho"
CREATED: Final = "lytho.asset.created"
UPDATED: Final = "lytho.asset.updated"
DELETED: Final = "lytho.asset.deleted"
TAGGED: Final = "lytho.asset.tagged"
UNTAGGED: Final = "lytho.asset.untagged"
EVENT_TYPES: Final = (CREATED, UPDATED, DELETED, TAGGED, UNTAGGED)
# Fields that move without the asset changing: a view or download count, when it was last
# looked at. Never compared, at any depth, and never an event of their own.
IGNORED: Final = frozenset(
    {"viewCount", "downloadCount", "views", "downloads"}  # counts
    | {"lastViewedDate", "lastDownloadDate", "lastAccessDate"}  # when last looked at
)
# A link whose query carries one of these is signed: Lytho may sign it anew on every read,
# so it is compared without its query (a link to another file is still a change).
SIGNATURE_PARAMS: Final = frozenset(
    {"signature", "sig", "x-amz-signature", "x-goog-signature", "token", "expires"}
)


@dataclass(frozen=True)
class AssetFields:
    """The names of the asset fields the poller reads (`dam.fields.asset_*` of the profile)."""

    tags: str = "tags"
    metadata: str = "metadata"
    version: str = "version"
    modified: str = "modificationDate"

    @classmethod
    def of(cls, profile: LythoProfile) -> AssetFields:
        v = profile.value
        return cls(
            v("dam.fields.asset_tags"),
            v("dam.fields.asset_metadata"),
            v("dam.fields.asset_version"),
            v("dam.fields.asset_modified"),
        )

    @property
    def bookkeeping(self) -> tuple[str, str]:
        """Fields that move with every edit: on their own they are an `updated` (a new
        version with the same fields), but when the tags changed too, the tag events explain
        them."""
        return (self.version, self.modified)


FIELDS: Final = AssetFields()
# The snapshot entry's format: 2 keeps the whole asset (`{"v": 2, "asset": {…}}`); an
# entry without `v` is of the first format, which kept only a few fields (`COMPARED_V1`).
FORMAT: Final = 2
COMPARED_V1: Final = (
    "name",
    "fileName",
    "description",
    "fileType",
    "fileSize",
    "expirationDate",
    "metadata",
)
_SIGNED_URL = re.compile(r"^https?://[^?#]+\?", re.IGNORECASE)


def tag_names(asset: Mapping[str, Any], f: AssetFields = FIELDS) -> list[str]:
    """The names of an asset's tags, sorted (tags come as `{id, name}` objects)."""
    names = []
    for tag in asset.get(f.tags) or []:
        name = tag.get("name") if isinstance(tag, Mapping) else tag
        if name is not None:
            names.append(str(name))
    return sorted(set(names))


def metadata_values(metadata: Any) -> Any:
    """Lytho's `[{name, value}]` metadata as a `{name: value}` map (anything else as is)."""
    if not isinstance(metadata, list):
        return metadata
    return {str(m.get("name")): m.get("value") for m in metadata if isinstance(m, Mapping)}


def _unsigned(value: str) -> str:
    """A signed link without its query and fragment; any other string as it is."""
    if not _SIGNED_URL.match(value):
        return value
    try:
        parts = urlsplit(value)
    except ValueError:  # not a URL after all (say, a broken IPv6 host)
        return value
    if any(name.lower() in SIGNATURE_PARAMS for name, _ in parse_qsl(parts.query, True)):
        return urlunsplit(parts._replace(query="", fragment=""))
    return value


def _stable(value: Any) -> Any:
    """`value` without what moves by itself: ignored keys, the query of signed links."""
    if isinstance(value, Mapping):
        return {str(k): _stable(v) for k, v in value.items() if k not in IGNORED}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    if isinstance(value, str):
        return _unsigned(value)
    return value


def compact(asset: Mapping[str, Any], f: AssetFields = FIELDS) -> Compact:
    """What the snapshot keeps of an asset: every field but the volatile ones.

    Tags are kept as their sorted names and metadata as a `{name: value}` map, so that a
    reordering is no change.
    """
    fields = _stable({k: v for k, v in asset.items() if k not in (f.tags, f.metadata)})
    if f.metadata in asset:
        fields[f.metadata] = _stable(metadata_values(asset[f.metadata]))
    fields[f.tags] = tag_names(asset, f)
    return {"v": FORMAT, "asset": fields}


def _fields(entry: Mapping[str, Any], f: AssetFields = FIELDS) -> tuple[dict[str, Any], bool]:
    """The asset fields of a snapshot entry, and whether it is of the first format."""
    if entry.get("v") == FORMAT and isinstance(entry.get("asset"), Mapping):
        return dict(entry["asset"]), False
    # The first format: the compared fields, `tags`, `id`, `version` and `modified`.
    fields = {k: v for k, v in entry.items() if k != "modified"}
    fields[f.modified] = entry.get("modified")
    return fields, True


def _version(entry: Mapping[str, Any], f: AssetFields = FIELDS) -> Any:
    fields, _ = _fields(entry, f)
    version = fields.get(f.version)
    return version if version is not None else fields.get(f.modified)


def _same(a: Any, b: Any) -> bool:
    # By their JSON, so that 1, 1.0 and true are three values, and key order is no change.
    return a == b and encode({"v": a}) == encode({"v": b})


def differences(
    old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = ""
) -> dict[str, dict[str, Any]]:
    """`{field: {"from", "to"}}` for every field whose value differs, nested maps too.

    A field that is a map on both sides is listed as a whole and, below it, by each of its
    keys that differs (`metadata` and `metadata.status`), so a rule can ask for either.
    """
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if _same(before, after):
            continue
        out[prefix + name] = {"from": before, "to": after}
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            out.update(differences(before, after, f"{prefix}{name}."))
    return out


def changed(old: Compact | None, new: Compact) -> bool:
    """Whether the snapshot entry must be written again."""
    return old is None or encode(old) != encode(new)


def asset_events(
    asset: Mapping[str, Any], old: Compact | None, f: AssetFields = FIELDS
) -> list[Event]:
    """The events of one asset read now, compared with its snapshot entry."""
    new = compact(asset, f)
    object_id = str(asset["id"])
    version = _version(new, f)
    when = asset.get(f.modified)
    time = when if isinstance(when, str) and when else None
    now, _ = _fields(new, f)
    # Lytho gives tags as objects and metadata as a list; rules read names and values:
    # `{path: data.tag_names, contains: hero}`, `data.metadata_values.campaign`.
    values = now.get(f.metadata) if isinstance(now.get(f.metadata), dict) else {}
    data = {**asset, "tag_names": now[f.tags], "metadata_values": values}
    if old is None:
        return [polled_event(SOURCE, CREATED, object_id, version, data, time=time)]
    then, first_format = _fields(old, f)
    if first_format:
        # A snapshot written before every field was kept: compare what it has, so that an
        # upgrade does not report every asset as changed.
        now = {k: v for k, v in now.items() if k in then}
    before, after = set(then.get(f.tags) or []), set(now.get(f.tags) or [])
    edited = {k: v for k, v in differences(then, now).items() if k != f.tags}
    events = []
    if any(k not in f.bookkeeping for k in edited) or (edited and before == after):
        events.append(
            polled_event(SOURCE, UPDATED, object_id, version, data, change=edited, time=time)
        )
    tags = {"tags": {"from": sorted(before), "to": sorted(after)}}
    if after - before:
        added = {**data, "added_tags": sorted(after - before)}
        events.append(
            polled_event(SOURCE, TAGGED, object_id, version, added, change=tags, time=time)
        )
    if before - after:
        removed = {**data, "removed_tags": sorted(before - after)}
        events.append(
            polled_event(SOURCE, UNTAGGED, object_id, version, removed, change=tags, time=time)
        )
    return events


def deleted_event(object_id: str, old: Compact, f: AssetFields = FIELDS) -> Event:
    """`lytho.asset.deleted`, with what the snapshot last knew of the asset."""
    fields, _ = _fields(old, f)
    data = {k: v for k, v in fields.items() if k not in f.bookkeeping}
    data.setdefault("id", object_id)
    return polled_event(SOURCE, DELETED, object_id, _version(old, f), data)


class LythoAssetPoller:
    """Rolling rescan of the Lytho DAM's assets (`BRIDGE_POLL_INTERVAL_LYTHO`)."""

    name = SOURCE
    event_types = EVENT_TYPES
    page_size: int | None = None  # None: the profile's dam.pages.max_size

    def __init__(self, deps: PollerDeps) -> None:
        settings = deps.settings
        if settings.lytho_api_key is None:
            raise ConfigError("the Lytho poller needs LYTHO_API_KEY")
        profile = load_profile(settings.lytho_profile)
        # Its own client: no limiter of its own (the budget books each request) and no
        # retries (a retry would send a request no slot was booked for).
        self.client = LythoClient(
            deps.http,
            settings.lytho_api_url,
            settings.lytho_api_key,
            None,
            profile=profile,
            retry=POLL_RETRY,
        )
        self.style = profile.dam_pages
        self.size = self.page_size or self.style.size
        self.fields = AssetFields.of(profile)
        self.store = deps.store
        self.snapshot = Snapshot(deps.redis, settings.key_prefix, self.name)

    @property
    def page_shape(self) -> str | None:
        """The shape Lytho's pages came in ("content", "data", "list", …); None before any."""
        return self.client.page_shape

    async def status_extra(self) -> dict[str, Any]:
        """The shape Lytho's pages came in (status, dashboard), and a note when the profile
        says another."""
        shape = (await self.snapshot.state()).get("shape") or None
        wanted = self.style.items
        note = f"pages came as {shape!r}, not {wanted!r}: set dam.pages.items: {shape} in "
        return {
            "page_shape": shape,
            "notes": [note + "BRIDGE_LYTHO_PROFILE"] if shape and shape != wanted else [],
        }

    async def _page(self, page: int, walk: Walk) -> tuple[list[dict[str, Any]], bool, int | None]:
        """One page of assets: the items, whether it is the last page, and the total."""
        found = await self.client.page("assets", page, self.size)
        items = [a for a in found.items if a.get("id") is not None]
        return items, walk.last(page, found), found.total

    def _walk(self, state: Mapping[str, str]) -> Walk:
        what = f"GET {self.client.profile.dam_path('assets')}"
        return resumed(state, "", what, "dam", self.style, self.size)

    async def poll(self, budget: Budget) -> PollResult:
        snap = self.snapshot
        state = await snap.state()
        seeded = state.get("seeded") == "1"
        first = self.style.first_page
        page = max(first, int(state.get("page", first)))
        passes = int(state.get("pass", "0"))
        walk, emitted = self._walk(state), 0
        missing: set[str] = set()
        while True:
            gone = sorted(await snap.members("gone"))
            if gone:
                for object_id in gone:
                    if not await budget.slot():
                        return PollResult(done=False, events=emitted)
                    emitted += await self._confirm(object_id)
                return PollResult(done=True, events=emitted)
            if not await budget.slot():
                return PollResult(done=False, events=emitted)
            start = {"page": str(first)}  # a list that never ends: the pass starts again
            items, last, _ = await restarting(snap, start, "", self._page(page, walk))
            ids = [str(a["id"]) for a in items]
            known = await snap.get("assets", ids)
            events: list[Event] = []
            commit = Commit()
            for asset in items:
                object_id = str(asset["id"])
                old, new = known.get(object_id), compact(asset, self.fields)
                if changed(old, new):
                    commit.put(snap.key("assets"), object_id, new)
                    if seeded:
                        events += asset_events(asset, old, self.fields)
            commit.state.update(shape=self.client.page_shape or "", **kept(walk, "", last))
            if last:
                seen = await snap.members("seen")
                missing = await snap.ids("assets") - seen - set(ids)
                commit.delete(snap.key("seen"))
                commit.add(snap.key("gone"), missing)
                commit.state.update(page=str(first), seeded="1", **{"pass": str(passes + 1)})
            else:
                commit.add(snap.key("seen"), ids)
                commit.state["page"] = str(page + 1)
            emitted += await record(self.store, snap, events, commit)
            if not last:
                page += 1
                continue
            if not missing:
                return PollResult(done=True, events=emitted)
            seeded, page, passes = True, first, passes + 1

    async def _confirm(self, object_id: str) -> int:
        """Read an asset that a pass did not see: deleted only if Lytho answers 404."""
        snap = self.snapshot
        old = (await snap.get("assets", [object_id]))[object_id]
        commit = Commit()
        commit.remove(snap.key("gone"), [object_id])
        events: list[Event] = []
        try:
            asset = await self.client.get_asset(object_id)
        except PermanentError as exc:
            if exc.status != 404:
                raise
            commit.drop(snap.key("assets"), object_id)
            if old is not None:
                events.append(deleted_event(object_id, old, self.fields))
        else:
            new = compact(asset, self.fields)
            if changed(old, new):
                commit.put(snap.key("assets"), object_id, new)
                events += asset_events(asset, old, self.fields)
        return await record(self.store, snap, events, commit)

    async def backfill(self, budget: Budget, progress: Progress) -> int:
        page, done, new, walk = self.style.first_page, 0, 0, self._walk({})
        while await budget.slot():
            items, last, total = await self._page(page, walk)
            # An id of its own per object version: a second backfill emits nothing again.
            events = [
                polled_event(
                    SOURCE,
                    CREATED,
                    str(a["id"]),
                    _version(compact(a, self.fields), self.fields),
                    dict(a),
                    reason="backfill",
                )
                for a in items
            ]
            new += sum(await self.store.ingest(events)) if events else 0
            done += len(items)
            progress.advance(done, total)
            if last:
                break
            page += 1
        return new
