"""`bridge doctor` for the Lytho DAM API, part one: auth, page parameters and shape (operate).

The first page is told by comparing two pages of one asset each: page 0 and page 1 (or,
for a profile counting from 1, page 1 and page 0). An API that refuses page 0, leaves it
empty or answers it like page 1 counts from 1; a third page tells a repeated first page
from an ignored page parameter.
"""

from __future__ import annotations

import json
from typing import Any

from bridge.clients.lytho_profile import LIST, LythoProfile
from bridge.clients.pages import Page, read_page
from bridge.errors import ClientError
from bridge.operate.doctor_probe import (
    DAM,
    FAIL,
    OK,
    UNKNOWN,
    Answer,
    Check,
    Halt,
    Probe,
    unreachable,
)

# The requests of the page checks: the first page, the page before or after it, and one
# more when two pages look the same.
PAGE_REQUESTS = 3


def ident(item: dict[str, Any]) -> str:
    """An item's id as text (its JSON when it has none)."""
    value = item.get("id")
    return str(value) if value is not None else json.dumps(item, sort_keys=True)[:40]


class DamPages:
    """The DAM checks' state, and the checks of authentication and pages."""

    def __init__(self, probe: Probe, profile: LythoProfile) -> None:
        self.probe = probe
        self.profile = profile
        self.style = profile.dam_pages
        self.checks: list[Check] = []
        self.ids: dict[str, str] = {}
        # Where the asset list's pages start as seen, so the other lists' checks try
        # their paths, not the first page again.
        self.first_seen = self.style.first_page

    def add(self, key: str, title: str, status: str, saw: str, *entries: str, **more: str) -> None:
        self.checks.append(Check(DAM, key, title, status, saw, more.get("expected", ""), entries))

    def _params(self, page: int) -> dict[str, int]:
        return {self.style.page_param: page, self.style.size_param: 1}

    async def _page_answer(self, page: int) -> Answer:
        answer = await self.probe.get(self.profile.dam_path("assets"), self._params(page))
        if answer.status == 0:
            raise unreachable(DAM, answer, "LYTHO_API_URL")
        if answer.status in (401, 403):
            header = self.profile.value("dam.auth.header")
            scheme = self.profile.value("dam.auth.scheme")
            sent = f"{scheme} <LYTHO_API_KEY>" if scheme else "the bare key"
            raise Halt(
                Check(
                    DAM,
                    "dam.auth",
                    "authentication",
                    FAIL,
                    f"{answer.shown()}: the key was refused (sent in header {header} as {sent})",
                    "a 2xx answer; check LYTHO_API_KEY, and dam.auth.header / dam.auth.scheme "
                    "in BRIDGE_LYTHO_PROFILE",
                    ("dam.auth.header", "dam.auth.scheme"),
                )
            )
        if answer.status == 404:
            raise Halt(
                Check(
                    DAM,
                    "dam.paths.assets",
                    "asset list",
                    FAIL,
                    f"{answer.shown()}: no such path",
                    "a page of assets; check LYTHO_API_URL and dam.paths.assets",
                    ("dam.paths.assets",),
                )
            )
        return answer

    def _read(self, answer: Answer) -> Page | str:
        if not answer.ok:
            return f"{answer.status}" + (f" ({answer.message()})" if answer.message() else "")
        if not answer.is_json:
            return answer.not_json("LYTHO_API_URL")
        try:
            return read_page(answer.body, self.style, self.profile.dam_path("assets"))
        except ClientError as exc:
            return str(exc)

    async def pages(self) -> dict[str, Any] | None:
        """Auth, first page, page parameters, page shape and totals; the first asset."""
        first = self.style.first_page
        other = first - 1 if first > 0 else first + 1
        a = await self._page_answer(first)
        b = await self._page_answer(other)
        if not (a.ok or b.ok):
            raise Halt(
                Check(
                    DAM,
                    "dam.paths.assets",
                    "asset list",
                    FAIL,
                    f"{a.shown()} ({a.message()}); {b.shown()} ({b.message()})",
                    "a page of assets",
                    ("dam.paths.assets", "dam.pages.page_param", "dam.pages.size_param"),
                )
            )
        ok = a if a.ok else b
        header = self.profile.value("dam.auth.header")
        entries = ("dam.auth.header", "dam.auth.scheme")
        # Only a page of assets, as JSON, shows the key was checked: a login page or the
        # page of a wrong base URL answers 200 to any key.
        if not ok.is_json:
            raise Halt(Check(DAM, "dam.auth", "authentication", FAIL, ok.not_json("LYTHO_API_URL")))
        if isinstance(self._read(ok), Page):
            saw = f"the key in header {header} was accepted ({ok.shown()})"
            self.add("dam.auth", "authentication", OK, saw, *entries)
        else:
            saw = (
                f"{ok.shown()} is JSON but not a page of assets: cannot tell if the key was checked"
            )
            self.add("dam.auth", "authentication", UNKNOWN, saw, *entries)
        pa, pb = self._read(a), self._read(b)
        parsed = [p for p in (pa, pb) if isinstance(p, Page)]
        if not parsed:
            self.add(
                "dam.pages.items",
                "page shape",
                FAIL,
                str(pa),
                "dam.pages.items",
                expected="a page of items",
            )
            return None
        shaped = next((p for p in parsed if p.items), parsed[0])
        await self.first_page(first, other, pa, pb)
        self.shape(shaped, a if shaped is pa else b)
        items = [p.items[0] for p in parsed if p.items]
        if items:
            self.ids["asset_id"] = ident(items[0])
            return items[0]
        return None

    async def first_page(self, first: int, other: int, pa: Page | str, pb: Page | str) -> None:
        """Compare page `first` with the page before it (or after page 0), one asset each."""
        style = self.style
        param_entries = ("dam.pages.page_param", "dam.pages.size_param", "dam.paths.assets")

        def items(page: Page | str) -> list[dict[str, Any]]:
            return page.items if isinstance(page, Page) else []

        def said(number: int, page: Page | str) -> str:
            if not isinstance(page, Page):
                return f"page {number} answers {page}"
            if not page.items:
                return f"page {number} is empty"
            return f"page {number} holds asset {ident(page.items[0])}"

        oversized = [p for p in (pa, pb) if isinstance(p, Page) and p.held > 1]
        if oversized:
            self.add(
                "dam.pages.size_param",
                "page parameters",
                FAIL,
                f"{style.size_param}=1 gave {oversized[0].held} items: the API ignores "
                f"{style.size_param!r}",
                *param_entries,
                expected=f"at most one item with {style.size_param}=1",
            )
        mine, theirs = items(pa), items(pb)
        seen = f"{said(first, pa)}, {said(other, pb)}"
        entry = ("dam.pages.first_page",)
        if not mine and not theirs:
            status = UNKNOWN if isinstance(pa, Page) else FAIL
            self.add(
                "dam.pages.first_page",
                "first page",
                status,
                f"{seen}: no assets to tell where pages start",
                *entry,
            )
            return
        same = bool(mine and theirs and ident(mine[0]) == ident(theirs[0]))
        page_param_ok: bool | None = not same
        if same:
            # Either the API treats both numbers as its first page, or it ignores the
            # page parameter: a third page tells.
            third = max(first, other) + 1
            c = self._read(await self._page_answer(third))
            seen += f", {said(third, c)}"
            page_param_ok = not (items(c) and ident(items(c)[0]) == ident(mine[0]))
        if page_param_ok and not oversized:
            self.add(
                "dam.pages.page_param",
                "page parameters",
                OK,
                f"{style.page_param} moves through the list and {style.size_param}=1 gives "
                "one asset",
                *param_entries,
            )
        elif page_param_ok is False:
            self.add(
                "dam.pages.page_param",
                "page parameters",
                FAIL,
                f"{seen}: the API ignores {style.page_param!r}",
                *param_entries,
                expected=f"another asset on each page (dam.pages.page_param: {style.page_param})",
            )
            return
        counts_from: int
        if first == 0:
            # Page 0 must be a page of its own: refused, empty or the same as page 1 means
            # the API counts from 1.
            counts_from = 0 if mine and not same else 1
        else:
            # The page before the first must not hold assets of its own.
            counts_from = first - 1 if theirs and not same else first
        self.first_seen = counts_from
        if counts_from == first:
            self.add(
                "dam.pages.first_page",
                "first page",
                OK,
                f"{seen}: pages count from {first}",
                *entry,
            )
        else:
            self.add(
                "dam.pages.first_page",
                "first page",
                FAIL,
                f"{seen}: pages count from {counts_from}",
                *entry,
                expected=f"pages counted from {first} (set dam.pages.first_page: {counts_from})",
            )

    def shape(self, page: Page, answer: Answer) -> None:
        style = self.style
        where = "a bare list" if page.shape == LIST else f"items under {page.shape!r}"
        if page.shape == style.items:
            self.add("dam.pages.items", "page shape", OK, where, "dam.pages.items")
        else:
            self.add(
                "dam.pages.items",
                "page shape",
                FAIL,
                f"{where} (lytbridge reads it anyway, and warns)",
                "dam.pages.items",
                expected=f"items under {style.items!r} (set dam.pages.items: {page.shape})",
            )
        body = answer.body if isinstance(answer.body, dict) else {}
        wanted = [
            ("dam.pages.total", style.total, int),
            ("dam.pages.total_pages", style.total_pages, int),
            ("dam.pages.last", style.last, bool),
        ]
        checked = [(entry, key, kind) for entry, key, kind in wanted if key]
        if not checked:
            self.add(
                "dam.pages.total", "page totals", OK, "none expected: a short page ends a list"
            )
            return
        found = [
            f"{key} {json.dumps(body[key])}"
            for _, key, kind in checked
            if isinstance(body.get(key), kind)
        ]
        missing = [key for _, key, kind in checked if not isinstance(body.get(key), kind)]
        entries = tuple(entry for entry, _, _ in checked)
        if not missing:
            self.add("dam.pages.total", "page totals", OK, ", ".join(found), *entries)
            return
        keys = ", ".join(sorted(k for k in map(str, body) if k != page.shape)) or "none"
        self.add(
            "dam.pages.total",
            "page totals",
            FAIL,
            f"no {', '.join(missing)} in a page (its other keys: {keys}); lytbridge then ends "
            "a list at a short page",
            *entries,
            expected='the keys of dam.pages.total, total_pages and last ("" for none)',
        )
