"""A local Lytho DAM API: assets, tags, collections, metadata, whole-object updates (sandbox)."""

from __future__ import annotations

import copy
import math
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.sandbox._common import (
    ApiError,
    Gcra,
    SandboxCore,
    control_routes,
    now_iso,
    rate_limits,
    read_json,
    sandbox_app,
    wrap,
)
from bridge.sandbox.lytho_controls import DamControls
from bridge.sandbox.lytho_data import (
    DEFAULT_SIZE,
    STRING_FIELDS,
    WRITABLE_ASSET,
    check_metadata,
    from_dialect,
    metadata_body,
    metadata_items,
    renamed,
    seed,
    spring_page,
)
from bridge.sandbox.lytho_dialect import LythoDialect
from bridge.sandbox.lytho_http import lytho_error, page_body, page_params, path_routes
from bridge.sandbox.lytho_upload import UploadFlow


class LythoSandbox:
    """The state and endpoints of one Lytho DAM sandbox."""

    def __init__(
        self,
        api_key: str,
        rate_limit_per_minute: float | None,
        rate_limit_burst: int,
        rate_limit_per_day: int | None,
        retry_after_header: bool,
        dialect: LythoDialect,
    ) -> None:
        self.api_key = api_key
        self.dialect = dialect
        self.fields = dialect.asset_fields
        self.core = SandboxCore(lytho_error)
        self.upload = UploadFlow(self)
        self.limiter = Gcra(
            rate_limits(rate_limit_per_minute, rate_limit_burst, rate_limit_per_day)
        )
        self.retry_after_header = retry_after_header
        self.reset()

    def reset(self) -> None:
        with self.core.lock:
            seeded = seed()
            self.assets = seeded["assets"]
            self.tags = seeded["tags"]
            self.collections = seeded["collections"]
            self.next_id = 2000
            self.upload.uploads.clear()
            self.limiter.reset()

    # Guards and helpers.

    def guard(self, request: Request) -> None:
        scheme = self.dialect.value("dam.auth.scheme")
        sent = request.headers.get(self.dialect.value("dam.auth.header"), "")
        word, _, key = sent.partition(" ") if scheme else (scheme, "", sent)
        if word.lower() != scheme.lower() or key != self.api_key:
            raise ApiError(401, "Unauthorized: invalid or missing API key")
        if self.limiter.limits:
            wait = self.limiter.check(self.api_key)
            if wait > 0:
                headers = {"Retry-After": str(math.ceil(wait))} if self.retry_after_header else {}
                raise ApiError(429, "Too many requests: rate limit exceeded", headers)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def asset(self, request: Request) -> dict[str, Any]:
        found = self.assets.get(request.path_params["asset_id"])
        if found is None:
            raise ApiError(404, f"Asset {request.path_params['asset_id']} not found")
        return found

    def _collection(self, request: Request) -> dict[str, Any]:
        found = self.collections.get(request.path_params["collection_id"])
        if found is None:
            raise ApiError(404, f"Collection {request.path_params['collection_id']} not found")
        return found

    def touch(self, obj: dict[str, Any]) -> None:
        obj["modificationDate"] = now_iso()
        obj["version"] = int(obj.get("version", 0)) + 1

    def out(self, asset: dict[str, Any]) -> dict[str, Any]:
        """An asset as the API shows it: under the dialect's field names."""
        return renamed(asset, self.fields)

    def _page(self, request: Request, items: list[dict[str, Any]]) -> Response:
        pages = self.dialect.dam_pages
        page, size = page_params(request, pages, min(DEFAULT_SIZE, pages.max_size))
        # Spring's own page keys come with Spring's item key only.
        extra = spring_page(page, size, pages, len(items)) if pages.items == "content" else {}
        return JSONResponse(page_body(items, page, size, pages, extra))

    async def _ids(self, request: Request, op_name: str, what: str) -> list[str]:
        """The id list of an operation, from the body field or query parameter the dialect names."""
        op = self.dialect.op(op_name)
        name = op.ids_name or ""
        if op.ids_in == "body":
            body = await read_json(request)
            ids = body.get(name) if isinstance(body, dict) else None
            if not isinstance(ids, list) or not ids:
                raise ApiError(400, f"{name} must be a non-empty list of {what}")
            return [str(i) for i in ids]
        found = [i for raw in request.query_params.getlist(name) for i in raw.split(",") if i]
        if not found:
            raise ApiError(400, f"give the {what} as {name}=…")
        return found

    def _tag_refs(self, ids: Any) -> list[dict[str, Any]]:
        if not isinstance(ids, list) or not ids:
            raise ApiError(400, "tagIds must be a non-empty list of tag ids")
        refs = []
        for tag_id in ids:
            tag = self.tags.get(str(tag_id))
            if tag is None or tag["deleted"]:
                raise ApiError(400, f"Tag {tag_id} does not exist")
            refs.append({"id": tag["id"], "name": tag["name"]})
        return refs

    # Assets.

    async def list_assets(self, request: Request) -> Response:
        with self.core.lock:
            return self._page(request, [self.out(a) for a in self.assets.values()])

    async def get_asset(self, request: Request) -> Response:
        with self.core.lock:
            return JSONResponse(self.out(self.asset(request)))

    async def put_asset(self, request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be the whole asset as a JSON object")
        body = from_dialect(body, self.fields)
        version, tags_key = self.fields["version"], self.fields["tags"]
        with self.core.lock:
            asset = self.asset(request)
            if "id" in body and str(body["id"]) != str(asset["id"]):
                raise ApiError(400, "the id in the body does not match the path")
            if "version" in body and body["version"] != asset["version"]:
                raise ApiError(
                    409, f"Asset {asset['id']} was changed meanwhile ({version} {asset['version']})"
                )
            for name in STRING_FIELDS:
                if body.get(name) is not None and not isinstance(body[name], str):
                    raise ApiError(400, f"{self.fields.get(name, name)} must be a string")
            tags = body.get("tags") or []
            if not isinstance(tags, list) or not all(
                isinstance(t, dict) and "id" in t for t in tags
            ):
                raise ApiError(400, f"{tags_key} must be a list of objects with an id")
            tag_refs = self._tag_refs([t["id"] for t in tags]) if tags else []
            metadata = body.get("metadata") or []
            check_metadata(metadata)
            # Whole-object semantics: every writable field not sent is erased.
            for name, empty in WRITABLE_ASSET.items():
                asset[name] = copy.deepcopy(body.get(name, empty))
            asset["tags"] = tag_refs
            asset["metadata"] = copy.deepcopy(metadata)
            self.touch(asset)
            return JSONResponse(self.out(asset))

    async def add_tags(self, request: Request) -> Response:
        ids = await self._ids(request, "add_tags", "tag ids")
        with self.core.lock:
            asset = self.asset(request)
            refs = self._tag_refs(ids)
            have = {t["id"] for t in asset["tags"]}
            asset["tags"] += [r for r in refs if r["id"] not in have]
            self.touch(asset)
            return JSONResponse(self.out(asset))

    async def remove_tags(self, request: Request) -> Response:
        ids = await self._ids(request, "remove_tags", "tag ids")
        with self.core.lock:
            asset = self.asset(request)
            asset["tags"] = [t for t in asset["tags"] if str(t["id"]) not in ids]
            self.touch(asset)
            return JSONResponse(self.out(asset))

    async def get_metadata(self, request: Request) -> Response:
        with self.core.lock:
            asset = self.asset(request)
            return JSONResponse(metadata_body(asset))

    async def add_metadata(self, request: Request) -> Response:
        items = metadata_items(await read_json(request))
        with self.core.lock:
            asset = self.asset(request)
            have = {m["name"] for m in asset["metadata"]}
            clash = sorted(have.intersection(m["name"] for m in items))
            if clash:
                raise ApiError(409, f"Metadata {', '.join(clash)} already exists on the asset")
            asset["metadata"] += items
            self.touch(asset)
            return JSONResponse(metadata_body(asset))

    async def put_metadata(self, request: Request) -> Response:
        items = metadata_items(await read_json(request))
        with self.core.lock:
            asset = self.asset(request)
            asset["metadata"] = items  # the whole set: what is not sent is removed
            self.touch(asset)
            return JSONResponse(metadata_body(asset))

    async def remove_metadata(self, request: Request) -> Response:
        names = await self._ids(request, "remove_metadata", "metadata names")
        with self.core.lock:
            asset = self.asset(request)
            asset["metadata"] = [m for m in asset["metadata"] if m["name"] not in names]
            self.touch(asset)
            return JSONResponse(metadata_body(asset))

    # Tags.

    async def list_tags(self, request: Request) -> Response:
        name = request.query_params.get("name", "").casefold()
        with self.core.lock:
            tags = [
                t
                for t in self.tags.values()
                if not t["deleted"] and (not name or name in t["name"].casefold())
            ]
            return self._page(request, tags)

    async def get_tag(self, request: Request) -> Response:
        with self.core.lock:
            tag = self.tags.get(request.path_params["tag_id"])
            if tag is None:
                raise ApiError(404, f"Tag {request.path_params['tag_id']} not found")
            return JSONResponse(copy.deepcopy(tag))

    async def create_tag(self, request: Request) -> Response:
        body = await read_json(request)
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "name is required")
        translations = body.get("nameTranslation") or {}
        if not isinstance(translations, dict):
            raise ApiError(400, "nameTranslation must be an object")
        with self.core.lock:
            if any(t["name"].casefold() == name.casefold() for t in self.tags.values()):
                raise ApiError(409, f"Tag {name!r} already exists")
            tag_id = self.new_id()
            stamp = now_iso()
            tag = {
                "id": tag_id,
                "name": name,
                "nameTranslation": translations,
                "creationDate": stamp,
                "modificationDate": stamp,
                "deleted": None,  # a date-time once deleted (Lytho's reference)
                "version": 1,
            }
            self.tags[str(tag_id)] = tag
            return JSONResponse(copy.deepcopy(tag), status_code=201)

    # Collections.

    async def list_collections(self, request: Request) -> Response:
        with self.core.lock:
            return self._page(request, list(self.collections.values()))

    async def get_collection(self, request: Request) -> Response:
        with self.core.lock:
            return JSONResponse(copy.deepcopy(self._collection(request)))

    async def add_collection_assets(self, request: Request) -> Response:
        ids = await self._ids(request, "add_to_collection", "asset ids")
        with self.core.lock:
            collection = self._collection(request)
            unknown = [i for i in ids if i not in self.assets]
            if unknown:
                raise ApiError(400, f"Assets {', '.join(unknown)} do not exist")
            have = {str(a["id"]) for a in collection["assets"]}
            for asset_id in ids:
                if asset_id not in have:
                    collection["assets"].append({"id": self.assets[asset_id]["id"]})
                    have.add(asset_id)
            self.touch(collection)
            return JSONResponse(copy.deepcopy(collection))

    async def remove_collection_assets(self, request: Request) -> Response:
        ids = await self._ids(request, "remove_from_collection", "asset ids")
        with self.core.lock:
            collection = self._collection(request)
            collection["assets"] = [a for a in collection["assets"] if str(a["id"]) not in ids]
            self.touch(collection)
            return JSONResponse(copy.deepcopy(collection))


