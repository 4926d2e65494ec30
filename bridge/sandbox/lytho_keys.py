"""The sandbox's Lytho dialect keys: each default, its meaning and its check (sandbox).

The defaults are our reading of Lytho's documents (api-docs/lytho-dam-api.txt: `x-api-key`
style key header, `page` and `size` parameters with size "defaulted to 20 and a maximum
of 50", whole-object updates, "Upload assets (getUploadLink, finalizeUpload)";
api-docs/lytho-workflow-api.txt: the reads per kind and "Search Campaigns") and, where
the documents are silent, the values of the profile's key schema. They are written here,
not read from the client's tables, so that client and sandbox can disagree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_NAME = re.compile(r"^[A-Za-z0-9_.~-]+$")
_LIMIT = re.compile(r"^(\d+)/(\d*)([smhd])(?::(\d+))?$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class Spec:
    default: Any
    meaning: str
    check: Callable[[Any], Any]


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"expected a name (letters, digits, _ . ~ -), got {value!r}")
    return value


def _key_or_none(value: Any) -> str:
    if value == "":
        return ""
    return _name(value)


def _first_page(value: Any) -> int:
    if value not in (0, 1) or isinstance(value, bool):
        raise ValueError(f"expected 0 or 1, got {value!r}")
    return int(value)


def _positive(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number of at least 1, got {value!r}")
    return value


def _sizes(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected a list of page sizes like [10, 20, 30], got {value!r}")
    return tuple(sorted({_positive(v) for v in value}))


def _choice(*allowed: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = value.upper() if isinstance(value, str) and allowed[0].isupper() else value
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return str(text)

    return check


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"expected a list of field names, got {value!r}")
    return tuple(value)


def _limits(value: Any) -> str:
    parts = value.split(",") if isinstance(value, str) else []
    if not parts or not all(_LIMIT.match(p.strip()) for p in parts):
        raise ValueError(f"expected limits like 20/63s:1,30000/1d, got {value!r}")
    return str(value)


def _path(*placeholders: str) -> Callable[[Any], str]:
    want = set(placeholders)

    def check(value: Any) -> str:
        if (
            not isinstance(value, str)
            or not value.strip("/")
            or value.startswith("/")
            or "//" in value
            or re.search(r"[\s?#]", value)
        ):
            raise ValueError(f"expected a path relative to the base URL, got {value!r}")
        have = set(_PLACEHOLDER.findall(value))
        if have != want:
            need = ", ".join("{" + p + "}" for p in sorted(want)) or "no placeholder"
            raise ValueError(f"{value!r} must hold {need}")
        return value

    return check


KEYS: dict[str, Spec] = {
    "dam.auth.header": Spec("x-api-key", "header carrying the API key", _name),
    "dam.auth.scheme": Spec("", "text before the key in that header", _key_or_none),
    "dam.pages.page_param": Spec("page", "query parameter of the page number", _name),
    "dam.pages.size_param": Spec("size", "query parameter of the page size", _name),
    "dam.pages.first_page": Spec(0, "number of the first page", _first_page),
    "dam.pages.max_size": Spec(50, "largest page size the API accepts", _positive),
    "dam.pages.items": Spec("content", "key of a page's items; list = a bare list", _name),
    "dam.pages.total": Spec("totalElements", "key of the total count", _key_or_none),
    "dam.pages.total_pages": Spec("totalPages", "key of the number of pages", _key_or_none),
    "dam.pages.last": Spec("last", "key of the is-last-page flag", _key_or_none),
    "dam.paths.assets": Spec("assets", "list of assets", _path()),
    "dam.paths.asset": Spec("assets/{asset_id}", "one asset", _path("asset_id")),
    "dam.paths.tags": Spec("tags", "list of tags", _path()),
    "dam.paths.tag": Spec("tags/{tag_id}", "one tag", _path("tag_id")),
    "dam.paths.collections": Spec("collections", "list of collections", _path()),
    "dam.paths.collection": Spec(
        "collections/{collection_id}", "one collection", _path("collection_id")
    ),
    "dam.upload.link_url": Spec("uploadUrl", "key of the upload URL", _name),
    "dam.upload.link_id": Spec("uploadId", "key of the upload id", _name),
    "dam.upload.method": Spec("PUT", "how the bytes go to the upload URL", _choice("PUT", "POST")),
    "dam.fields.asset_tags": Spec("tags", "key of an asset's tags", _name),
    "dam.fields.asset_metadata": Spec("metadata", "key of an asset's metadata", _name),
    "dam.fields.asset_version": Spec("version", "key of an asset's version", _name),
    "dam.fields.asset_modified": Spec("modificationDate", "key of its change time", _name),
    "dam.fields.asset_name": Spec("name", "key of an asset's name", _name),
    "dam.fields.asset_file_name": Spec("fileName", "key of an asset's file name", _name),
    "dam.rate_limits": Spec("20/63s:1,30000/1d", "the client's limits (not used here)", _limits),
    "workflow.auth.token_auth": Spec(
        "basic", "how client id and secret reach the token URL", _choice("basic", "body")
    ),
    "workflow.pages.page_param": Spec("page", "query parameter of the page number", _name),
    "workflow.pages.size_param": Spec("pageSize", "query parameter of the page size", _name),
    "workflow.pages.first_page": Spec(1, "number of the first page", _first_page),
    "workflow.pages.sizes": Spec((10, 20, 30), "page sizes the API accepts", _sizes),
    "workflow.pages.items": Spec("items", "key of a page's items; list = a bare list", _name),
    "workflow.pages.total": Spec("totalCount", "key of the total count", _key_or_none),
    "workflow.pages.total_pages": Spec("totalPages", "key of the number of pages", _key_or_none),
    "workflow.pages.last": Spec("", "key of the is-last-page flag", _key_or_none),
    "workflow.paths.get": Spec("{kind}/{id}", "one object", _path("kind", "id")),
    "workflow.paths.many": Spec("{kind}", "objects by ids (?ids=1&ids=2)", _path("kind")),
    "workflow.paths.search": Spec("{kind}/search", "search, paged", _path("kind")),
    "workflow.paths.users": Spec("{kind}/{id}/users", "an object's users", _path("kind", "id")),
    "workflow.paths.files": Spec(
        "{kind}/{id}/files/urls", "file URLs of a task, proof or project", _path("kind", "id")
    ),
    "workflow.paths.deliverable_files": Spec(
        "{kind}/{id}/deliverablefiles/urls",
        "file URLs of a work request's deliverables",
        _path("kind", "id"),
    ),
    "workflow.search.modified_since": Spec(
        "modifiedSince", "search parameter of the modification time", _key_or_none
    ),
    "workflow.fields.id": Spec("id", "key of an object's id", _name),
    "workflow.fields.modified": Spec("modifiedAt", "key of its change time", _name),
    "workflow.fields.status": Spec("status", "key of its status", _name),
    "workflow.rate_limits": Spec("20/63s:1,30000/1d", "the client's limits (not used)", _limits),
}

# DAM operations: method, path, where the id list goes (None: no list), what it does.
_OPERATIONS: dict[str, tuple[str, str, tuple[str, str] | None, str]] = {
    "update_asset": (
        "PUT",
        "assets/{asset_id}",
        None,
        "the whole asset; what is left out is erased",
    ),
    "add_tags": ("POST", "assets/{asset_id}/tags", ("body", "tagIds"), "add tags to an asset"),
    "remove_tags": ("DELETE", "assets/{asset_id}/tags", ("query", "tagIds"), "remove tags"),
    "get_metadata": ("GET", "assets/{asset_id}/metadata", None, "an asset's custom metadata"),
    "add_metadata": (
        "POST",
        "assets/{asset_id}/metadata",
        None,
        "add metadata; 409 if a name exists",
    ),
    "update_metadata": ("PUT", "assets/{asset_id}/metadata", None, "replace the metadata set"),
    "remove_metadata": ("DELETE", "assets/{asset_id}/metadata", ("query", "names"), "remove"),
    "create_tag": ("POST", "tags", None, "create a tag {name, nameTranslation}; 201"),
    "add_to_collection": (
        "POST",
        "collections/{collection_id}/assets",
        ("body", "assetIds"),
        "add assets to a collection",
    ),
    "remove_from_collection": (
        "DELETE",
        "collections/{collection_id}/assets",
        ("query", "assetIds"),
        "remove assets from a collection",
    ),
    "get_upload_link": ("POST", "assets/getUploadLink", None, "an upload URL for a file"),
    "finalize_upload": ("POST", "assets/finalizeUpload", None, "turn an upload into an asset"),
}
for _op, (_method, _path_value, _ids, _meaning) in _OPERATIONS.items():
    _base = f"dam.operations.{_op}"
    _holders = tuple(_PLACEHOLDER.findall(_path_value))
    KEYS[f"{_base}.method"] = Spec(_method, f"method of {_op}: {_meaning}", _choice(*METHODS))
    KEYS[f"{_base}.path"] = Spec(_path_value, f"path of {_op}", _path(*_holders))
    if _ids is not None:
        KEYS[f"{_base}.ids.in"] = Spec(_ids[0], f"where {_op}'s ids go", _choice("body", "query"))
        KEYS[f"{_base}.ids.name"] = Spec(_ids[1], f"name of {_op}'s id list", _name)
for _kind in ("workrequest", "task", "proof", "project", "campaign"):
    KEYS[f"workflow.kinds.{_kind}"] = Spec(_kind, f"path segment of {_kind}", _name)
_COMPARED = {
    "proof": ("status", "name", "version", "assetId", "taskId", "projectId", "reviewerIds"),
    "task": ("status", "name", "assigneeId", "dueDate", "projectId"),
    "workrequest": ("name", "archived", "dueDate", "completedDate"),
    "project": ("status", "name", "ownerId", "dueDate", "priority", "campaignId"),
    "campaign": ("status", "name", "startDate", "endDate", "ownerId"),
}
for _kind, _fields in _COMPARED.items():
    KEYS[f"workflow.compared.{_kind}"] = Spec(
        _fields, f"fields the poller compares on a {_kind} (not used here)", _strings
    )


def _shape(path: str) -> str:
    return _PLACEHOLDER.sub("{}", path)


def check_routes(values: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """Two routes of one API on the same method and path, or two kinds on one segment:
    (one key, the other key, what they share)."""
    dam: dict[tuple[str, str], str] = {}
    for key, value in values.items():
        if key.startswith("dam.paths."):
            routes = [("GET", _shape(value), key)]
        elif key.startswith("dam.operations.") and key.endswith(".method"):
            op = key.removesuffix(".method")
            routes = [(value, _shape(values[f"{op}.path"]), f"{op}.path")]
        else:
            continue
        for method, shape, owner in routes:
            other = dam.setdefault((method, shape), owner)
            if other != owner:
                return owner, other, f"{method} {shape}"
    flow: dict[str, str] = {}
    for key, value in values.items():
        if key.startswith("workflow.paths."):
            other = flow.setdefault(_shape(value), key)
            if other != key:
                return key, other, f"GET {value}"
    segments: dict[str, str] = {}
    for key, value in values.items():
        if key.startswith("workflow.kinds."):
            other = segments.setdefault(value, key)
            if other != key:
                return key, other, f"the segment {value!r}"
    return None
