"""A local Lytho DAM API: assets, tags, collections, metadata, whole-object updates (sandbox)."""

from __future__ import annotations

import copy
import math
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.sandbox._common import (
    ApiError,
    Gcra,
    SandboxCore,
    control_routes,
    now_iso,
    page_params,
    rate_limits,
    read_json,
    sandbox_app,
    wrap,
)
from bridge.sandbox.lytho_data import (
    LYTHO_PATHS,
    MAX_SIZE,
    STRING_FIELDS,
    WRITABLE_ASSET,
    check_metadata,
    lytho_error,
    metadata_body,
    metadata_items,
    object_body,
    page_body,
    seed,
)


class LythoSandbox:
    """The state and endpoints of one Lytho DAM sandbox."""

    def __init__(
        self,
        api_key: str,
        rate_limit_per_minute: float | None,
        rate_limit_burst: int,
        rate_limit_per_day: int | None,
        retry_after_header: bool,
    ) -> None:
        self.api_key = api_key
        self.core = SandboxCore(lytho_error)
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
            self.limiter.reset()

    # Guards and helpers.

    def guard(self, request: Request) -> None:
        if request.headers.get("x-api-key") != self.api_key:
            raise ApiError(401, "Unauthorized: invalid or missing API key")
        if self.limiter.limits:
            wait = self.limiter.check(self.api_key)
            if wait > 0:
                headers = {"Retry-After": str(math.ceil(wait))} if self.retry_after_header else {}
                raise ApiError(429, "Too many requests: rate limit exceeded", headers)

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _asset(self, request: Request) -> dict[str, Any]:
        found = self.assets.get(request.path_params["asset_id"])
        if found is None:
            raise ApiError(404, f"Asset {request.path_params['asset_id']} not found")
        return found

    def _collection(self, request: Request) -> dict[str, Any]:
        found = self.collections.get(request.path_params["collection_id"])
        if found is None:
            raise ApiError(404, f"Collection {request.path_params['collection_id']} not found")
        return found

    def _touch(self, obj: dict[str, Any]) -> None:
        obj["modificationDate"] = now_iso()
        obj["version"] = int(obj.get("version", 0)) + 1

    def _page(self, request: Request, items: list[dict[str, Any]]) -> Response:
        page, size = page_params(request, first=0, size_name="size", default_size=20)
        if not 1 <= size <= MAX_SIZE:
            raise ApiError(400, f"size must be between 1 and {MAX_SIZE}")
        return JSONResponse(page_body(items, page, size))

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
            return self._page(request, list(self.assets.values()))

    async def get_asset(self, request: Request) -> Response:
        with self.core.lock:
            return JSONResponse(copy.deepcopy(self._asset(request)))

    async def put_asset(self, request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be the whole asset as a JSON object")
        with self.core.lock:
            asset = self._asset(request)
            if "id" in body and str(body["id"]) != str(asset["id"]):
                raise ApiError(400, "the id in the body does not match the path")
            if "version" in body and body["version"] != asset["version"]:
                raise ApiError(
                    409, f"Asset {asset['id']} was changed meanwhile (version {asset['version']})"
                )
            for name in STRING_FIELDS:
                if body.get(name) is not None and not isinstance(body[name], str):
                    raise ApiError(400, f"{name} must be a string")
            tags = body.get("tags") or []
            if not isinstance(tags, list) or not all(
                isinstance(t, dict) and "id" in t for t in tags
            ):
                raise ApiError(400, "tags must be a list of objects with an id")
            tag_refs = self._tag_refs([t["id"] for t in tags]) if tags else []
            metadata = body.get("metadata") or []
            check_metadata(metadata)
            # Whole-object semantics: every writable field not sent is erased.
            for name, empty in WRITABLE_ASSET.items():
                asset[name] = copy.deepcopy(body.get(name, empty))
            asset["tags"] = tag_refs
            asset["metadata"] = copy.deepcopy(metadata)
            self._touch(asset)
            return JSONResponse(copy.deepcopy(asset))

    async def add_tags(self, request: Request) -> Response:
        body = await read_json(request)
        with self.core.lock:
            asset = self._asset(request)
            refs = self._tag_refs(body.get("tagIds") if isinstance(body, dict) else None)
            have = {t["id"] for t in asset["tags"]}
            asset["tags"] += [r for r in refs if r["id"] not in have]
            self._touch(asset)
            return JSONResponse(copy.deepcopy(asset))

    async def remove_tags(self, request: Request) -> Response:
        ids = request.query_params.getlist("tagIds")
        with self.core.lock:
            asset = self._asset(request)
            if not ids:
                raise ApiError(400, "give the tags to remove as tagIds=…")
            asset["tags"] = [t for t in asset["tags"] if str(t["id"]) not in ids]
            self._touch(asset)
            return JSONResponse(copy.deepcopy(asset))

    async def get_metadata(self, request: Request) -> Response:
        with self.core.lock:
            asset = self._asset(request)
            return JSONResponse(metadata_body(asset))

    async def add_metadata(self, request: Request) -> Response:
        items = metadata_items(await read_json(request))
        with self.core.lock:
            asset = self._asset(request)
            have = {m["name"] for m in asset["metadata"]}
            clash = sorted(have.intersection(m["name"] for m in items))
            if clash:
                raise ApiError(409, f"Metadata {', '.join(clash)} already exists on the asset")
            asset["metadata"] += items
            self._touch(asset)
            return JSONResponse(metadata_body(asset))

    async def put_metadata(self, request: Request) -> Response:
        items = metadata_items(await read_json(request))
        with self.core.lock:
            asset = self._asset(request)
            asset["metadata"] = items  # the whole set: what is not sent is removed
            self._touch(asset)
            return JSONResponse(metadata_body(asset))

    async def remove_metadata(self, request: Request) -> Response:
        names = request.query_params.getlist("names")
        with self.core.lock:
            asset = self._asset(request)
            if not names:
                raise ApiError(400, "give the metadata to remove as names=…")
            asset["metadata"] = [m for m in asset["metadata"] if m["name"] not in names]
            self._touch(asset)
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
            tag_id = self._new_id()
            stamp = now_iso()
            tag = {
                "id": tag_id,
                "name": name,
                "nameTranslation": translations,
                "creationDate": stamp,
                "modificationDate": stamp,
                "deleted": False,
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
        body = await read_json(request)
        ids = body.get("assetIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids:
            raise ApiError(400, "assetIds must be a non-empty list of asset ids")
        with self.core.lock:
            collection = self._collection(request)
            unknown = [str(i) for i in ids if str(i) not in self.assets]
            if unknown:
                raise ApiError(400, f"Assets {', '.join(unknown)} do not exist")
            have = {str(a["id"]) for a in collection["assets"]}
            for asset_id in ids:
                if str(asset_id) not in have:
                    collection["assets"].append({"id": self.assets[str(asset_id)]["id"]})
                    have.add(str(asset_id))
            self._touch(collection)
            return JSONResponse(copy.deepcopy(collection))

    async def remove_collection_assets(self, request: Request) -> Response:
        ids = request.query_params.getlist("assetIds")
        with self.core.lock:
            collection = self._collection(request)
            if not ids:
                raise ApiError(400, "give the assets to remove as assetIds=…")
            collection["assets"] = [a for a in collection["assets"] if str(a["id"]) not in ids]
            self._touch(collection)
            return JSONResponse(copy.deepcopy(collection))

    # Controls for tests and demos (no auth, no rate limit).

    async def control_edit_asset(self, request: Request) -> Response:
        """Merge fields into an asset as if someone edited it in Lytho.

        `?touch=false` keeps its version and modification date, as Lytho does for fields
        that move by themselves (a view count, a link signed anew).
        """
        body = object_body(await read_json(request))
        touch = request.query_params.get("touch", "true").lower() not in ("false", "0", "no")
        with self.core.lock:
            asset = self._asset(request)
            asset.update({k: v for k, v in body.items() if k not in ("id", "version")})
            if touch:
                self._touch(asset)
            return JSONResponse(copy.deepcopy(asset))

    async def control_create_asset(self, request: Request) -> Response:
        body = object_body(await read_json(request))
        with self.core.lock:
            asset_id = self._new_id()
            stamp = now_iso()
            asset = {
                **WRITABLE_ASSET,
                "fileType": "application/octet-stream",
                "fileSize": 0,
                "uploadedBy": "Sandbox",
                **body,
                "id": asset_id,
                "creationDate": stamp,
                "modificationDate": stamp,
                "version": 1,
            }
            self.assets[str(asset_id)] = asset
            return JSONResponse(copy.deepcopy(asset), status_code=201)

    async def control_delete_asset(self, request: Request) -> Response:
        with self.core.lock:
            self._asset(request)
            del self.assets[request.path_params["asset_id"]]
            return Response(status_code=204)

    async def control_state(self, request: Request) -> Response:
        with self.core.lock:
            return JSONResponse(
                copy.deepcopy(
                    {"assets": self.assets, "tags": self.tags, "collections": self.collections}
                )
            )


def create_lytho_app(
    api_key: str = "sandbox-lytho-key",
    *,
    rate_limit_per_minute: float | None = 20,
    rate_limit_burst: int = 1,
    rate_limit_per_day: int | None = 30_000,
    retry_after_header: bool = True,
) -> Starlette:
    """A Lytho DAM sandbox under `/v1/`, seeded with demo assets, tags and collections.

    Like Lytho it wants `x-api-key`, pages lists (`size` ≤ 50), erases what a PUT leaves
    out, and answers 429 past `rate_limit_per_minute` (spaced: `rate_limit_burst` 1) or
    `rate_limit_per_day`; None turns a limit off. `app.state.sandbox` is the state.
    """
    sandbox = LythoSandbox(
        api_key, rate_limit_per_minute, rate_limit_burst, rate_limit_per_day, retry_after_header
    )
    core = sandbox.core

    def api(name: str, handler: Any, method: str) -> Route:
        endpoint = wrap(core, handler, sandbox.guard)
        return Route("/v1/" + LYTHO_PATHS[name], endpoint, methods=[method])

    def control(path: str, handler: Any, method: str) -> Route:
        return Route("/_sandbox/" + path, wrap(core, handler), methods=[method])

    routes = [
        api("assets", sandbox.list_assets, "GET"),
        api("asset", sandbox.get_asset, "GET"),
        api("asset", sandbox.put_asset, "PUT"),
        api("asset_tags", sandbox.add_tags, "POST"),
        api("asset_tags", sandbox.remove_tags, "DELETE"),
        api("asset_metadata", sandbox.get_metadata, "GET"),
        api("asset_metadata", sandbox.add_metadata, "POST"),
        api("asset_metadata", sandbox.put_metadata, "PUT"),
        api("asset_metadata", sandbox.remove_metadata, "DELETE"),
        api("tags", sandbox.list_tags, "GET"),
        api("tags", sandbox.create_tag, "POST"),
        api("tag", sandbox.get_tag, "GET"),
        api("collections", sandbox.list_collections, "GET"),
        api("collection", sandbox.get_collection, "GET"),
        api("collection_assets", sandbox.add_collection_assets, "POST"),
        api("collection_assets", sandbox.remove_collection_assets, "DELETE"),
        control("assets", sandbox.control_create_asset, "POST"),
        control("assets/{asset_id}", sandbox.control_edit_asset, "PATCH"),
        control("assets/{asset_id}", sandbox.control_delete_asset, "DELETE"),
        control("state", sandbox.control_state, "GET"),
        *control_routes(core, sandbox.reset),
    ]
    return sandbox_app(routes, core, sandbox)