def create_lytho_app(
    api_key: str = "sandbox-lytho-key",
    *,
    rate_limit_per_minute: float | None = 20,
    rate_limit_burst: int = 1,
    rate_limit_per_day: int | None = 30_000,
    retry_after_header: bool = True,
    dialect: LythoDialect | None = None,
) -> Starlette:
    """A Lytho DAM sandbox under `/v1/`, seeded with demo assets, tags and collections.

    Like Lytho it wants its API key (`x-api-key`), pages lists (`size` ≤ 50), erases what
    a PUT leaves out, and answers 429 past `rate_limit_per_minute` (spaced:
    `rate_limit_burst` 1) or `rate_limit_per_day`; None turns a limit off. `dialect`
    (default: the documents' reading) sets its paths, pages, field names and upload keys.
    Every path answers OPTIONS with its methods. `app.state.sandbox` is the state.
    """
    dialect = dialect or LythoDialect()
    sandbox = LythoSandbox(
        api_key,
        rate_limit_per_minute,
        rate_limit_burst,
        rate_limit_per_day,
        retry_after_header,
        dialect,
    )
    core, upload, controls = sandbox.core, sandbox.upload, DamControls(sandbox)

    def path(name: str, handler: Any) -> tuple[str, str, Any]:
        return "/v1/" + dialect.dam_path(name), "GET", wrap(core, handler, sandbox.guard)

    def op(name: str, handler: Any) -> tuple[str, str, Any]:
        found = dialect.op(name)
        return "/v1/" + found.path, found.method, wrap(core, handler, sandbox.guard)

    def control(path: str, method: str, handler: Any) -> tuple[str, str, Any]:
        return "/_sandbox/" + path, method, wrap(core, handler)

    upload_method = dialect.value("dam.upload.method")
    table = [
        path("assets", sandbox.list_assets),
        path("asset", sandbox.get_asset),
        path("tags", sandbox.list_tags),
        path("tag", sandbox.get_tag),
        path("collections", sandbox.list_collections),
        path("collection", sandbox.get_collection),
        op("update_asset", sandbox.put_asset),
        op("add_tags", sandbox.add_tags),
        op("remove_tags", sandbox.remove_tags),
        op("get_metadata", sandbox.get_metadata),
        op("add_metadata", sandbox.add_metadata),
        op("update_metadata", sandbox.put_metadata),
        op("remove_metadata", sandbox.remove_metadata),
        op("create_tag", sandbox.create_tag),
        op("add_to_collection", sandbox.add_collection_assets),
        op("remove_from_collection", sandbox.remove_collection_assets),
        op("get_upload_link", upload.get_upload_link),
        op("finalize_upload", upload.finalize_upload),
        ("/upload/{upload_id}", upload_method, wrap(core, upload.receive_upload)),
        control("assets", "POST", controls.create_asset),
        control("assets/{asset_id}", "PATCH", controls.edit_asset),
        control("assets/{asset_id}", "DELETE", controls.delete_asset),
        control("state", "GET", controls.state),
        control("uploads/{upload_id}", "GET", upload.control_upload),
    ]
    routes = [*path_routes(table), *control_routes(core, sandbox.reset)]
    return sandbox_app(routes, core, sandbox)
