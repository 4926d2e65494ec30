"""The DAM sandbox's controls for tests and demos: edit, create, delete assets, show the state.

They want no key and book no rate limit; bodies and answers use the dialect's field names.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.sandbox._common import now_iso, read_json
from bridge.sandbox.lytho_data import WRITABLE_ASSET, from_dialect, object_body

if TYPE_CHECKING:
    from bridge.sandbox.lytho import LythoSandbox


class DamControls:
    """`/_sandbox/` endpoints acting on one DAM sandbox's state."""

    def __init__(self, dam: LythoSandbox) -> None:
        self.dam = dam

    async def edit_asset(self, request: Request) -> Response:
        """Merge fields into an asset as if someone edited it in Lytho.

        `?touch=false` keeps its version and modification date, as Lytho does for fields
        that move by themselves (a view count, a link signed anew).
        """
        body = from_dialect(object_body(await read_json(request)), self.dam.fields)
        touch = request.query_params.get("touch", "true").lower() not in ("false", "0", "no")
        with self.dam.core.lock:
            asset = self.dam.asset(request)
            asset.update({k: v for k, v in body.items() if k not in ("id", "version")})
            if touch:
                self.dam.touch(asset)
            return JSONResponse(self.dam.out(asset))

    async def create_asset(self, request: Request) -> Response:
        body = from_dialect(object_body(await read_json(request)), self.dam.fields)
        with self.dam.core.lock:
            asset_id = self.dam.new_id()
            stamp = now_iso()
            asset = {
                **copy.deepcopy(WRITABLE_ASSET),
                "fileType": "application/octet-stream",
                "fileSize": 0,
                "uploadedBy": "Sandbox",
                **body,
                "id": asset_id,
                "creationDate": stamp,
                "modificationDate": stamp,
                "version": 1,
            }
            self.dam.assets[str(asset_id)] = asset
            return JSONResponse(self.dam.out(asset), status_code=201)

    async def delete_asset(self, request: Request) -> Response:
        with self.dam.core.lock:
            self.dam.asset(request)
            del self.dam.assets[request.path_params["asset_id"]]
            return Response(status_code=204)

    async def state(self, request: Request) -> Response:
        with self.dam.core.lock:
            assets = {k: self.dam.out(a) for k, a in self.dam.assets.items()}
            state = {"assets": assets, "tags": self.dam.tags, "collections": self.dam.collections}
            return JSONResponse(copy.deepcopy(state))
