"""Tolerant reading of a page of a list, whatever its shape (clients).

Lytho documents no page shape, so a page is read the way the profile says first, then in
the shapes APIs commonly use: items under `content` (Spring), `items`, `data` or
`results`, or a bare list; its end from a last-page flag, a number of pages, or a short
page. `Page.shape` says which shape it was, so the caller can tell the user when the
profile's guess was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.clients.lytho_profile import ITEM_KEYS, LIST, PageStyle
from bridge.errors import ClientError

_TOTALS = ("totalElements", "totalCount", "total", "count")
_PAGES = ("totalPages", "pageCount", "pages")
_LASTS = ("last", "isLast", "lastPage")


@dataclass(frozen=True)
class Page:
    """One page: its items, the shape they came in, and what it says about the rest."""

    items: list[dict[str, Any]]
    shape: str  # the key the items were under, or "list" for a bare list
    held: int  # entries on the page, objects or not
    total: int | None = None
    total_pages: int | None = None
    last: bool | None = None

    def is_last(self, page: int, size: int, style: PageStyle) -> bool:
        """Whether page number `page` (counted as the API counts) ends the list."""
        if self.held == 0 or self.last is True:
            return True
        if self.total_pages is not None and page - style.first_page + 1 >= self.total_pages:
            return True
        return self.held < size


def _number(body: dict[str, Any], preferred: str, others: tuple[str, ...]) -> int | None:
    for key in (preferred, *others):
        value = body.get(key) if key else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def read_page(body: Any, style: PageStyle, what: str) -> Page:
    """The page in `body` as `style` expects it or in a common shape; ClientError if none."""
    if isinstance(body, list):
        entries, shape = body, LIST
        meta: dict[str, Any] = {}
    elif isinstance(body, dict):
        keys = [style.items] if style.items != LIST else []
        keys += [k for k in ITEM_KEYS if k not in keys]
        shape = next((k for k in keys if isinstance(body.get(k), list)), "")
        if not shape:
            tried = ", ".join(keys)
            raise ClientError(
                f"GET {what}: expected a page of items (tried {tried} and a bare list), got "
                f"an object with keys {', '.join(sorted(map(str, body))[:8]) or 'none'}; "
                "set the page shape in BRIDGE_LYTHO_PROFILE (docs/lytho-api.md)"
            )
        entries, meta = body[shape], body
    else:
        raise ClientError(f"GET {what}: expected a page of items, got {body!r:.100}")
    last = meta.get(style.last) if style.last else None
    if not isinstance(last, bool):
        last = next((meta[k] for k in _LASTS if isinstance(meta.get(k), bool)), None)
    return Page(
        items=[item for item in entries if isinstance(item, dict)],
        shape=shape,
        held=len(entries),
        total=_number(meta, style.total, _TOTALS),
        total_pages=_number(meta, style.total_pages, _PAGES),
        last=last,
    )
