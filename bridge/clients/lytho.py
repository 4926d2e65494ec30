"""Client of the Lytho DAM API: assets, tags, collections, custom metadata (clients)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote

from bridge.clients.base import KeyedClient
from bridge.errors import ClientError, PermanentError

logger = logging.getLogger(__name__)

Id = str | int

# The paths of the Lytho DAM API, relative to its base URL (`…/v1/`), live in
# lytho_paths.json beside this module: Lytho's public documentation names the endpoints
# but not all their paths, so several are ours to define, and the sandbox
# (bridge/sandbox/lytho.py) reads the same file, so they are defined once. Bodies:
#   asset            GET → asset; PUT the whole asset (missing fields are erased) → asset
#   asset_tags       POST {"tagIds": [...]} adds, DELETE ?tagIds=…&tagIds=… removes → asset
#   asset_metadata   GET → {"assetId", "metadata": [{"name", "value"}]};
#                    POST {"metadata": [...]} adds (409 if a name exists);
#                    PUT {"metadata": [...]} replaces the whole set; DELETE ?names=… removes
#   tags             GET ?page&size[&name] → page of tags; POST {"name", "nameTranslation"} → 201
#   collection_assets  POST {"assetIds": [...]} adds, DELETE ?assetIds=… removes → collection
# List endpoints answer Spring pages: {"content": [...], "number", "size", "totalPages",
# "totalElements", "last", …}, `page` counted from 0, `size` at most 50.
LYTHO_PATHS: Final[Mapping[str, str]] = MappingProxyType(
    json.loads(Path(__file__).with_name("lytho_paths.json").read_text(encoding="utf-8"))["paths"]
)
MAX_PAGE_SIZE: Final = 50
# Fields of an asset that the server manages; sent back as read, never changed here.
_READ_ONLY = frozenset({"id", "creationDate", "modificationDate", "version"})


def _path(name: str, **ids: Id) -> str:
    return LYTHO_PATHS[name].format(**{k: quote(str(v), safe="") for k, v in ids.items()})


class LythoClient(KeyedClient):
    """The Lytho DAM API with an `x-api-key`; every write sends the whole object back."""

    api = "Lytho"
    limiter_key = "lytho"
    credential_hint = "check LYTHO_API_KEY"
    credential_header = "x-api-key"

    async def _pages(
        self, path: str, params: Mapping[str, Any] | None = None, size: int = MAX_PAGE_SIZE
    ) -> AsyncIterator[dict[str, Any]]:
        """Every item of a paged list, fetching page after page as they are consumed."""
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise ValueError(f"page size must be between 1 and {MAX_PAGE_SIZE}, not {size}")
        page = 0
        while True:
            body = await self.request_json(
                "GET", path, params={**(params or {}), "page": page, "size": size}
            )
            if not isinstance(body, dict) or not isinstance(body.get("content"), list):
                raise ClientError(f"GET {path}: expected a page with 'content', got {body!r:.100}")
            items: list[dict[str, Any]] = body["content"]
            for item in items:
                yield item
            total_pages = body.get("totalPages")
            if (
                not items
                or body.get("last") is True
                or (isinstance(total_pages, int) and page + 1 >= total_pages)
            ):
                return
            page += 1

    async def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = await self.request_json(method, path, **kwargs)
        if not isinstance(body, dict):
            raise ClientError(f"{method} {path}: expected a JSON object, got {body!r:.100}")
        return body

    # Assets.

    def iter_assets(self, *, size: int = MAX_PAGE_SIZE) -> AsyncIterator[dict[str, Any]]:
        """Every asset, page by page."""
        return self._pages(_path("assets"), size=size)

    async def get_asset(self, asset_id: Id) -> dict[str, Any]:
        return await self._object("GET", _path("asset", asset_id=asset_id))

    async def update_asset(
        self, asset_id: Id, changes: Mapping[str, Any], *, attempts: int = 3
    ) -> dict[str, Any]:
        """Change some fields of an asset, keeping every other field as it is; return it.

        Lytho erases what a PUT leaves out, so this reads the whole asset, applies
        `changes` and writes the whole object back. A 409 (someone else wrote in between)
        reads again and retries, `attempts` times in all.
        """
        bad = _READ_ONLY.intersection(changes)
        if bad:
            raise ValueError(f"cannot change read-only asset fields: {', '.join(sorted(bad))}")
        for attempt in range(1, attempts + 1):
            current = await self.get_asset(asset_id)
            try:
                return await self._object(
                    "PUT", _path("asset", asset_id=asset_id), json={**current, **changes}
                )
            except PermanentError as exc:
                if exc.status != 409 or attempt == attempts:
                    raise
                logger.info("asset %s changed while updating it; reading it again", asset_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def add_tags(self, asset_id: Id, tag_ids: Iterable[Id]) -> dict[str, Any]:
        """Add tags (by id) to an asset; return the asset."""
        return await self._object(
            "POST", _path("asset_tags", asset_id=asset_id), json={"tagIds": list(tag_ids)}
        )

    async def remove_tags(self, asset_id: Id, tag_ids: Iterable[Id]) -> dict[str, Any]:
        """Remove tags (by id) from an asset; return the asset."""
        return await self._object(
            "DELETE",
            _path("asset_tags", asset_id=asset_id),
            params=[("tagIds", str(t)) for t in tag_ids],
        )

    # Custom metadata on assets.

    async def get_metadata(self, asset_id: Id) -> dict[str, Any]:
        """The custom metadata of an asset as {name: value}."""
        body = await self._object("GET", _path("asset_metadata", asset_id=asset_id))
        return {item["name"]: item.get("value") for item in body.get("metadata") or []}

    async def add_metadata(self, asset_id: Id, values: Mapping[str, Any]) -> dict[str, Any]:
        """Add metadata fields that the asset does not have yet (409 if one exists)."""
        body = await self._object(
            "POST", _path("asset_metadata", asset_id=asset_id), json=_metadata(values)
        )
        return {item["name"]: item.get("value") for item in body.get("metadata") or []}

    async def update_metadata(self, asset_id: Id, values: Mapping[str, Any]) -> dict[str, Any]:
        """Set some metadata fields, keeping the others (read, merge, write the whole set)."""
        merged = {**await self.get_metadata(asset_id), **values}
        body = await self._object(
            "PUT", _path("asset_metadata", asset_id=asset_id), json=_metadata(merged)
        )
        return {item["name"]: item.get("value") for item in body.get("metadata") or []}

    async def remove_metadata(self, asset_id: Id, names: Iterable[str]) -> dict[str, Any]:
        """Remove metadata fields by name; return what is left."""
        body = await self._object(
            "DELETE",
            _path("asset_metadata", asset_id=asset_id),
            params=[("names", n) for n in names],
        )
        return {item["name"]: item.get("value") for item in body.get("metadata") or []}

    # Tags.

    def iter_tags(
        self, *, name: str | None = None, size: int = MAX_PAGE_SIZE
    ) -> AsyncIterator[dict[str, Any]]:
        """Every tag (those matching `name`, where the server filters), page by page."""
        return self._pages(_path("tags"), {"name": name} if name else None, size=size)

    async def get_tag(self, tag_id: Id) -> dict[str, Any]:
        return await self._object("GET", _path("tag", tag_id=tag_id))

    async def get_tag_by_name(self, name: str) -> dict[str, Any] | None:
        """The tag called `name` (case-insensitive), or None."""
        wanted = name.casefold()
        async for tag in self.iter_tags(name=name):
            if str(tag.get("name", "")).casefold() == wanted and not tag.get("deleted"):
                return tag
        return None

    async def create_tag(
        self, name: str, translations: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        return await self._object(
            "POST", _path("tags"), json={"name": name, "nameTranslation": dict(translations or {})}
        )

    async def ensure_tag(self, name: str) -> dict[str, Any]:
        """The tag called `name`, created if it does not exist yet."""
        found = await self.get_tag_by_name(name)
        if found is not None:
            return found
        try:
            return await self.create_tag(name)
        except PermanentError as exc:
            # Another process created it between our look-up and our create.
            if exc.status != 409:
                raise
            found = await self.get_tag_by_name(name)
            if found is None:
                raise
            return found

    # Collections.

    def iter_collections(self, *, size: int = MAX_PAGE_SIZE) -> AsyncIterator[dict[str, Any]]:
        return self._pages(_path("collections"), size=size)

    async def get_collection(self, collection_id: Id) -> dict[str, Any]:
        return await self._object("GET", _path("collection", collection_id=collection_id))

    async def add_to_collection(self, collection_id: Id, asset_ids: Iterable[Id]) -> dict[str, Any]:
        """Add assets to a collection; return the collection."""
        return await self._object(
            "POST",
            _path("collection_assets", collection_id=collection_id),
            json={"assetIds": list(asset_ids)},
        )

    async def remove_from_collection(
        self, collection_id: Id, asset_ids: Iterable[Id]
    ) -> dict[str, Any]:
        """Remove assets from a collection; return the collection."""
        return await self._object(
            "DELETE",
            _path("collection_assets", collection_id=collection_id),
            params=[("assetIds", str(a)) for a in asset_ids],
        )


def _metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    return {"metadata": [{"name": name, "value": value} for name, value in values.items()]}
