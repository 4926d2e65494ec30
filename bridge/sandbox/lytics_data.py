"""The Lytics sandbox's data: its seed, ids, scan cursors, and the shapes of bodies and errors."""

from __future__ import annotations

import base64
import binascii
import copy
import re
import uuid
from typing import Any

from starlette.responses import JSONResponse

from bridge.sandbox._common import ApiError

MAX_SCAN_LIMIT = 100
JOB_STATUSES = {"pending", "running", "complete", "failed", "cancelled"}
IN_SEGMENT = re.compile(r'^\s*in_segment\(\s*"([^"]+)"\s*\)\s*$')


def lytics_error(status: int, message: str) -> dict[str, Any]:
    """An error body as Lytics answers it."""
    return {"data": None, "message": message, "status": status}


def ok(data: Any = None, **extra: Any) -> JSONResponse:
    """A success answer in Lytics' envelope."""
    body: dict[str, Any] = {"status": 200, "message": "success"}
    if data is not None:
        body["data"] = data
    body.update(extra)
    return JSONResponse(body)


def slugs_of(profile: dict[str, Any]) -> list[str]:
    """The segment slugs of a profile (none when a test gave it no `segments` list)."""
    slugs = profile.get("segments")
    return slugs if isinstance(slugs, list) else []


def sandbox_id(n: int) -> str:
    """The n-th id the sandbox hands out (stable, looks like a Lytics id)."""
    return uuid.UUID(int=n * 7919 + 0x5EED).hex


def seed() -> dict[str, Any]:
    """Fresh demo state: an account, 24 profiles in three segments, a connection, jobs."""
    t0 = "2026-09-15T10:00:00Z"
    first = ["Ada", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gia", "Hugo", "Ivy", "Jon", "Kai", "Liv"]
    profiles: dict[str, dict[str, Any]] = {}
    for n, name in enumerate(first * 2):
        uid = f"uid{n:03d}"
        segments = ["all_users"]
        if n % 3 == 0:
            segments.append("high_value_users")
        if n % 4 == 0:
            segments.append("cart_abandoners")
        profiles[uid] = {
            "_uid": uid,
            "email": f"{name.lower()}{n}@example.com",
            "first_name": name,
            "last_name": "Sample",
            "segments": segments,
            "scores": {"frequency": float(n % 10) * 10, "momentum": float(n % 7) * 14},
            "created": t0,
            "last_active_ts": t0,
        }
    segment_defs = [
        ("all_users", "All Users", "audience", "*"),
        ("high_value_users", "High Value Users", "audience", "score_value > 50"),
        ("cart_abandoners", "Cart Abandoners", "behavioral", "cart_abandoned = true"),
    ]
    segment_map: dict[str, dict[str, Any]] = {}
    for n, (slug, name, kind, ql) in enumerate(segment_defs):
        segment_map[slug] = {
            "id": sandbox_id(100 + n),
            "slug_name": slug,
            "name": name,
            "kind": kind,
            "filter_ql": ql,
            "created": t0,
            "modified": t0,
        }
    connections = {
        sandbox_id(200): {
            "id": sandbox_id(200),
            "name": "Warehouse",
            "type": "bigquery",
            "auth_id": sandbox_id(201),
            "config": {"dataset": "marketing"},
            "created": t0,
            "modified": t0,
        }
    }
    jobs = {
        sandbox_id(300 + n): {
            "id": sandbox_id(300 + n),
            "type": job_type,
            "status": status,
            "connection_id": sandbox_id(200),
            "config": {},
            "created": t0,
            "modified": t0,
        }
        for n, (job_type, status) in enumerate(
            [("import", "complete"), ("export", "running"), ("export", "pending")]
        )
    }
    return {
        "accounts": {
            "12345": {
                "aid": "12345",
                "name": "ACME Corp",
                "created": t0,
                "modified": t0,
            }
        },
        "profiles": profiles,
        "segments": segment_map,
        "connections": connections,
        "jobs": jobs,
        "datamodels": {
            "default": {
                "id": sandbox_id(400),
                "name": "default",
                "fields": [
                    {"name": "email", "as": "email", "type": "string", "is_by": True},
                    {"name": "event", "as": "event", "type": "string", "is_by": False},
                ],
                "created": t0,
                "modified": t0,
            }
        },
    }


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def decode_cursor(cursor: str) -> int:
    if not cursor:
        return 0
    try:
        kind, _, value = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if kind == "offset" and int(value) >= 0:
            return int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ApiError(400, "invalid next cursor")


def connection_request(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    for key in ("name", "type"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise ApiError(400, f"{key} is required")
    if "auth_id" in body and not isinstance(body["auth_id"], str):
        raise ApiError(400, "auth_id must be a string")
    if "config" in body and not isinstance(body["config"], dict):
        raise ApiError(400, "config must be an object")
    return {k: copy.deepcopy(body[k]) for k in ("name", "type", "auth_id", "config") if k in body}
