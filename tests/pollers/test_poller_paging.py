"""Pollers against APIs that misbehave: a list that ignores the page parameter stops a
pass with one clear error (and the pass starts again, neither looping nor skipping), and
the Workflow filter is judged ignored only by an object older than the filter by more
than a second, a verdict tested again a day later (review R2, S3 and S4)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.errors import PermanentError
from bridge.ingress.pollers.lytho_workflow import filter_status
from bridge.ingress.pollers.snapshot import Snapshot
from bridge.sandbox.server import ThreadedServer
from tests.pollers.support import Slots, make_context, poller

pytestmark = pytest.mark.asyncio
IGNORED = (
    "GET {path}: page {n} repeats page {p}; the API seems to ignore 'page' "
    "({api}.pages.page_param in BRIDGE_LYTHO_PROFILE, docs/lytho-api.md)"
)


class Api:
    """The fake API: what it holds, how it filters, what it was asked."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.asked: list[str] = []
        self.filter = "seconds"  # or "ignore"
        self.tasks_repeat = False
        self.proofs = [
            {"id": 7, "modifiedAt": "2026-12-06T10:00:00.200Z", "status": "draft"},
            {"id": 8, "modifiedAt": "2026-12-06T10:00:00.500Z", "status": "draft"},
        ]

    def answer(self, request: Request) -> Any:
        path, query = request.url.path, request.query_params
        self.asked.append(f"{request.method} {path}?{request.url.query}")
        if path.endswith("/oauth/token"):
            return {"access_token": "t", "expires_in": 3600}
        if path.startswith("/dam/"):  # every asset in one bare list, whatever the page
            return [{"id": n, "name": f"asset {n}"} for n in range(1, 61)]
        if path == "/wf/v1/task/search" and self.tasks_repeat:  # 45 tasks, page ignored
            return [{"id": n, "modifiedAt": "2026-12-06T09:00:00Z"} for n in range(45)]
        items = self.proofs if path == "/wf/v1/proof/search" else []
        since = query.get("modifiedSince")
        if since and self.filter == "seconds":  # honoured to the whole second, inclusive
            items = [i for i in items if i["modifiedAt"][:19] >= since[:19]]
        return {"items": items, "totalCount": len(items), "totalPages": 1}


@pytest.fixture(scope="module")
def api_running() -> Iterator[tuple[Api, str]]:
    api = Api()

    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse(api.answer(request))

    app = Starlette(routes=[Route("/{p:path}", endpoint, methods=["GET", "POST"])])
    server = ThreadedServer(app)
    server.start()
    yield api, server.url
    server.stop()


@pytest.fixture
def api(api_running: tuple[Api, str]) -> tuple[Api, str]:
    api_running[0].reset()
    return api_running


def env(url: str) -> dict[str, str]:
    return {
        "LYTHO_API_URL": f"{url}/dam/v1/",
        "LYTHO_API_KEY": "k",
        "LYTHO_WORKFLOW_API_URL": f"{url}/wf/v1/",
        "LYTHO_TOKEN_URL": f"{url}/wf/oauth/token",
        "LYTHO_CLIENT_ID": "id",
        "LYTHO_CLIENT_SECRET": "secret",
    }


async def test_the_dam_poller_stops_a_pass_whose_pages_repeat(
    api: tuple[Api, str], redis_url: str, key_prefix: str
) -> None:
    fake, url = api
    context = await make_context(redis_url, key_prefix, env(url))
    try:
        dam = poller(context, "lytho")
        for _ in range(2):  # each run: one clear error, and the pass starts again
            fake.asked = []
            with pytest.raises(PermanentError) as caught:
                await dam.poll(Slots(50))
            assert str(caught.value) == IGNORED.format(path="assets", n=1, p=0, api="dam")
            assert fake.asked == [
                "GET /dam/v1/assets?page=0&size=50",
                "GET /dam/v1/assets?page=1&size=50",
            ]
            state = await Snapshot(context.redis, key_prefix, "lytho").state()
            assert (state["page"], state["read"], state["prev"]) == ("0", "0", "")
        # Nothing was lost: page 0's assets are in the snapshot.
        assert len(await Snapshot(context.redis, key_prefix, "lytho").ids("assets")) == 60
    finally:
        await context.close()


async def test_the_workflow_poller_stops_a_search_whose_pages_repeat(
    api: tuple[Api, str], redis_url: str, key_prefix: str
) -> None:
    fake, url = api
    context = await make_context(redis_url, key_prefix, env(url))
    try:
        workflow = poller(context, "lytho_workflow")
        fake.tasks_repeat = True
        with pytest.raises(PermanentError) as caught:
            await workflow.poll(Slots(50))
        assert str(caught.value) == IGNORED.format(path="task/search", n=2, p=1, api="workflow")
        tasks = [a for a in fake.asked if "/task/" in a]
        assert tasks == [
            "GET /wf/v1/task/search?page=1&pageSize=30",
            "GET /wf/v1/task/search?page=2&pageSize=30",
        ]
        state = await Snapshot(context.redis, key_prefix, "lytho_workflow").state()
        assert (state["task:page"], state["task:read"], state["task:prev"]) == ("1", "0", "")
    finally:
        await context.close()


async def test_a_filter_kept_to_the_second_is_honoured_and_a_verdict_is_tested_again(
    api: tuple[Api, str], redis_url: str, key_prefix: str
) -> None:
    fake, url = api
    context = await make_context(redis_url, key_prefix, env(url))
    state_key = Snapshot(context.redis, key_prefix, "lytho_workflow").state_key
    try:
        workflow = poller(context, "lytho_workflow")

        async def cycle() -> list[str]:
            fake.asked = []
            assert (await workflow.poll(Slots())).done
            return [a.split("?")[1] for a in fake.asked if "/proof/" in a]

        await cycle()  # seeds: the filter's time is now proof 8's, 10:00:00.500Z
        assert await cycle() == ["modifiedSince=2026-12-06T10%3A00%3A00.500Z&page=1&pageSize=30"]
        # Proof 7 came back, 0.3 s older than the filter: within a second, no proof.
        assert (await filter_status(context.redis, key_prefix))["proof"] == "honoured"

        # An API that ignores the filter: a proof an hour older comes back.
        fake.filter = "ignore"
        fake.proofs.append({"id": 10, "modifiedAt": "2026-12-06T09:00:00Z", "status": "x"})
        await cycle()
        assert (await filter_status(context.redis, key_prefix))["proof"] == "ignored"
        assert await cycle() == ["page=1&pageSize=30"]  # full passes now

        # A day later the verdict is tested again; the API honours the filter now.
        fake.filter = "seconds"
        day_ago = str(int(time.time()) - 86_401)
        await context.redis.hset(state_key, "proof:filter_at", day_ago)
        assert await cycle() == ["modifiedSince=2026-12-06T10%3A00%3A00.500Z&page=1&pageSize=30"]
        assert (await filter_status(context.redis, key_prefix))["proof"] == "honoured"
        assert await cycle() == ["modifiedSince=2026-12-06T10%3A00%3A00.500Z&page=1&pageSize=30"]
    finally:
        await context.close()
