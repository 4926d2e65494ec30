"""Lytho DAM actions: tag and untag assets, add them to collections, set custom metadata."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from bridge.actions.action import Action, ActionDeps, StepCall
from bridge.clients.lytho import LythoClient
from bridge.errors import PermanentError
from bridge.schema import ActionSchema, Param

ID = ("string", "integer")
TAG_CACHE_SECONDS = 600.0

TAG = ActionSchema(
    name="lytho.tag_asset",
    description="Add tags (by name) to a Lytho asset; missing tags are created unless "
    "create_missing is false.",
    params={
        "asset_id": Param("asset_id", ID, required=True),
        "tags": Param("tags", ("array", "string"), required=True, description="tag names"),
        "create_missing": Param("create_missing", ("boolean",), description="default true"),
    },
)
UNTAG = ActionSchema(
    name="lytho.untag_asset",
    description="Remove tags (by name) from a Lytho asset; tags that do not exist are skipped.",
    params={
        "asset_id": Param("asset_id", ID, required=True),
        "tags": Param("tags", ("array", "string"), required=True, description="tag names"),
    },
)
ADD_TO_COLLECTION = ActionSchema(
    name="lytho.add_to_collection",
    description="Add one or more assets to a Lytho collection.",
    params={
        "collection_id": Param("collection_id", ID, required=True),
        "asset_id": Param("asset_id", ID),
        "asset_ids": Param("asset_ids", ("array",)),
    },
    one_of=(("asset_id", "asset_ids"),),
)
SET_METADATA = ActionSchema(
    name="lytho.set_metadata",
    description="Set custom metadata fields of a Lytho asset, keeping the other fields.",
    params={
        "asset_id": Param("asset_id", ID, required=True),
        "metadata": Param("metadata", ("object",), required=True, description="{name: value}"),
    },
)


def client(deps: ActionDeps, action: str) -> LythoClient:
    found = deps.lytho
    if found is None:
        raise PermanentError(f"{action} needs LYTHO_API_KEY to be set")
    return found


def tag_names(raw: Any) -> list[str]:
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise PermanentError("'tags' must be a tag name or a non-empty list of tag names")
    return list(dict.fromkeys(names))


async def tag_id(deps: ActionDeps, lytho: LythoClient, name: str, *, create: bool) -> Any:
    """The id of the tag called `name` (cached for 10 minutes); None if missing and not created."""
    cache = deps.lytho_tag_ids
    key = name.casefold()
    hit = cache.get(key)
    if hit is not None and hit[1] > time.monotonic():
        return hit[0]
    tag = await (lytho.ensure_tag(name) if create else lytho.get_tag_by_name(name))
    if tag is None:
        return None
    cache[key] = (tag["id"], time.monotonic() + TAG_CACHE_SECONDS)
    return tag["id"]


async def tag_asset(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
    lytho = client(deps, "lytho.tag_asset")
    create = call.params.get("create_missing", True) is not False
    names = tag_names(call.params["tags"])
    ids = []
    for name in names:
        found = await tag_id(deps, lytho, name, create=create)
        if found is None:
            raise PermanentError(
                f"lytho.tag_asset: tag {name!r} does not exist in Lytho; create it there, or "
                "set create_missing: true"
            )
        ids.append(found)
    await lytho.add_tags(call.params["asset_id"], ids)
    return {"asset_id": call.params["asset_id"], "tags": names, "tag_ids": ids}


async def untag_asset(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
    lytho = client(deps, "lytho.untag_asset")
    names = tag_names(call.params["tags"])
    found = {name: await tag_id(deps, lytho, name, create=False) for name in names}
    ids = [i for i in found.values() if i is not None]
    if ids:
        await lytho.remove_tags(call.params["asset_id"], ids)
    return {
        "asset_id": call.params["asset_id"],
        "removed": [n for n, i in found.items() if i is not None],
        "unknown": [n for n, i in found.items() if i is None],
    }


async def add_to_collection(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
    lytho = client(deps, "lytho.add_to_collection")
    ids = call.params.get("asset_ids")
    if ids is None:
        ids = [call.params["asset_id"]]
    if not isinstance(ids, list) or not ids:
        raise PermanentError("lytho.add_to_collection 'asset_ids' must be a non-empty list")
    await lytho.add_to_collection(call.params["collection_id"], ids)
    return {"collection_id": call.params["collection_id"], "asset_ids": ids}


async def set_metadata(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
    values = call.params["metadata"]
    if not isinstance(values, Mapping) or not values:
        raise PermanentError("lytho.set_metadata 'metadata' must be a non-empty object")
    lytho = client(deps, "lytho.set_metadata")
    result = await lytho.update_metadata(call.params["asset_id"], dict(values))
    return {"asset_id": call.params["asset_id"], "metadata": result}


ACTIONS = (
    Action(TAG, tag_asset),
    Action(UNTAG, untag_asset),
    Action(ADD_TO_COLLECTION, add_to_collection),
    Action(SET_METADATA, set_metadata),
)
