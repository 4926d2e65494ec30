"""Look-ups of Lytho DAM assets as steps: lytho.find_assets and lytho.get_asset.

Each reads, never writes; a run keeps their answers (bridge/actions/reads.py). Lytho
allows 20 requests a minute, so lytho.find_assets picks the cheapest way to read what it
needs, stops at `max_assets`, and when it needs more requests than fit in one step's time
it keeps how far it got and goes on in the next time slice (reads.Budget).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, Final, TypeVar

from bridge.actions.action import Action, ActionDeps, StepCall
from bridge.actions.lytho import client, tag_id, tag_names
from bridge.actions.reads import Budget, read_key
from bridge.clients.lytho import LythoClient
from bridge.clients.pages import Page, Walk
from bridge.errors import ClientError, PermanentError, RateLimited
from bridge.schema import ActionSchema, Param

T = TypeVar("T")
ID = ("string", "integer")
MAX_ASSETS_DEFAULT: Final = 100
MAX_ASSETS_CAP: Final = 1000

FIND = ActionSchema(
    name="lytho.find_assets",
    description="Find Lytho assets by tags, collection, part of the name and metadata values "
    "(all given filters must hold); result {assets, count, truncated}.",
    params={
        "tag": Param("tag", ("string", "array"), description="a tag name or a list of names"),
        "collection_id": Param("collection_id", ID, description="only this collection's"),
        "name": Param("name", ("string",), description="part of the name, any case"),
        "metadata": Param("metadata", ("object",), description="{field: value}"),
        "max_assets": Param(
            "max_assets",
            ("integer",),
            description=f"default {MAX_ASSETS_DEFAULT}, at most {MAX_ASSETS_CAP}",
            minimum=1,
            maximum=MAX_ASSETS_CAP,
        ),
    },
    results={
        "assets": "array",
        "count": "integer",
        "truncated": "boolean",
        "unknown_tags": "array",
    },
)
GET_ASSET = ActionSchema(
    name="lytho.get_asset",
    description="Read one Lytho asset, with tag_names and metadata_values as events have them.",
    params={"asset_id": Param("asset_id", ID, required=True)},
    results={"tag_names": "array", "metadata_values": "object"},
)
# What events and look-ups show of an asset.


def names_of_tags(tags: Any) -> list[str]:
    """The names of an asset's tags, sorted (as the DAM poller's events give them)."""
    names = {str(t.get("name") if isinstance(t, Mapping) else t) for t in tags or []}
    return sorted(names - {"None"})


def values_of_metadata(metadata: Any) -> dict[str, Any]:
    """Lytho's `[{name, value}]` metadata as a `{name: value}` map."""
    if isinstance(metadata, Mapping):
        return dict(metadata)
    if not isinstance(metadata, list):
        return {}
    return {str(m.get("name")): m.get("value") for m in metadata if isinstance(m, Mapping)}


def shown_asset(lytho: LythoClient, asset: Mapping[str, Any]) -> dict[str, Any]:
    fields = lytho.fields
    return {
        **asset,
        "tag_names": names_of_tags(asset.get(fields["tags"])),
        "metadata_values": values_of_metadata(asset.get(fields["metadata"])),
    }


def prefixed(action: str, exc: ClientError) -> ClientError:
    message = f"{action}: {exc}"
    if isinstance(exc, RateLimited):
        return RateLimited(message, retry_after=exc.retry_after, status=exc.status)
    return type(exc)(message, status=exc.status)


