"""The Lytho DAM sandbox's data: its seed, the shapes of its bodies, field renaming (sandbox)."""

from __future__ import annotations

import copy
from typing import Any

from bridge.sandbox._common import ApiError
from bridge.sandbox.lytho_dialect import Pages

# Lytho's documents give the default page size (20; at most 50: the dialect's max_size).
DEFAULT_SIZE = 20
# At most this many bytes go to an upload URL (the sandbox keeps them in memory).
MAX_UPLOAD_BYTES = 16 * 1024 * 1024
# What a PUT leaves out of an asset is erased to these values, as Lytho documents.
WRITABLE_ASSET: dict[str, Any] = {
    "fileName": "",
    "name": "",
    "description": "",
    "tags": [],
    "metadata": [],
    "expirationDate": None,
}
STRING_FIELDS = ("fileName", "name", "description", "expirationDate")


def seed() -> dict[str, dict[str, dict[str, Any]]]:
    """Fresh demo state: assets, tags and collections keyed by id."""
    created = "2026-09-01T09:00:00Z"
    tag_names = ["hero", "approved", "spring-2026", "social", "print", "archive", "logo", "draft"]
    tags = {
        str(i): {
            "id": i,
            "name": name,
            "nameTranslation": {"en": name},
            "creationDate": created,
            "modificationDate": created,
            "deleted": None,  # a date-time once deleted (Lytho's reference)
            "version": 1,
        }
        for i, name in enumerate(tag_names, start=1)
    }
    files = [
        ("spring-hero.jpg", "Spring campaign hero", "image/jpeg", ["hero", "spring-2026"]),
        ("spring-social-square.png", "Spring social square", "image/png", ["social"]),
        ("spring-social-story.mp4", "Spring story video", "video/mp4", ["social", "draft"]),
        ("brand-logo.svg", "Brand logo", "image/svg+xml", ["logo", "approved"]),
        ("brand-logo-dark.svg", "Brand logo (dark)", "image/svg+xml", ["logo"]),
        ("catalog-2026.pdf", "Catalog 2026", "application/pdf", ["print"]),
        ("flyer-a5.pdf", "Store flyer A5", "application/pdf", ["print", "draft"]),
        ("team-photo.jpg", "Team photo", "image/jpeg", []),
        ("summer-teaser.jpg", "Summer teaser", "image/jpeg", ["draft"]),
        ("banner-728x90.gif", "Leaderboard banner", "image/gif", ["social"]),
        ("old-campaign.zip", "Campaign 2024 sources", "application/zip", ["archive"]),
        ("press-kit.docx", "Press kit", "application/msword", []),
    ]
    by_name = {t["name"]: t for t in tags.values()}
    assets: dict[str, dict[str, Any]] = {}
    for n, (file_name, name, file_type, asset_tags) in enumerate(files):
        asset_id = 1001 + n
        assets[str(asset_id)] = {
            "id": asset_id,
            "fileName": file_name,
            "name": name,
            "description": f"{name}, uploaded for the demo tenant.",
            "fileType": file_type,
            "fileSize": 48_000 + 7_919 * n,
            "creationDate": created,
            "modificationDate": created,
            "uploadedBy": ["Dana Reyes", "Sam Okafor", "Lee Chen"][n % 3],
            "tags": [{"id": by_name[t]["id"], "name": t} for t in asset_tags],
            "metadata": [{"name": "campaign", "value": "spring-2026"}] if n < 4 else [],
            "expirationDate": None,
            "version": 1,
        }
    collections = {
        "501": {
            "id": 501,
            "name": "Spring 2026 campaign",
            "description": "Everything for the spring launch",
            "creationDate": created,
            "modificationDate": created,
            "tags": [{"id": by_name["spring-2026"]["id"], "name": "spring-2026"}],
            "assets": [{"id": 1001}, {"id": 1002}, {"id": 1003}],
            "permissions": [],
            "visibleToEveryone": True,
            "version": 1,
        },
        "502": {
            "id": 502,
            "name": "Brand",
            "description": "Logos and brand guidelines",
            "creationDate": created,
            "modificationDate": created,
            "tags": [],
            "assets": [{"id": 1004}, {"id": 1005}],
            "permissions": [],
            "visibleToEveryone": False,
            "version": 1,
        },
    }
    return {"assets": assets, "tags": tags, "collections": collections}


def object_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "send the asset's fields as a JSON object")
    return body


def check_metadata(items: Any) -> None:
    if not isinstance(items, list) or not all(
        isinstance(m, dict) and isinstance(m.get("name"), str) and m["name"] for m in items
    ):
        raise ApiError(400, "metadata must be a list of {name, value} objects")


def metadata_items(body: Any) -> list[dict[str, Any]]:
    items = body.get("metadata") if isinstance(body, dict) else None
    check_metadata(items)
    assert isinstance(items, list)
    return [{"name": m["name"], "value": m.get("value")} for m in items]


def metadata_body(asset: dict[str, Any]) -> dict[str, Any]:
    return {"assetId": asset["id"], "metadata": copy.deepcopy(asset["metadata"])}


def spring_page(page: int, size: int, pages: Pages, total: int) -> dict[str, Any]:
    """The keys a Spring Data page carries besides its items and totals."""
    index = page - pages.first_page
    shown = max(0, min(size, total - index * size))
    return {
        "pageable": {"pageNumber": page, "pageSize": size, "offset": index * size},
        "size": size,
        "number": page,
        "numberOfElements": shown,
        "first": index == 0,
        "empty": shown == 0,
    }


def renamed(obj: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A copy of `obj` with the keys in `names` renamed (the order of keys kept)."""
    return {names.get(k, k): copy.deepcopy(v) for k, v in obj.items()}


def from_dialect(body: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A body in the dialect's field names → the sandbox's own; own names the dialect
    renamed are unknown fields there, so they are dropped."""
    back = {theirs: ours for ours, theirs in names.items()}
    hidden = {ours for ours, theirs in names.items() if ours != theirs}
    return {back.get(k, k): v for k, v in body.items() if k in back or k not in hidden}
