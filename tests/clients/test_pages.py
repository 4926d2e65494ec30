"""What ends a list, and every paging loop bounded (review R2, S2 and S3).

A fake API over loopback answers as badly behaved APIs do: one bare list of everything
whatever the page asked (it ignores `page`), pages capped below the size asked for that
say more follow, and pages that never end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.actions import ActionDeps, StepCall, registry
from bridge.clients import LythoClient, LythoWorkflowClient, RetryPolicy
from bridge.clients import pages as pages_module
from bridge.clients.lytho_profile import default_profile
from bridge.clients.pages import read_page
from bridge.errors import PermanentError
from bridge.sandbox.server import ThreadedServer
from bridge.settings import Secret

DAM = default_profile().dam_pages
IGNORED = (
    "GET {path}: page {n} repeats page {p}; the API seems to ignore '{param}' "
    "({api}.pages.page_param in BRIDGE_LYTHO_PROFILE, docs/lytho-api.md)"
)


class Api:
    """How the fake API answers a list, and what it was asked."""

    def __init__(self) -> None:
        self.mode = "bare"
        self.count = 60
        self.asked: list[str] = []

    def reset(self, mode: str, count: int = 60) -> None:
        self.mode, self.count, self.asked = mode, count, []

    def answer(self, request: Request) -> Any:
        query = request.query_params
        self.asked.append(f"{request.url.path}?{request.url.query}")
        everything = [{"id": n, "name": f"tag-{n}"} for n in range(1, self.count + 1)]
        if self.mode == "bare":  # the page and its size ignored: all of it, every time
            return everything
        number = int(query.get("page", "0"))
        if self.mode == "capped":  # 20 a page whatever the size asked; says more follow
            chunk = everything[number * 20 : number * 20 + 20]
            pages = -(-self.count // 20)
            return {"content": chunk, "last": number >= pages - 1, "totalPages": pages}
        if self.mode == "totals":  # 20 a page, and only a total to tell the end by
            return {"items": everything[number * 20 : number * 20 + 20], "total": self.count}
        # endless: a full page of new items, never the last
        return {"content": [{"id": number * 50 + n} for n in range(50)], "last": False}


@pytest.fixture(scope="module")
def api_running() -> Iterator[tuple[Api, str]]:
    api = Api()

    async def listing(request: Request) -> JSONResponse:
        if request.url.path.endswith("/oauth/token"):
            return JSONResponse({"access_token": "t", "expires_in": 3600})
        return JSONResponse(api.answer(request))

    app = Starlette(routes=[Route("/{p:path}", listing, methods=["GET", "POST"])])
    server = ThreadedServer(app)
    server.start()
    yield api, server.url
    server.stop()


@pytest.fixture
def api(api_running: tuple[Api, str]) -> Api:
    api_running[0].reset("bare")
    return api_running[0]


@pytest.fixture
def lytho(api_running: tuple[Api, str], http: httpx.AsyncClient) -> LythoClient:
    return LythoClient(http, f"{api_running[1]}/v1/", Secret("k"), retry=RetryPolicy(attempts=1))


def test_a_page_says_more_follow_before_a_short_page_ends_it() -> None:
    twenty = [{"id": n} for n in range(20)]
    # The review's case: a short page with last: false and 5 pages is not the last.
    page = read_page({"content": twenty, "last": False, "totalPages": 5}, DAM, "assets")
    assert not page.is_last(0, 50, DAM)
    assert read_page({"content": twenty, "last": True}, DAM, "assets").is_last(0, 50, DAM)
    assert not read_page({"content": twenty, "totalPages": 5}, DAM, "a").is_last(0, 50, DAM)
    assert read_page({"content": twenty, "totalPages": 5}, DAM, "a").is_last(4, 50, DAM)
    # A total ends the list once that many entries were read.
    page = read_page({"items": twenty, "total": 60}, DAM, "assets")
    assert not page.is_last(0, 50, DAM, read=20) and page.is_last(2, 50, DAM, read=60)
    # A total equal to the page's own count proves nothing: the short page decides.
    assert read_page({"items": twenty, "count": 20}, DAM, "a").is_last(3, 50, DAM, read=80)
    full = [{"id": n} for n in range(50)]
    assert not read_page({"items": full, "count": 50}, DAM, "a").is_last(1, 50, DAM, read=100)
    # Saying nothing: a short page ends the list.
    assert read_page({"content": twenty}, DAM, "assets").is_last(0, 50, DAM)


@pytest.mark.asyncio
async def test_an_api_that_ignores_the_page_parameter_is_stopped_at_once(
    api: Api, lytho: LythoClient
) -> None:
    # 60 tags in one bare list for every page: was 3,380 requests in 3 s (review R2, S3).
    with pytest.raises(PermanentError) as caught:
        await lytho.get_tag_by_name("brand-new")
    assert str(caught.value) == IGNORED.format(path="tags", n=1, p=0, param="page", api="dam")
    assert api.asked == [
        "/v1/tags?name=brand-new&page=0&size=50",
        "/v1/tags?name=brand-new&page=1&size=50",
    ]


@pytest.mark.asyncio
async def test_pages_capped_below_the_size_are_read_to_the_end(
    api: Api, lytho: LythoClient
) -> None:
    # 20 a page though 50 were asked, and the page says more follow: tag 55 is on page 2
    # (review R2, S2: the first short page ended the list, and ensure_tag made a duplicate).
    api.reset("capped")
    found = await lytho.get_tag_by_name("tag-55")
    assert found == {"id": 55, "name": "tag-55"}
    assert len(api.asked) == 3
    api.reset("totals")
    assert [t["id"] async for t in lytho.iter_tags()] == list(range(1, 61))
    assert len(api.asked) == 3  # the total ended it: no empty fourth page asked


@pytest.mark.asyncio
async def test_a_list_that_never_ends_stops_at_the_cap(
    api: Api, lytho: LythoClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages_module, "MAX_PAGES", 3)
    api.reset("endless")
    with pytest.raises(PermanentError) as caught:
        async for _ in lytho.iter_assets():
            pass
    assert str(caught.value) == (
        "GET assets: no last page after 3 pages of 50; stopped there. Check that the API "
        "honours 'size' and 'page' (dam.pages in BRIDGE_LYTHO_PROFILE, docs/lytho-api.md)"
    )
    assert len(api.asked) == 3


@pytest.mark.asyncio
async def test_a_list_that_says_its_length_is_read_past_the_cap(
    api: Api, lytho: LythoClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A DAM longer than the cap is long, not endless: its total ends it.
    monkeypatch.setattr(pages_module, "MAX_PAGES", 3)
    api.reset("totals", count=100)  # 5 pages of 20
    assert [t["id"] async for t in lytho.iter_tags()] == list(range(1, 101))
    assert len(api.asked) == 5


@pytest.mark.asyncio
async def test_a_workflow_search_that_ignores_the_page_is_stopped(
    api: Api, api_running: tuple[Api, str]
) -> None:
    api.reset("bare", count=45)  # more than the largest page size, 30
    url = api_running[1]
    async with httpx.AsyncClient() as http:
        token_url, retry = f"{url}/oauth/token", RetryPolicy(attempts=1)
        flow = LythoWorkflowClient(http, f"{url}/v1/", token_url, "id", Secret("s"), retry=retry)
        with pytest.raises(PermanentError) as caught:
            async for _ in flow.search("proof"):
                pass
    assert str(caught.value) == IGNORED.format(
        path="proof/search", n=2, p=1, param="page", api="workflow"
    )
    assert [a for a in api.asked if "search" in a] == [
        "/v1/proof/search?page=1&pageSize=30",
        "/v1/proof/search?page=2&pageSize=30",
    ]


@pytest.mark.asyncio
async def test_find_assets_stops_on_a_repeated_page(
    api: Api, lytho: LythoClient, http: httpx.AsyncClient
) -> None:
    retry = RetryPolicy(attempts=1)
    deps = ActionDeps(None, http, retry, httpx.Timeout(5), lytho=lytho)  # type: ignore[arg-type]
    call = StepCall({"name": "nothing-matches"}, {}, "e", "r", "s")
    with pytest.raises(PermanentError) as caught:
        await registry()["lytho.find_assets"].run(deps, call)
    assert str(caught.value) == "lytho.find_assets: " + IGNORED.format(
        path="assets", n=1, p=0, param="page", api="dam"
    )
    assert len(api.asked) == 2
