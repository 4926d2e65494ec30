"""The DAM sandbox's upload flow: getUploadLink, the bytes to that URL, finalizeUpload (sandbox).

Lytho's document names the flow ("Upload assets (getUploadLink, finalizeUpload)"); how it
looks is the dialect's: the answer's keys (`dam.upload.link_url`, `dam.upload.link_id`) and
how the bytes go (`dam.upload.method`). The upload URL is on the sandbox itself and, like
a presigned storage URL, wants no API key; each takes one file.
"""

from __future__ import annotations

import copy
import hashlib
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.sandbox._common import ApiError, now_iso, read_json
from bridge.sandbox.lytho_data import MAX_UPLOAD_BYTES, WRITABLE_ASSET

if TYPE_CHECKING:
    from bridge.sandbox.lytho import LythoSandbox


@dataclass
class Upload:
    """One upload link: what getUploadLink announced, then the bytes, then the asset."""

    file_name: str
    content_type: str
    file_size: int | None
    data: bytes | None = None
    asset_id: int | None = None


def _text(body: dict[str, Any], key: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{key} is required and must be a non-empty string")
    return value


class UploadFlow:
    """The upload endpoints and open uploads of one DAM sandbox."""

    def __init__(self, dam: LythoSandbox) -> None:
        self.dam = dam
        self.core = dam.core
        self.uploads: dict[str, Upload] = {}

    async def get_upload_link(self, request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "send {fileName, contentType, fileSize} as a JSON object")
        file_name = _text(body, "fileName")
        content_type = _text(body, "contentType", "application/octet-stream")
        size = body.get("fileSize")
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, int) or not size >= 0
        ):
            raise ApiError(400, "fileSize must be a whole number of bytes")
        if size is not None and size > MAX_UPLOAD_BYTES:
            raise ApiError(400, f"fileSize {size} is over the {MAX_UPLOAD_BYTES} bytes allowed")
        upload_id = secrets.token_urlsafe(18)
        with self.core.lock:
            self.uploads[upload_id] = Upload(file_name, content_type, size)
        base = str(request.base_url).rstrip("/")
        link = self.dam.dialect.value("dam.upload.link_url")
        link_id = self.dam.dialect.value("dam.upload.link_id")
        return JSONResponse({link: f"{base}/upload/{upload_id}", link_id: upload_id})

    async def receive_upload(self, request: Request) -> Response:
        """The bytes of a file, sent to its upload URL (no API key, as to storage)."""
        upload_id = request.path_params["upload_id"]
        self._fresh_upload(upload_id)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
            raise ApiError(413, f"the file is over the {MAX_UPLOAD_BYTES} bytes allowed")
        chunks: list[bytes] = []
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > MAX_UPLOAD_BYTES:
                raise ApiError(413, f"the file is over the {MAX_UPLOAD_BYTES} bytes allowed")
            chunks.append(chunk)
        data = b"".join(chunks)
        with self.core.lock:
            upload = self._fresh_upload(upload_id)
            if upload.file_size is not None and upload.file_size != len(data):
                raise ApiError(
                    400,
                    f"Upload {upload_id} got {len(data)} bytes; getUploadLink announced "
                    f"fileSize {upload.file_size}",
                )
            upload.data = data
            sent_type = request.headers.get("content-type", "").split(";")[0].strip()
            upload.content_type = sent_type or upload.content_type
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return Response(status_code=200, headers={"ETag": f'"{etag}"'})

    def _fresh_upload(self, upload_id: str) -> Upload:
        with self.core.lock:
            upload = self.uploads.get(upload_id)
            if upload is None:
                raise ApiError(
                    404, f"Upload {upload_id} does not exist; ask getUploadLink for an upload URL"
                )
            if upload.data is not None:
                raise ApiError(
                    409, f"Upload {upload_id} already has its file; ask getUploadLink for another"
                )
            return upload

    async def finalize_upload(self, request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "send the upload to finalize as a JSON object")
        key = self.dam.dialect.value("dam.upload.link_id")
        upload_id = body.get(key)
        if not isinstance(upload_id, str) or not upload_id:
            raise ApiError(400, f"{key} is required: the id getUploadLink answered")
        collection_id = body.get("collectionId")
        with self.core.lock:
            upload = self.uploads.get(upload_id)
            if upload is None:
                raise ApiError(400, f"Upload {upload_id} does not exist; ask getUploadLink first")
            if upload.asset_id is not None:
                raise ApiError(
                    409, f"Upload {upload_id} was already finalized as asset {upload.asset_id}"
                )
            if upload.data is None:
                raise ApiError(
                    400, f"Upload {upload_id} has no file yet; send the file to its URL first"
                )
            file_name = _text(body, "fileName", upload.file_name)
            name = _text(body, "name", file_name)
            collection = None
            if collection_id is not None:
                collection = self.dam.collections.get(str(collection_id))
                if collection is None:
                    raise ApiError(400, f"Collection {collection_id} does not exist")
            asset_id = self.dam.new_id()
            stamp = now_iso()
            asset = {
                **copy.deepcopy(WRITABLE_ASSET),
                "id": asset_id,
                "fileName": file_name,
                "name": name,
                "fileType": upload.content_type,
                "fileSize": len(upload.data),
                "creationDate": stamp,
                "modificationDate": stamp,
                "uploadedBy": "API",
                "version": 1,
            }
            self.dam.assets[str(asset_id)] = asset
            upload.asset_id = asset_id
            if collection is not None:
                collection["assets"].append({"id": asset_id})
                self.dam.touch(collection)
            return JSONResponse(self.dam.out(asset), status_code=201)

    async def control_upload(self, request: Request) -> Response:
        """The bytes an upload URL received, for tests to compare."""
        with self.core.lock:
            upload = self.uploads.get(request.path_params["upload_id"])
            if upload is None or upload.data is None:
                raise ApiError(404, f"Upload {request.path_params['upload_id']} has no file")
            return Response(upload.data, media_type=upload.content_type)
