"""Tolerant reading of a page of a list, whatever its shape (clients).

Lytho documents no page shape, so a page is read the way the profile says first, then in
the shapes APIs commonly use: items under `content` (Spring), `items`, `data` or
`results`, or a bare list. What ends a list (`Page.is_last`): an empty page; else a
last-page flag when the page has one; else its number of pages; else its total, once that
many entries were read (a total equal to the page's own count of entries proves nothing:
some APIs count the page); only when the page says none of these, a page shorter than the
size asked for. `Page.shape` says which shape it was, so the caller can tell the user when
the profile's guess was wrong.

`Walk` bounds every paging loop: a page with the same ids as the page before means the API
ignores the page parameter (it would answer the same page forever), and no list is read
past `MAX_PAGES` pages without saying how long it is; either is a PermanentError (a
ClientError no retry can help) saying what to check.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from bridge.clients.lytho_profile import ITEM_KEYS, LIST, PageStyle
from bridge.errors import ClientError, PermanentError

# The most pages one list is read in (500,000 assets at the DAM's 50 a page): past that, an
# API that never says "last" is stopped with an error instead of read forever.
MAX_PAGES: Final = 10_000
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

    def is_last(self, page: int, size: int, style: PageStyle, read: int | None = None) -> bool:
        """Whether page number `page` (counted as the API counts) ends the list: what the
        page says first (its last-page flag, else its number of pages, else its total when
        `read`, the entries read so far with this page's, is given); only when it says
        nothing, a page shorter than `size` (an API that caps its pages below `size` and
        says so is read on)."""
        if self.held == 0:
            return True
        if self.last is not None:
            return self.last
        if self.total_pages is not None:
            return page - style.first_page + 1 >= self.total_pages
        if self.total is not None and read is not None and self.total != self.held:
            return read >= self.total
        return self.held < size

    @property
    def mark(self) -> str:
        """A short fingerprint of the page's ids (of its items, where they have none)."""
        ids = [item.get("id", item) for item in self.items]
        text = json.dumps([self.held, ids], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class EndlessList(PermanentError):
    """A list that would never end: a page repeated, or more than MAX_PAGES pages."""


@dataclass
class Walk:
    """One read through a list's pages: which page ends it, and an error for a read that
    would never end. `read` and `previous` are what a poller keeps between runs."""

    what: str  # how messages name the list: "GET assets"
    api: str  # "dam" or "workflow": the profile's keys messages name
    style: PageStyle
    size: int
    read: int = 0  # entries read so far
    previous: str = ""  # the mark of the page before

    def last(self, number: int, page: Page) -> bool:
        """Take page `number`; whether it ends the list. EndlessList when it repeats the
        page before (the page parameter is ignored) or the list passes MAX_PAGES pages."""
        counted = number - self.style.first_page + 1
        if counted > 1 and page.held and page.mark == self.previous:
            raise EndlessList(
                f"{self.what}: page {number} repeats page {number - 1}; the API seems to "
                f"ignore {self.style.page_param!r} ({self.api}.pages.page_param in "
                "BRIDGE_LYTHO_PROFILE, docs/lytho-api.md)"
            )
        self.previous = page.mark
        self.read = (self.read if counted > 1 else 0) + page.held
        if page.is_last(number, self.size, self.style, self.read):
            return True
        # A list that says how long it is ends by that (a DAM of a million assets is
        # long, not endless); the cap is for a list that says nothing.
        if counted >= MAX_PAGES and page.total is None and page.total_pages is None:
            raise EndlessList(
                f"{self.what}: no last page after {MAX_PAGES} pages of {self.size}; stopped "
                f"there. Check that the API honours {self.style.size_param!r} and "
                f"{self.style.page_param!r} ({self.api}.pages in BRIDGE_LYTHO_PROFILE, "
                "docs/lytho-api.md)"
            )
        return False


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
