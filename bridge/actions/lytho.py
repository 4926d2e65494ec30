"""Lytho DAM actions: tag and untag assets, add them to collections, set custom metadata,
upload files (getUploadLink → the bytes to the link → finalizeUpload)."""

from __future__ import annotations

import base64
import binascii
import mimetypes
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from bridge.actions.action import Action, ActionDeps, StepCall
from bridge.clients.ids import path_segment
from bridge.clients.lytho import LythoClient
from bridge.errors import ClientError, PermanentError, RateLimited
from bridge.schema import ActionSchema, Param

ID = ("string", "integer")
TAG_CACHE_SECONDS = 600.0
# The largest file one step uploads: it is held in the worker's memory while it is sent.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024

TAG = ActionSchema(
    name="lytho.tag_asset",
    description="Add tags (by name) to a Lytho asset; missing tags are created unless "
    "create_missing is false.",
    params={
        "asset_id": Param("asset_id", ID, required=True),
        "tags": Param("tags", ("array", "string"), required=True, description="tag names"),
        "create_missing": Param("create_missing", ("boolean",), description="default true"),
    },
    results={"tags": "array", "tag_ids": "array"},
)
UNTAG = ActionSchema(
    name="lytho.untag_asset",
    description="Remove tags (by name) from a Lytho asset; tags that do not exist are skipped.",
    params={
        "asset_id": Param("asset_id", ID, required=True),
        "tags": Param("tags", ("array", "string"), required=True, description="tag names"),
    },
    results={"removed": "array", "unknown": "array"},
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
UPLOAD = ActionSchema(
    name="lytho.upload_asset",
    description="Upload a file to Lytho as a new asset (getUploadLink, the bytes to the link, "
    "finalizeUpload), from a URL or from content a rule or an earlier step gives; a retry "
    "never makes a second asset.",
    params={
        "url": Param("url", ("string",), description="download the file from this URL"),
        "content": Param("content", ("string",), description="the file itself, as text"),
        "encoding": Param(
            "encoding", ("string",), description="of content: text (default) or base64"
        ),
        "file_name": Param("file_name", ("string",), required=True),
        "name": Param("name", ("string",), description="the asset's name; default file_name"),
        "content_type": Param(
            "content_type", ("string",), description="default: guessed from file_name"
        ),
        "collection_id": Param("collection_id", ID, description="put the asset in it"),
    },
    one_of=(("url", "content"),),
)


def client(deps: ActionDeps, action: str) -> LythoClient:
    found = deps.lytho
    if found is None:
        raise PermanentError(f"{action} needs LYTHO_API_KEY to be set")
    return found


def path_id(action: str, call: StepCall, name: str) -> Any:
    """The id `name` of the step, refused before any request if it cannot be a path segment
    ('..' would turn an asset's tags into the tags collection)."""
    value = call.params[name]
    try:
        path_segment(name, value)
    except PermanentError as exc:
        raise PermanentError(f"{action}: {exc}") from None
    return value


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
    path_id("lytho.tag_asset", call, "asset_id")
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
    path_id("lytho.untag_asset", call, "asset_id")
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
    path_id("lytho.add_to_collection", call, "collection_id")
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
    path_id("lytho.set_metadata", call, "asset_id")
    result = await lytho.update_metadata(call.params["asset_id"], dict(values))
    return {"asset_id": call.params["asset_id"], "metadata": result}


# lytho.upload_asset.


def _shown(url: str) -> str:
    """A URL as messages show it: no query (it may hold a token), no credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def traced_url(url: str) -> str:
    """`url` as a trace shows it: without its query ("?…" where it had one)."""
    try:
        return _shown(url) + ("?…" if urlsplit(url).query else "")
    except ValueError:  # not a URL at all: the step says so; its text is shown as is
        return url


def _too_large(where: str) -> PermanentError:
    most = MAX_UPLOAD_BYTES
    shown = f"{most // 2**20} MiB" if most % 2**20 == 0 else f"{most} bytes"
    return PermanentError(
        f"lytho.upload_asset: {where} is larger than {shown}, the most one step uploads; "
        "upload it in Lytho itself"
    )


async def download(deps: ActionDeps, url: str) -> tuple[bytes, str | None]:
    """The file at `url` (through the guarded outbound client) and its content type."""
    shown = _shown(url)
    if urlsplit(url).scheme not in ("http", "https"):
        raise PermanentError(f"lytho.upload_asset: url must be an http(s) URL, not {shown!r}")
    try:
        async with deps.outbound.stream("GET", url, timeout=deps.timeout) as response:
            status = response.status_code
            if status >= 400:
                where = f"lytho.upload_asset: GET {shown} → {status} {response.reason_phrase}"
                if status in (404, 410):
                    raise PermanentError(f"{where}: no file there; check the url", status=status)
                if status in (408, 429) or status >= 500:
                    raise ClientError(f"{where}; retried with the step", status=status)
                raise PermanentError(f"{where}; check the url and its access", status=status)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
                raise _too_large(f"the file at {shown}")
            chunks, total = [], 0
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if total > MAX_UPLOAD_BYTES:
                    raise _too_large(f"the file at {shown}")
                chunks.append(chunk)
            return b"".join(chunks), response.headers.get("content-type")
    except ClientError as exc:
        if str(exc).startswith("lytho.upload_asset"):
            raise
        raise _prefixed(exc, f"lytho.upload_asset: GET {shown}") from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.TooManyRedirects) as exc:
        raise PermanentError(f"lytho.upload_asset: cannot GET {shown}: {exc}") from None
    except httpx.RequestError as exc:
        problem = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
        raise ClientError(
            f"lytho.upload_asset: GET {shown} {problem} ({type(exc).__name__}); "
            "retried with the step"
        ) from None


def _content(params: Mapping[str, Any]) -> bytes:
    text = params["content"]
    encoding = str(params.get("encoding") or "text").lower()
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise PermanentError(
                "lytho.upload_asset: content is not valid base64 (encoding: base64)"
            ) from None
    if encoding in ("text", "utf-8", "utf8"):
        return str(text).encode("utf-8")
    raise PermanentError(
        f"lytho.upload_asset: encoding must be text or base64, not {params['encoding']!r}"
    )


async def _file(deps: ActionDeps, params: Mapping[str, Any]) -> tuple[bytes, str]:
    """The file's bytes and content type, from `url` or `content`."""
    if ("url" in params) == ("content" in params):
        raise PermanentError("lytho.upload_asset takes either url or content, not both")
    served: str | None = None
    if "url" in params:
        data, served = await download(deps, str(params["url"]))
    else:
        data = _content(params)
        if len(data) > MAX_UPLOAD_BYTES:
            raise _too_large("content")
    if not data:
        raise PermanentError("lytho.upload_asset: the file is empty; there is nothing to upload")
    given = params.get("content_type")
    guessed = mimetypes.guess_type(str(params["file_name"]))[0]
    served = served.split(";")[0].strip() if served else None
    return data, str(given or guessed or served or "application/octet-stream")


def _prefixed(exc: ClientError, text: str) -> ClientError:
    """`exc` with `text` before its message, of the same kind (retryable or not)."""
    message = f"{text}: {exc}"
    if isinstance(exc, RateLimited):
        return RateLimited(message, retry_after=exc.retry_after, status=exc.status)
    return type(exc)(message, status=exc.status)


async def upload_asset(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
    """getUploadLink → the bytes to the link → finalizeUpload, resumable across tries.

    The step's memo says how far an earlier try of this step got: once the bytes are at
    the link only finalizeUpload is left, and once it answered, its asset is the result
    (a retry never makes a second asset).
    """
    lytho = client(deps, "lytho.upload_asset")
    params = call.params
    file_name = str(params["file_name"]).strip()
    if not file_name:
        raise PermanentError("lytho.upload_asset: file_name must not be empty")
    name = str(params.get("name") or file_name)
    collection_id = params.get("collection_id")
    memo = await deps.memo.get(call) if deps.memo is not None else {}

    async def keep(value: dict[str, Any]) -> None:
        if deps.memo is not None:
            await deps.memo.put(call, value)

    asset = memo.get("asset")
    if not isinstance(asset, dict):
        upload_id = memo.get("upload_id")
        if not memo.get("uploaded"):
            data, content_type = await _file(deps, params)
            try:
                link = await lytho.get_upload_link(file_name, content_type, len(data))
            except ClientError as exc:
                raise _prefixed(exc, "lytho.upload_asset: getUploadLink failed") from None
            try:
                await lytho.upload_to_link(deps.outbound, link, data, content_type)
            except ClientError as exc:
                raise _prefixed(exc, "lytho.upload_asset") from None
            upload_id = link.upload_id
            await keep({"upload_id": upload_id, "uploaded": True})
        try:
            asset = await lytho.finalize_upload(upload_id, file_name, name, collection_id)
        except PermanentError as exc:
            if exc.status != 409:  # 409: finalized already (its answer was lost); keep it so
                await keep({})  # else a replay starts again from a new upload link
            raise _prefixed(exc, "lytho.upload_asset: finalizeUpload failed") from None
        except ClientError as exc:
            raise _prefixed(exc, "lytho.upload_asset: finalizeUpload failed") from None
        await keep({"upload_id": upload_id, "uploaded": True, "asset": asset})
    return {
        "asset_id": asset["id"],
        "name": asset.get(lytho.fields["name"], name),
        "asset": asset,
    }


ACTIONS = (
    Action(TAG, tag_asset),
    Action(UNTAG, untag_asset),
    Action(ADD_TO_COLLECTION, add_to_collection),
    Action(SET_METADATA, set_metadata),
    Action(UPLOAD, upload_asset),
)
