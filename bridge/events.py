"""The Event: CloudEvents 1.0 attributes plus `changes`, with stable ids (the flow's currency)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SPECVERSION = "1.0"
# Ids are bounded: they name Redis keys, job ids, log lines and dashboard links.
MAX_ID_LENGTH = 256


def utc_now() -> str:
    """The current time as an RFC 3339 string in UTC."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stable_id(*parts: object) -> str:
    """A deterministic id from the parts: the same change seen twice gets the same id."""
    raw = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return "evt_" + hashlib.sha256(raw.encode()).hexdigest()[:32]


def bounded_id(raw: str) -> str:
    """`raw` when it is at most MAX_ID_LENGTH characters, else a stable hash of it."""
    if len(raw) <= MAX_ID_LENGTH:
        return raw
    return "evt_" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class Event:
    """Something that happened in Lytho, Lytics or any sender, as rules see it."""

    id: str
    source: str
    type: str
    data: Any = None
    subject: str | None = None
    time: str = field(default_factory=utc_now)
    changes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-able dict (CloudEvents attribute names)."""
        out: dict[str, Any] = {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time,
            "data": self.data,
        }
        if self.subject is not None:
            out["subject"] = self.subject
        if self.changes:
            out["changes"] = {k: dict(v) for k, v in self.changes.items()}
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Event:
        """Rebuild an event from `to_dict()` output."""
        return cls(
            id=str(raw["id"]),
            source=str(raw["source"]),
            type=str(raw["type"]),
            data=raw.get("data"),
            subject=raw.get("subject"),
            time=str(raw.get("time") or utc_now()),
            changes=raw.get("changes") or {},
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)
