"""Ids put into a request's path, as one path segment each (clients).

An id is URL-quoted with no safe characters, so `/`, `?` and `#` cannot leave its segment.
Quoting leaves `.` and `..` as they are, and an empty id leaves `//`: httpx (and any server)
would resolve those to another path (`assets/../tags` is `tags`), so a write meant for one
asset would reach another endpoint. Such an id is refused before anything is sent.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

from bridge.errors import PermanentError

_NOT_SEGMENTS: Final = frozenset({"", ".", ".."})


def path_segment(name: str, value: Any, what: str = "an id") -> str:
    """`value` URL-quoted as one path segment; PermanentError naming `name` if it cannot be."""
    text = str(value)
    if text.strip() in _NOT_SEGMENTS:
        raise PermanentError(
            f"{name} {text!r} is not {what}: an empty, '.' or '..' segment would send the "
            "request to another path"
        )
    return quote(text, safe="")


def check_ids(values: dict[str, Any]) -> None:
    """Refuse (PermanentError) any of these path ids before a step sends its first request."""
    for name, value in values.items():
        path_segment(name, value)