async def get_asset(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
    lytho = client(deps, "lytho.get_asset")
    try:
        return shown_asset(
            lytho, await lytho.get_asset(one_id(call.params["asset_id"], "asset_id"))
        )
    except ClientError as exc:
        raise prefixed("lytho.get_asset", exc) from None


def one_id(value: Any, name: str) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise PermanentError(f"'{name}' must be one id (a string or a whole number)")
    return value


# lytho.find_assets.


class Filters:
    """What an asset must have to be found: every given filter holds."""

    def __init__(self, params: Mapping[str, Any], tag_ids: list[str], tag_words: list[str]):
        self.tag_ids, self.tag_words = tag_ids, tag_words
        name = params.get("name")
        if name is not None and not isinstance(name, str):
            raise PermanentError("lytho.find_assets 'name' must be a string")
        self.name = name.casefold() if name else None
        metadata = params.get("metadata")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise PermanentError("lytho.find_assets 'metadata' must be an object {field: value}")
        self.metadata = dict(metadata) if metadata else None

    @property
    def active(self) -> bool:
        return bool(self.tag_ids) or self.name is not None or self.metadata is not None

    def holds(self, lytho: LythoClient, asset: Mapping[str, Any]) -> bool:
        f = lytho.fields
        if self.name is not None and self.name not in str(asset.get(f["name"]) or "").casefold():
            return False
        if self.tag_ids:
            carried = asset.get(f["tags"]) or []
            ids = {str(t.get("id")) for t in carried if isinstance(t, Mapping)}
            words = {n.casefold() for n in names_of_tags(carried)}
            pairs = zip(self.tag_ids, self.tag_words, strict=True)
            if not all(i in ids or w in words for i, w in pairs):
                return False
        if self.metadata is not None:
            have = values_of_metadata(asset.get(f["metadata"]))
            return all(_same(have.get(k), v) for k, v in self.metadata.items())
        return True


def _same(have: Any, want: Any) -> bool:
    """Equal, or the same text (a template renders 2026; Lytho may keep "2026")."""
    if have == want:
        return True
    scalar = (str, int, float)
    return isinstance(have, scalar) and isinstance(want, scalar) and str(have) == str(want)


def _max_assets(raw: Any) -> int:
    value = MAX_ASSETS_DEFAULT if raw is None else raw
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ASSETS_CAP:
        raise PermanentError(
            f"lytho.find_assets 'max_assets' must be a whole number from 1 to {MAX_ASSETS_CAP}, "
            f"not {raw!r}"
        )
    return value


class Find:
    """One lytho.find_assets, resumable: its state is plain JSON kept in the step's memo."""

    ACTION = "lytho.find_assets"

    def __init__(self, deps: ActionDeps, call: StepCall, lytho: LythoClient) -> None:
        self.deps, self.call, self.lytho = deps, call, lytho
        self.most = _max_assets(call.params.get("max_assets"))
        self.key = read_key(self.ACTION, call.params)
        self.budget = Budget(call.deadline, resumable=deps.memo is not None)
        self.state: dict[str, Any] = {"key": self.key, "run": call.run, "found": []}

    async def load(self) -> None:
        if self.deps.memo is not None:
            kept = await self.deps.memo.get(self.call)
            if kept.get("key") == self.key and kept.get("run") == self.call.run:
                self.state = kept

    async def save(self, value: Mapping[str, Any] | None = None) -> None:
        if self.deps.memo is not None:
            await self.deps.memo.put(self.call, self.state if value is None else value)

    async def ask(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        """One request, if it fits in the step's time; else keep the state and stop."""
        if not self.budget.room():
            await self.save()
            found = len(self.state["found"])
            raise self.budget.stop(self.ACTION, f"{found} found so far, {what} next")
        self.budget.start()
        try:
            return await request()
        except PermanentError:
            raise
        except ClientError as exc:
            await self.save()  # a retry resumes here
            raise prefixed(self.ACTION, exc) from None
        finally:
            self.budget.done()

    def take(self, asset: Mapping[str, Any], filters: Filters) -> None:
        found = self.state["found"]
        if filters.holds(self.lytho, asset) and all(a["id"] != asset["id"] for a in found):
            found.append(shown_asset(self.lytho, asset))

    @property
    def full(self) -> bool:
        return len(self.state["found"]) >= self.most

    async def run(self) -> dict[str, Any]:
        await self.load()
        try:
            names = tag_names(self.call.params["tag"]) if "tag" in self.call.params else []
        except PermanentError:
            raise PermanentError(
                f"{self.ACTION} 'tag' must be a tag name or a non-empty list of tag names"
            ) from None
        ids: list[str] = []
        for name in names:
            found = await self.ask(
                f"tag {name!r}", partial(tag_id, self.deps, self.lytho, name, create=False)
            )
            if found is None:
                return self.result(truncated=False, unknown=[name])
            ids.append(str(found))
        filters = Filters(self.call.params, ids, [n.casefold() for n in names])
        if "collection_id" in self.call.params and "members" not in self.state:
            self.state["members"] = await self.members()
            await self.save()
        truncated = await self.read(filters)
        await self.save({})  # finished: a replay reads anew
        return self.result(truncated=truncated, unknown=[])

    def result(self, *, truncated: bool, unknown: list[str]) -> dict[str, Any]:
        found = self.state["found"]
        return {
            "assets": found,
            "count": len(found),
            "truncated": truncated,
            "unknown_tags": unknown,
        }

    async def members(self) -> list[str]:
        collection_id = one_id(self.call.params["collection_id"], "collection_id")
        collection = await self.ask(
            "the collection", lambda: self.lytho.get_collection(collection_id)
        )
        refs = collection.get("assets")
        if not isinstance(refs, list):
            raise PermanentError(
                f"{self.ACTION}: collection {collection_id} was answered without an 'assets' "
                "list of {id}; check dam.paths.collection with bridge doctor"
            )
        ids = [r.get("id") if isinstance(r, Mapping) else r for r in refs]
        return list(dict.fromkeys(str(i) for i in ids if i is not None))

    async def read(self, filters: Filters) -> bool:
        """Read until done or `max_assets` found; whether assets were left unread."""
        members = self.state.get("members")
        if members is not None and not members:
            return False
        plan = self.state.get("plan")
        if plan is None:
            # A collection of one: one GET. Otherwise the first page of the list says how
            # many pages there are, and the cheaper way goes on.
            plan = "members" if members is not None and len(members) == 1 else "scan"
            self.state["plan"] = plan
        if plan == "scan":
            return await self.scan(filters, members)
        return await self.each_member(filters, members or [])

    async def scan(self, filters: Filters, members: list[str] | None) -> bool:
        style = self.lytho.profile.dam_pages
        wanted = set(members) if members is not None else None
        what = f"GET {self.lytho.profile.dam_path('assets')}"
        walk = Walk(what, "dam", style, style.size, self.state.get("read", 0))
        walk.previous = self.state.get("prev", "")
        while True:
            number = self.state.setdefault("page", style.first_page)
            page = await self.ask(
                f"page {number}", partial(self.lytho.page, "assets", number, style.size)
            )
            last = walk.last(number, page)  # a repeated page or too many: PermanentError
            self.state.update(read=walk.read, prev=walk.previous)
            seen = set(self.state.get("seen") or [])
            for asset in page.items:
                if self.full:
                    return True  # assets left on this page
                if wanted is None or str(asset.get("id")) in wanted:
                    seen.add(str(asset.get("id")))
                    self.take(asset, filters)
            self.state["page"] = number + 1
            if wanted is not None:
                self.state["seen"] = sorted(seen)
                if wanted <= seen or last:
                    return False
                left = len(wanted - seen)
                if not filters.active:  # every member is found: GETs stop at max_assets
                    left = min(left, self.most - len(self.state["found"]))
                if number == style.first_page and self.cheaper_by_member(page, left):
                    self.state["plan"] = "members"
                    await self.save()
                    return await self.each_member(filters, members or [])
            if last:
                return False
            if self.full:
                return True  # pages left
            await self.save()

    def cheaper_by_member(self, page: Page, left: int) -> bool:
        """After the first page: whether GETs of the members left cost fewer requests than
        the pages left (unknown when the page tells no total: then GETs, bounded)."""
        size = self.lytho.profile.dam_pages.size
        pages = page.total_pages
        if pages is None and page.total is not None:
            pages = math.ceil(page.total / size)
        return pages is None or left < pages - 1

    async def each_member(self, filters: Filters, members: list[str]) -> bool:
        seen = set(self.state.get("seen") or [])
        left = [m for m in members if m not in seen]
        while left:
            if self.full:
                return True
            asset_id = left.pop(0)
            try:
                asset = await self.ask(f"asset {asset_id}", partial(self.lytho.get_asset, asset_id))
            except PermanentError as exc:
                if exc.status != 404:  # a member deleted since: not found, not an error
                    raise prefixed(self.ACTION, exc) from None
            else:
                self.take(asset, filters)
            seen.add(asset_id)
            self.state["seen"] = sorted(seen)
            await self.save()
        return False


async def find_assets(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
    try:
        return await Find(deps, call, client(deps, Find.ACTION)).run()
    except PermanentError as exc:
        if str(exc).startswith(Find.ACTION):
            raise
        raise prefixed(Find.ACTION, exc) from None


ACTIONS = (
    Action(FIND, find_assets),
    Action(GET_ASSET, get_asset),
)
