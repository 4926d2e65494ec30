"""Client of the Lytho DAM API: assets, tags, collections, custom metadata, uploads (clients).

Every path, method, page parameter, page shape and field name it uses comes from the Lytho
API profile (bridge/clients/lytho_profile.yaml, overridable with BRIDGE_LYTHO_PROFILE):
Lytho's documents name the operations but not most of their paths, so each is an entry a
team checks with `bridge doctor` and fixes without a release. PROFILE.md gives the bodies.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any
from urllib.parse import urljoin

import httpx

from bridge.clients.base import KeyedClient, RetryPolicy, Sleep
from bridge.clients.lytho_profile import LIST, LythoProfile, default_profile
from bridge.clients.lytho_upload import UploadLink, send_to_link
from bridge.clients.pages import Page, Walk, read_page
from bridge.clients.ratelimit import Limiter
from bridge.errors import ClientError, PermanentError
from bridge.settings import Secret

logger = logging.getLogger(__name__)

Id = str | int


class LythoClient(KeyedClient):
    """The Lytho DAM API as the profile describes it; every write sends whole objects back."""

    api = "Lytho"
    limiter_key = "lytho"

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        api_key: Secret,
        limiter: Limiter | None = None,
        *,
        profile: LythoProfile | None = None,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        super().__init__(
            http, base_url, api_key, limiter, retry=retry, timeout=timeout, sleep=sleep
        )
        self.profile = profile or default_profile()
        self.credential_header = str(self.profile.value("dam.auth.header"))
        self.auth_scheme = str(self.profile.value("dam.auth.scheme"))
        shown = f"{self.auth_scheme} <key>" if self.auth_scheme else "the bare key"
        self.credential_hint = (
            f"check LYTHO_API_KEY (sent as {shown} in {self.credential_header}; "
            "dam.auth.header and dam.auth.scheme in BRIDGE_LYTHO_PROFILE)"
        )
        self.fields = {
            name: str(self.profile.value(f"dam.fields.asset_{name}"))
            for name in ("tags", "metadata", "version", "modified", "name", "file_name")
        }
        # The shape the last page came in ("content", "data", "list", …); None before any.
        self.page_shape: str | None = None
        self._shape_told = False

    async def _auth_headers(self) -> dict[str, str]:
        key = self._credential.get()
        return {self.credential_header: f"{self.auth_scheme} {key}" if self.auth_scheme else key}

    # Pages.

    async def page(
        self, name: str, number: int, size: int, params: Mapping[str, Any] | None = None
    ) -> Page:
        """Page `number` (counted as the API counts) of the list `dam.paths.<name>`."""
        style = self.profile.dam_pages
        path = self.profile.dam_path(name)
        query = {**(params or {}), style.page_param: number, style.size_param: size}
        try:
            body = await self.request_json("GET", path, params=query)
        except PermanentError as exc:
            raise _hinted(exc, f"dam.paths.{name}") from None
        found = read_page(body, style, path)
        self._met(found.shape)
        return found

    def _met(self, shape: str) -> None:
        self.page_shape = shape
        wanted = self.profile.dam_pages.items
        if shape == wanted or self._shape_told:
            return
        self._shape_told = True
        where = "as a bare JSON list" if shape == LIST else f"under {shape!r}"
        logger.warning(
            "Lytho DAM pages carry their items %s, not %s as the Lytho profile says; read "
            "anyway. Set dam.pages.items: %s in BRIDGE_LYTHO_PROFILE (bridge doctor checks it)",
            where,
            "as a bare list" if wanted == LIST else repr(wanted),
            shape,
        )

    async def _pages(
        self, name: str, params: Mapping[str, Any] | None = None, size: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every item of a paged list, fetching page after page as they are consumed."""
        style = self.profile.dam_pages
        size = style.size if size is None else size
        if not 1 <= size <= style.size:
            raise ValueError(f"page size must be between 1 and {style.size}, not {size}")
        number = style.first_page
        walk = Walk(f"GET {self.profile.dam_path(name)}", "dam", style, size)
        while True:
            found = await self.page(name, number, size, params)
            last = walk.last(number, found)  # before the items: a repeat yields nothing twice
            for item in found.items:
                yield item
            if last:
                return
            number += 1

    # Calls.

    async def _call(
        self, op_name: str, *, ids: Iterable[Id] | None = None, body: Any = None, **where: Id
    ) -> Any:
        """Operation `dam.operations.<op_name>`, the ids where the profile puts them."""
        op = self.profile.op(op_name)
        path = self.profile.dam_path(op_name, **where)
        params: list[tuple[str, str]] | None = None
        if ids is not None:
            values = list(ids)
            if op.ids_in == "query" and op.ids_name:
                params = [(op.ids_name, str(v)) for v in values]
            elif op.ids_in == "body" and op.ids_name:
                body = {**(body or {}), op.ids_name: values}
            else:
                body = values
        try:
            return await self.request_json(op.method, path, params=params, json=body)
        except PermanentError as exc:
            raise _hinted(exc, f"dam.operations.{op_name}") from None

    def _where(self, op_name: str) -> str:
        return f"{self.profile.op(op_name).method} {self.profile.dam_path(op_name)}"

    @staticmethod
    def _object(what: str, answer: Any) -> dict[str, Any]:
        if not isinstance(answer, dict):
            raise ClientError(f"{what}: expected a JSON object, got {answer!r:.100}")
        return answer

    # Assets.

    def iter_assets(self, *, size: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every asset, page by page."""
        return self._pages("assets", size=size)

    async def _get(self, name: str, **ids: Id) -> dict[str, Any]:
        path = self.profile.dam_path(name, **ids)
        try:
            return self._object(f"GET {path}", await self.request_json("GET", path))
        except PermanentError as exc:
            raise _hinted(exc, f"dam.paths.{name}") from None

    async def get_asset(self, asset_id: Id) -> dict[str, Any]:
        return await self._get("asset", asset_id=asset_id)

    async def update_asset(
        self, asset_id: Id, changes: Mapping[str, Any], *, attempts: int = 3
    ) -> dict[str, Any]:
        """Change some fields of an asset, keeping every other field as it is; return it.

        Lytho erases what a PUT leaves out, so this reads the whole asset, applies
        `changes` and writes the whole object back. A 409 (someone else wrote in between)
        reads again and retries, `attempts` times in all.
        """
        read_only = {"id", "creationDate", self.fields["modified"], self.fields["version"]}
        bad = read_only.intersection(changes)
        if bad:
            raise ValueError(f"cannot change read-only asset fields: {', '.join(sorted(bad))}")
        for attempt in range(1, attempts + 1):
            current = await self.get_asset(asset_id)
            try:
                answer = await self._call(
                    "update_asset", body={**current, **changes}, asset_id=asset_id
                )
            except PermanentError as exc:
                if exc.status != 409 or attempt == attempts:
                    raise
                logger.info("asset %s changed while updating it; reading it again", asset_id)
                continue
            return await self._asset_after(answer, asset_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _asset_after(self, answer: Any, asset_id: Id) -> dict[str, Any]:
        """The asset a write answered with, or read anew when it answered none."""
        return answer if isinstance(answer, dict) else await self.get_asset(asset_id)

    async def add_tags(self, asset_id: Id, tag_ids: Iterable[Id]) -> dict[str, Any]:
        """Add tags (by id) to an asset; return the asset."""
        answer = await self._call("add_tags", ids=tag_ids, asset_id=asset_id)
        return await self._asset_after(answer, asset_id)

    async def remove_tags(self, asset_id: Id, tag_ids: Iterable[Id]) -> dict[str, Any]:
        """Remove tags (by id) from an asset; return the asset."""
        answer = await self._call("remove_tags", ids=tag_ids, asset_id=asset_id)
        return await self._asset_after(answer, asset_id)

    # Custom metadata on assets.

    async def _metadata(self, answer: Any, asset_id: Id) -> dict[str, Any]:
        """{name: value} from a metadata answer: {metadata: [...]}, an asset, or a bare list."""
        if answer is None:
            return await self.get_metadata(asset_id)
        items = answer
        if isinstance(answer, dict):
            items = answer.get("metadata", answer.get(self.fields["metadata"]))
        if not isinstance(items, list):
            raise ClientError(
                f"the metadata of asset {asset_id}: expected a list of {{name, value}}, "
                f"got {answer!r:.100}"
            )
        return {m["name"]: m.get("value") for m in items if isinstance(m, dict) and "name" in m}

    async def get_metadata(self, asset_id: Id) -> dict[str, Any]:
        """The custom metadata of an asset as {name: value}."""
        answer = await self._call("get_metadata", asset_id=asset_id)
        if answer is None:
            raise ClientError(f"the metadata of asset {asset_id}: the answer was empty")
        return await self._metadata(answer, asset_id)

    async def add_metadata(self, asset_id: Id, values: Mapping[str, Any]) -> dict[str, Any]:
        """Add metadata fields that the asset does not have yet (409 if one exists)."""
        answer = await self._call("add_metadata", body=_metadata(values), asset_id=asset_id)
        return await self._metadata(answer, asset_id)

    async def update_metadata(self, asset_id: Id, values: Mapping[str, Any]) -> dict[str, Any]:
        """Set some metadata fields, keeping the others (read, merge, write the whole set)."""
        merged = {**await self.get_metadata(asset_id), **values}
        answer = await self._call("update_metadata", body=_metadata(merged), asset_id=asset_id)
        return await self._metadata(answer, asset_id)

    async def remove_metadata(self, asset_id: Id, names: Iterable[str]) -> dict[str, Any]:
        """Remove metadata fields by name; return what is left."""
        answer = await self._call("remove_metadata", ids=names, asset_id=asset_id)
        return await self._metadata(answer, asset_id)

    # Tags.

    def iter_tags(
        self, *, name: str | None = None, size: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every tag (those matching `name`, where the server filters), page by page."""
        return self._pages("tags", {"name": name} if name else None, size=size)

    async def get_tag(self, tag_id: Id) -> dict[str, Any]:
        return await self._get("tag", tag_id=tag_id)

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
        body = {"name": name, "nameTranslation": dict(translations or {})}
        answer = await self._call("create_tag", body=body)
        if isinstance(answer, dict) and "id" in answer:
            return answer
        found = await self.get_tag_by_name(name)  # an API that answers 201 with no body
        if found is None:
            raise ClientError(f"created tag {name!r}, but cannot find it in the list of tags")
        return found

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

    def iter_collections(self, *, size: int | None = None) -> AsyncIterator[dict[str, Any]]:
        return self._pages("collections", size=size)

    async def get_collection(self, collection_id: Id) -> dict[str, Any]:
        return await self._get("collection", collection_id=collection_id)

    async def add_to_collection(self, collection_id: Id, asset_ids: Iterable[Id]) -> dict[str, Any]:
        """Add assets to a collection; return the collection."""
        answer = await self._call("add_to_collection", ids=asset_ids, collection_id=collection_id)
        return answer if isinstance(answer, dict) else await self.get_collection(collection_id)

    async def remove_from_collection(
        self, collection_id: Id, asset_ids: Iterable[Id]
    ) -> dict[str, Any]:
        """Remove assets from a collection; return the collection."""
        answer = await self._call(
            "remove_from_collection", ids=asset_ids, collection_id=collection_id
        )
        return answer if isinstance(answer, dict) else await self.get_collection(collection_id)

    # Uploads: getUploadLink → the bytes to the link → finalizeUpload.

    async def get_upload_link(self, file_name: str, content_type: str, size: int) -> UploadLink:
        """Ask Lytho where to upload a file of `size` bytes."""
        body = {"fileName": file_name, "contentType": content_type, "fileSize": size}
        what = self._where("get_upload_link")
        answer = self._object(what, await self._call("get_upload_link", body=body))
        url_key = str(self.profile.value("dam.upload.link_url"))
        id_key = str(self.profile.value("dam.upload.link_id"))
        keys = ", ".join(sorted(map(str, answer))) or "none"
        url = answer.get(url_key)
        if not isinstance(url, str) or not url:
            raise PermanentError(
                f"{what}: the answer has no upload URL under {url_key!r} (its keys: {keys}); "
                "set dam.upload.link_url in BRIDGE_LYTHO_PROFILE"
            )
        if answer.get(id_key) in (None, ""):
            raise PermanentError(
                f"{what}: the answer has no upload id under {id_key!r} (its keys: {keys}); "
                "set dam.upload.link_id in BRIDGE_LYTHO_PROFILE"
            )
        return UploadLink(urljoin(self.base_url, url), answer[id_key])

    async def upload_to_link(
        self, outbound: httpx.AsyncClient, link: UploadLink, data: bytes, content_type: str
    ) -> None:
        """Send the file's bytes to the upload link (`dam.upload.method`), through
        `outbound` (the guarded client for URLs that are not Lytho's API), without the key."""
        method = str(self.profile.value("dam.upload.method"))
        await send_to_link(
            outbound,
            link,
            method,
            data,
            content_type,
            retry=self.retry,
            request_timeout=self.timeout,
        )

    async def finalize_upload(
        self,
        upload_id: Any,
        file_name: str,
        name: str,
        collection_id: Id | None = None,
    ) -> dict[str, Any]:
        """Turn an uploaded file into an asset; return the asset."""
        id_key = str(self.profile.value("dam.upload.link_id"))
        body: dict[str, Any] = {id_key: upload_id, "fileName": file_name, "name": name}
        if collection_id is not None:
            body["collectionId"] = collection_id
        what = self._where("finalize_upload")
        asset = self._object(what, await self._call("finalize_upload", body=body))
        if asset.get("id") is None:
            raise ClientError(f"{what}: the answer carries no asset id: {asset!r:.100}")
        return asset


def _hinted(exc: PermanentError, key: str) -> PermanentError:
    """A 404 or 405 may be a wrong path or method in the profile: say which entry to check."""
    if exc.status not in (404, 405):
        return exc
    hint = f"; if the path or method is wrong for your tenant, set {key} in BRIDGE_LYTHO_PROFILE"
    return PermanentError(str(exc) + hint, status=exc.status)


def _metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    return {"metadata": [{"name": name, "value": value} for name, value in values.items()]}
