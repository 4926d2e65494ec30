"""Look-ups as steps: lytho.find_assets, lytho.get_asset, lytho_workflow.get and http.request,
against the sandboxes over loopback; the run's cache of look-ups; a find that needs more
requests than fit in one step; then a rule that names a proof's reviewers, end to end."""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from bridge.actions import ActionDeps, RunReads, StepCall, registry
from bridge.actions.action import StepMemo
from bridge.clients import LythoClient, LythoWorkflowClient, RetryPolicy
from bridge.clients.outbound import guarded_client
from bridge.errors import PermanentError, RateLimited
from bridge.queue.keys import Keys
from bridge.sandbox.lytho import create_lytho_app
from bridge.sandbox.lytho_workflow import create_lytho_workflow_app
from bridge.sandbox.server import ThreadedServer
from bridge.settings import Secret
from tests.helpers import Bridge, running_bridge, wait_for

KEY = "lookup-test-key"
WF_ID, WF_SECRET = "wf-oa-lookups", "wf-lookups-secret"


class Sandbox:
    def __init__(self, server: ThreadedServer) -> None:
        self.url = server.url

    def control(self, path: str, body: Any = None, method: str = "POST") -> Any:
        response = httpx.request(method, f"{self.url}/_sandbox/{path}", json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def requests(self) -> list[str]:
        found = httpx.get(f"{self.url}/_sandbox/requests").json()["requests"]
        return [
            f"{r['method']} {r['path']}" + (f"?{r['query']}" if r.get("query") else "")
            for r in found
            if not r["path"].endswith("/oauth/token")
        ]

    def forget_requests(self) -> None:
        httpx.delete(f"{self.url}/_sandbox/requests").raise_for_status()


@pytest.fixture(scope="module")
def dam_running() -> Iterator[Sandbox]:
    server = ThreadedServer(create_lytho_app(KEY, rate_limit_per_minute=None))
    server.start()
    yield Sandbox(server)
    server.stop()


@pytest.fixture
def dam(dam_running: Sandbox) -> Sandbox:
    dam_running.control("reset")
    return dam_running


@pytest.fixture(scope="module")
def workflow_running() -> Iterator[Sandbox]:
    server = ThreadedServer(create_lytho_workflow_app(WF_ID, WF_SECRET))
    server.start()
    yield Sandbox(server)
    server.stop()


@pytest.fixture
def workflow(workflow_running: Sandbox) -> Sandbox:
    workflow_running.control("reset")
    return workflow_running


@pytest.fixture
async def deps(dam: Sandbox, workflow: Sandbox) -> AsyncIterator[ActionDeps]:
    async with httpx.AsyncClient() as http:
        retry = RetryPolicy(attempts=1)
        lytho = LythoClient(http, f"{dam.url}/v1/", Secret(KEY), retry=retry)
        flow = LythoWorkflowClient(
            http, f"{workflow.url}/v1/", f"{workflow.url}/oauth/token", WF_ID, Secret(WF_SECRET)
        )
        # The clients are built without the shared limiter: these tests count requests.
        yield ActionDeps(
            None,  # type: ignore[arg-type]
            http,
            retry,
            httpx.Timeout(5.0),
            lytho=lytho,
            lytho_workflow=flow,
        )


def step(params: dict[str, Any], **more: Any) -> StepCall:
    return StepCall(params, {}, "e-1", "r-1", "s", **more)


async def run(deps: ActionDeps, action: str, **params: Any) -> dict[str, Any]:
    return await registry()[action].run(deps, step(params))


def ids(result: dict[str, Any]) -> list[int]:
    return [asset["id"] for asset in result["assets"]]


def add_assets(dam: Sandbox, count: int, **fields: Any) -> list[int]:
    """Assets made in the sandbox as someone would upload them; their ids."""
    return [
        dam.control("assets", {"name": f"Bulk {n}", "fileName": f"bulk-{n}.jpg", **fields})["id"]
        for n in range(count)
    ]


# lytho.get_asset.


async def test_get_asset_gives_tag_names_and_metadata_values(
    deps: ActionDeps, dam: Sandbox
) -> None:
    asset = await run(deps, "lytho.get_asset", asset_id=1003)

    assert asset["id"] == 1003
    assert asset["fileName"] == "spring-social-story.mp4"
    assert asset["tag_names"] == ["draft", "social"]
    assert asset["metadata_values"] == {"campaign": "spring-2026"}
    assert asset["tags"] == [{"id": 4, "name": "social"}, {"id": 8, "name": "draft"}]
    assert dam.requests() == ["GET /v1/assets/1003"]


async def test_get_asset_of_a_missing_asset_names_the_action_and_the_status(
    deps: ActionDeps,
) -> None:
    with pytest.raises(PermanentError) as caught:
        await run(deps, "lytho.get_asset", asset_id=9999)
    assert str(caught.value).startswith(
        "lytho.get_asset: GET /v1/assets/9999 → 404 Not Found: Asset 9999 not found"
    )
    assert caught.value.status == 404


# lytho.find_assets: filters.


@pytest.mark.parametrize(
    ("params", "found"),
    [
        ({"tag": "draft"}, [1003, 1007, 1009]),
        ({"tag": ["social", "DRAFT"]}, [1003]),
        ({"name": "LOGO"}, [1004, 1005]),
        ({"metadata": {"campaign": "spring-2026"}}, [1001, 1002, 1003, 1004]),
        ({"metadata": {"campaign": "spring-2026"}, "tag": "logo"}, [1004]),
        ({"name": "spring", "tag": "social"}, [1002, 1003]),
        ({"collection_id": 501}, [1001, 1002, 1003]),
        ({"collection_id": "501", "tag": "draft"}, [1003]),
        ({"name": "no such asset"}, []),
        ({}, list(range(1001, 1013))),
    ],
)
async def test_find_assets_filters(
    deps: ActionDeps, params: dict[str, Any], found: list[int]
) -> None:
    result = await run(deps, "lytho.find_assets", **params)

    assert ids(result) == found
    assert result["count"] == len(found)
    assert result["truncated"] is False
    assert result["unknown_tags"] == []
    # Each found asset reads as lytho.get_asset gives it.
    for asset in result["assets"]:
        assert set(asset) >= {"tag_names", "metadata_values", "tags", "name"}


async def test_find_assets_by_a_tag_that_does_not_exist_reads_no_assets(
    deps: ActionDeps, dam: Sandbox
) -> None:
    result = await run(deps, "lytho.find_assets", tag=["draft", "no-such-tag"])

    assert result == {"assets": [], "count": 0, "truncated": False, "unknown_tags": ["no-such-tag"]}
    assert not any(r.startswith("GET /v1/assets") for r in dam.requests())


async def test_find_assets_reads_one_list_page_for_a_small_tenant(
    deps: ActionDeps, dam: Sandbox
) -> None:
    await run(deps, "lytho.find_assets", tag="draft")
    assert dam.requests() == [
        "GET /v1/tags?name=draft&page=0&size=50",
        "GET /v1/assets?page=0&size=50",
    ]


# Pages, max_assets and truncated.


async def test_find_assets_reads_every_page(deps: ActionDeps, dam: Sandbox) -> None:
    made = add_assets(dam, 60)
    dam.forget_requests()

    result = await run(deps, "lytho.find_assets", name="bulk")

    assert ids(result) == made
    assert result["truncated"] is False
    assert dam.requests() == ["GET /v1/assets?page=0&size=50", "GET /v1/assets?page=1&size=50"]


async def test_find_assets_stops_at_max_assets(deps: ActionDeps, dam: Sandbox) -> None:
    made = add_assets(dam, 60)
    dam.forget_requests()

    result = await run(deps, "lytho.find_assets", name="bulk", max_assets=10)
    assert ids(result) == made[:10]
    assert (result["count"], result["truncated"]) == (10, True)
    assert dam.requests() == ["GET /v1/assets?page=0&size=50"]

    # As many as there are: all found, and nothing was left unread.
    exact = await run(deps, "lytho.find_assets", name="bulk", max_assets=60)
    assert (exact["count"], exact["truncated"]) == (60, False)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"tag": []},
            "lytho.find_assets 'tag' must be a tag name or a non-empty list of tag names",
        ),
        ({"tag": ["a", 3]}, "lytho.find_assets 'tag' must be a tag name or a non-empty list"),
        ({"name": 7}, "lytho.find_assets 'name' must be a string"),
        ({"metadata": ["a"]}, "lytho.find_assets 'metadata' must be an object {field: value}"),
        ({"collection_id": [501, 502]}, "lytho.find_assets: 'collection_id' must be one id"),
    ],
)
async def test_find_assets_refuses_bad_filters_before_reading_assets(
    deps: ActionDeps, dam: Sandbox, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        await run(deps, "lytho.find_assets", **params)
    assert str(caught.value).startswith(message)
    assert not any(r.startswith("GET /v1/assets") for r in dam.requests())


@pytest.mark.parametrize("most", [0, 1001, "ten", True])
async def test_find_assets_refuses_a_bad_max_assets_before_asking(
    deps: ActionDeps, dam: Sandbox, most: Any
) -> None:
    with pytest.raises(PermanentError) as caught:
        await run(deps, "lytho.find_assets", name="x", max_assets=most)
    assert str(caught.value) == (
        f"lytho.find_assets 'max_assets' must be a whole number from 1 to 1000, not {most!r}"
    )
    assert dam.requests() == []


# Collections: the cheaper of GETs of the members and pages of the list.


async def test_a_collection_of_one_is_one_get(deps: ActionDeps, dam: Sandbox) -> None:
    add_assets(dam, 120)
    httpx.delete(f"{dam.url}/v1/collections/502/assets?assetIds=1005", headers={"x-api-key": KEY})
    dam.forget_requests()

    result = await run(deps, "lytho.find_assets", collection_id=502)

    assert ids(result) == [1004]
    assert dam.requests() == ["GET /v1/collections/502", "GET /v1/assets/1004"]


async def test_collection_members_far_down_the_list_are_read_one_by_one(
    deps: ActionDeps, dam: Sandbox
) -> None:
    made = add_assets(dam, 120)  # 132 assets: three pages
    far = made[100]
    await deps.lytho.add_to_collection(502, [far])  # type: ignore[union-attr]
    dam.forget_requests()

    result = await run(deps, "lytho.find_assets", collection_id=502)

    assert ids(result) == [1004, 1005, far]
    # The first page held two members and said there are three pages: one GET for the
    # third member costs less than the two pages left.
    assert dam.requests() == [
        "GET /v1/collections/502",
        "GET /v1/assets?page=0&size=50",
        f"GET /v1/assets/{far}",
    ]


async def test_many_collection_members_are_read_from_the_list(
    deps: ActionDeps, dam: Sandbox
) -> None:
    made = add_assets(dam, 60)  # 72 assets: two pages
    await deps.lytho.add_to_collection(502, made[40:50])  # type: ignore[union-attr]
    dam.forget_requests()

    result = await run(deps, "lytho.find_assets", collection_id=502, max_assets=5)
    assert ids(result) == [1004, 1005, *made[40:43]]
    assert result["truncated"] is True
    # Three members were still wanted: one page costs less than three GETs.
    assert dam.requests() == [
        "GET /v1/collections/502",
        "GET /v1/assets?page=0&size=50",
        "GET /v1/assets?page=1&size=50",
    ]


async def test_a_missing_collection_is_a_permanent_error_naming_the_action(
    deps: ActionDeps,
) -> None:
    with pytest.raises(PermanentError) as caught:
        await run(deps, "lytho.find_assets", collection_id=999)
    assert str(caught.value).startswith(
        "lytho.find_assets: GET /v1/collections/999 → 404 Not Found: Collection 999 not found"
    )


# A find needing more requests than fit in one step's time goes on where it stopped.


@pytest.fixture
async def memo(redis_url: str, key_prefix: str) -> AsyncIterator[StepMemo]:
    redis = Redis.from_url(redis_url)
    yield StepMemo(redis, f"{key_prefix}memo:", 600)
    await redis.aclose()


async def test_a_long_find_resumes_without_reading_a_page_twice(
    deps: ActionDeps, dam: Sandbox, memo: StepMemo
) -> None:
    made = add_assets(dam, 150, metadata=[{"name": "wave", "value": 3}])  # 162: four pages
    dam.forget_requests()
    resumable = ActionDeps(**{**deps.__dict__, "memo": memo})
    find = registry()["lytho.find_assets"]
    params = {"metadata": {"wave": "3"}, "max_assets": 1000}

    stops: list[str] = []
    while True:
        # Time for one request: once it took any time at all, no second one fits.
        call = step(params, deadline=time.monotonic() + 0.3)
        try:
            result = await find.run(resumable, call)
            break
        except RateLimited as exc:
            stops.append(str(exc))
        assert len(stops) < 10, stops

    assert ids(result) == made
    assert stops[0] == (
        "lytho.find_assets: 38 found so far, page 1 next; 1 request filled this step's time "
        "(Lytho allows few a minute), so it goes on from there in a moment, without spending "
        "a try"
    )
    assert len(stops) == 3
    assert dam.requests() == [f"GET /v1/assets?page={n}&size=50" for n in range(4)]
    # Finished: the memo is emptied, so a replay reads anew.
    assert await memo.get(call) == {}


# The run's cache of look-ups.


async def test_a_run_looks_the_same_object_up_once_until_it_writes(
    deps: ActionDeps, dam: Sandbox, workflow: Sandbox
) -> None:
    reads = RunReads()
    actions = registry()

    async def do(action: str, **params: Any) -> dict[str, Any]:
        return await actions[action].run(deps, step(params, reads=reads))

    first = await do("lytho.get_asset", asset_id=1003)
    again = await do("lytho.get_asset", asset_id=1003)
    other = await do("lytho.get_asset", asset_id=1004)
    proof = await do("lytho_workflow.get", kind="proof", id=7)
    await do("lytho_workflow.get", kind="proof", id=7)
    assert again == first and other["id"] == 1004 and proof["id"] == 7
    assert dam.requests() == ["GET /v1/assets/1003", "GET /v1/assets/1004"]
    assert workflow.requests() == ["GET /v1/proof/7", "GET /v1/proof/7/users"]

    # A write to Lytho's DAM: its look-ups read again; Workflow's are kept.
    await do("lytho.tag_asset", asset_id=1003, tags=["approved"])
    dam.forget_requests()
    after = await do("lytho.get_asset", asset_id=1003)
    await do("lytho_workflow.get", kind="proof", id=7)
    assert after["tag_names"] == ["approved", "draft", "social"]
    assert dam.requests() == ["GET /v1/assets/1003"]
    assert workflow.requests() == ["GET /v1/proof/7", "GET /v1/proof/7/users"]
    # A result handed out is the step's own: changing it changes no later look-up.
    after["tag_names"].append("mine")
    assert (await do("lytho.get_asset", asset_id=1003))["tag_names"][-1] == "social"


# lytho_workflow.get.


async def test_workflow_get_gives_the_object_and_its_users(
    deps: ActionDeps, workflow: Sandbox
) -> None:
    proof = await run(deps, "lytho_workflow.get", kind="proof", id=9)

    assert (proof["id"], proof["name"], proof["status"]) == (9, "Flyer A5 v2", "approved")
    assert [u["email"] for u in proof["users"]] == ["sam@example.com", "lee@example.com"]
    assert proof["user_names"] == ["Sam Okafor", "Lee Chen"]

    bare = await run(deps, "lytho_workflow.get", kind="task", id="103", with_users=False)
    assert bare["name"] == "Social cut-downs" and "users" not in bare
    assert workflow.requests() == ["GET /v1/proof/9", "GET /v1/proof/9/users", "GET /v1/task/103"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"kind": "campaign", "id": 1},
            "lytho_workflow.get 'kind' is 'campaign'; expected one of proof, task, "
            "workrequest, project",
        ),
        ({"kind": "proof", "id": [7, 8]}, "'id' must be one id (a string or a whole number)"),
        ({"kind": "proof", "id": 7, "with_users": "yes"}, "lytho_workflow.get 'with_users'"),
    ],
)
async def test_workflow_get_refuses_bad_parameters_before_asking(
    deps: ActionDeps, workflow: Sandbox, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        await run(deps, "lytho_workflow.get", **params)
    assert str(caught.value).startswith(message)
    assert workflow.requests() == []


async def test_workflow_get_of_a_missing_object_and_without_credentials(
    deps: ActionDeps,
) -> None:
    with pytest.raises(PermanentError) as caught:
        await run(deps, "lytho_workflow.get", kind="proof", id=404)
    assert str(caught.value).startswith("lytho_workflow.get: GET /v1/proof/404 → 404 Not Found")

    bare = ActionDeps(**{**deps.__dict__, "lytho_workflow": None})
    with pytest.raises(PermanentError) as caught:
        await registry()["lytho_workflow.get"].run(bare, step({"kind": "proof", "id": 7}))
    assert str(caught.value) == (
        "lytho_workflow.get needs LYTHO_CLIENT_ID, LYTHO_CLIENT_SECRET and LYTHO_TOKEN_URL "
        "to be set"
    )


# http.request.


class LoopbackOnly(httpx.AsyncBaseTransport):
    """A real transport that fails the test if asked to connect anywhere but loopback."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != "127.0.0.1":
            pytest.fail(f"asked to connect to {request.url.host}")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class MustNotConnect(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pytest.fail(f"the guard let a request through to {request.url}")


def endpoint_app() -> Starlette:
    async def echo(request: Request) -> Response:
        body = await request.body()
        return JSONResponse(
            {
                "method": request.method,
                "query": dict(request.query_params),
                "json": json.loads(body) if body else None,
                "x-team": request.headers.get("x-team"),
            },
            headers={"set-cookie": "session=s3cr3t", "x-auth-token": "t0k3n", "x-request-id": "r1"},
        )

    async def text(request: Request) -> Response:
        return PlainTextResponse("plain words")

    async def missing(request: Request) -> Response:
        return JSONResponse({"message": "no such order"}, status_code=404)

    async def huge(request: Request) -> Response:
        return PlainTextResponse("x" * (1024 * 1024 + 1))

    async def bomb(request: Request) -> Response:
        # 2 MiB of zeros, gzipped to a few KiB: small on the wire, large unpacked.
        packed = gzip.compress(b"0" * (2 * 1024 * 1024))
        return Response(packed, headers={"content-encoding": "gzip"}, media_type="text/plain")

    async def to_metadata(request: Request) -> Response:
        return RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=307)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(
        routes=[
            Route("/echo", echo, methods=methods),
            Route("/text", text),
            Route("/missing", missing),
            Route("/huge", huge),
            Route("/bomb", bomb),
            Route("/to-metadata", to_metadata),
        ]
    )


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedServer(endpoint_app())
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
async def outbound_deps() -> AsyncIterator[ActionDeps]:
    async with guarded_client(["127.0.0.1"], inner=LoopbackOnly()) as outbound:
        yield ActionDeps(None, outbound, RetryPolicy(attempts=1), httpx.Timeout(5.0))  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
async def test_http_request_sends_each_method(
    outbound_deps: ActionDeps, endpoint: str, method: str
) -> None:
    result = await run(
        outbound_deps,
        "http.request",
        method=method,
        url=f"{endpoint}/echo",
        query={"page": 2, "tag": ["a", "b"]},
        headers={"x-team": "creative"},
        **({} if method == "GET" else {"json": {"order": 7}}),
    )

    assert result["status"] == 200
    assert result["json"] == {
        "method": method,
        "query": {"page": "2", "tag": "b"},
        "json": None if method == "GET" else {"order": 7},
        "x-team": "creative",
    }
    assert result["text"] is None
    # Headers that may carry a credential or a session are not kept.
    assert result["headers"]["x-request-id"] == "r1"
    assert result["headers"]["content-type"] == "application/json"
    assert "set-cookie" not in result["headers"] and "x-auth-token" not in result["headers"]


async def test_http_request_gives_text_and_refuses_errors_and_huge_answers(
    outbound_deps: ActionDeps, endpoint: str
) -> None:
    text = await run(outbound_deps, "http.request", method="GET", url=f"{endpoint}/text")
    assert (text["json"], text["text"]) == (None, "plain words")

    with pytest.raises(PermanentError) as caught:
        await run(outbound_deps, "http.request", method="GET", url=f"{endpoint}/missing")
    assert str(caught.value) == (
        "GET /missing → 404 Not Found: no such order; no such resource; check the id or the path"
    )

    with pytest.raises(PermanentError) as caught:
        await run(outbound_deps, "http.request", method="GET", url=f"{endpoint}/huge")
    assert str(caught.value) == (
        "http.request: the answer of GET 127.0.0.1/huge is larger than 1024 KiB, the most a "
        "step keeps; ask the endpoint for less"
    )
    # The cap holds for the answer unpacked, not for its compressed bytes on the wire.
    with pytest.raises(PermanentError) as caught:
        await run(outbound_deps, "http.request", method="GET", url=f"{endpoint}/bomb")
    assert str(caught.value) == (
        "http.request: the answer of GET 127.0.0.1/bomb is larger than 1024 KiB, the most a "
        "step keeps; ask the endpoint for less"
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"method": "TRACE", "url": "https://x.example/"}, "http.request 'method' is 'TRACE'"),
        ({"method": "GET", "url": "ftp://x.example/"}, "http.request 'url' must be an https://"),
        (
            {"method": "GET", "url": "https://x.example/", "query": {"a": {"b": 1}}},
            "http.request 'query' must be an object",
        ),
        (
            {"method": "GET", "url": "https://x.example/", "headers": {"Host": "a"}},
            "http.request may not set the header(s) Host",
        ),
    ],
)
async def test_http_request_refuses_bad_parameters_without_connecting(
    params: dict[str, Any], message: str
) -> None:
    async with guarded_client(inner=MustNotConnect()) as outbound:
        deps = ActionDeps(None, outbound, RetryPolicy(attempts=1), httpx.Timeout(5.0))  # type: ignore[arg-type]
        with pytest.raises(PermanentError) as caught:
            await run(deps, "http.request", **params)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://10.0.0.5/admin", "refused 10.0.0.5: a private, loopback"),
        ("https://169.254.169.254/latest/meta-data/", "refused 169.254.169.254: a private"),
        ("https://[::1]/", "refused ::1: a private"),
        ("http://127.0.0.1:9/", "refused 127.0.0.1: a private"),
        ("https://internal.example.com/", "refused 10.1.2.3 (internal.example.com resolves"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_http_request_never_connects_to_a_private_address(
    url: str, message: str, method: str
) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return {"internal.example.com": ["10.1.2.3"]}[host]

    async with guarded_client(resolver=resolve, inner=MustNotConnect()) as outbound:
        deps = ActionDeps(None, outbound, RetryPolicy(attempts=1), httpx.Timeout(5.0))  # type: ignore[arg-type]
        with pytest.raises(PermanentError) as caught:
            await run(deps, "http.request", method=method, url=url)
    assert str(caught.value).startswith(message)


async def test_http_request_vets_redirects(outbound_deps: ActionDeps, endpoint: str) -> None:
    with pytest.raises(PermanentError) as caught:
        await run(outbound_deps, "http.request", method="GET", url=f"{endpoint}/to-metadata")
    assert str(caught.value).startswith("refused 169.254.169.254: a private")


# End to end: a rule names a proof's reviewers, through the real worker.

RULE = """
id: proof-approved
on: lytho.proof.status_changed
when:
  - {path: data.status, eq: approved}
actions:
  - id: proof
    uses: lytho_workflow.get
    with: {kind: proof, id: "{{ data.id }}"}
  - id: again
    uses: lytho_workflow.get
    with: {kind: proof, id: "{{ data.id }}"}
  - uses: slack.post
    with:
      channel: "#creative"
      text: >-
        {{ steps.proof.name }} approved; reviewers:
        {{ steps.again.users | selectattr('id', 'in', steps.proof.reviewerIds)
        | map(attribute='firstName') | join(' and ') }}
        ({{ steps.proof.user_names | join(', ') }})
"""


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path, workflow: Sandbox) -> Iterator[Bridge]:
    env = {
        "LYTHO_WORKFLOW_API_URL": f"{workflow.url}/v1/",
        "LYTHO_TOKEN_URL": f"{workflow.url}/oauth/token",
        "LYTHO_CLIENT_ID": WF_ID,
        "LYTHO_CLIENT_SECRET": WF_SECRET,
        "BRIDGE_RATE_LIMIT_LYTHO_WORKFLOW": "1000/1s",
    }
    with running_bridge(redis_url, key_prefix, tmp_path, **env) as b:
        b.write_rule("proof.yaml", RULE)
        b.start_slack()
        b.start_web()
        yield b


def test_a_rule_names_the_reviewers_of_an_approved_proof(bridge: Bridge, workflow: Sandbox) -> None:
    bridge.start_worker()
    event = {
        "id": "proof-9-approved",
        "type": "lytho.proof.status_changed",
        "data": {"id": 9, "status": "approved"},
    }
    assert bridge.post(event).status_code == 202

    run = wait_for(lambda: bridge.trace_has("proof-9-approved", "run"), timeout=30, what="the run")
    assert run is not None and run["status"] == "succeeded", bridge.trace("proof-9-approved")
    [message] = bridge.slack.received("#creative")
    assert message["text"] == (
        "Flyer A5 v2 approved; reviewers: Sam and Lee (Sam Okafor, Lee Chen)"
    )
    # The second look-up of the same proof in the run sent no request. (The Workflow
    # poller, configured by the same settings, may run a pass meanwhile: its searches.)
    looked_up = [r for r in workflow.requests() if "/search?" not in r]
    assert looked_up == ["GET /v1/proof/9", "GET /v1/proof/9/users"]
    again = bridge.trace_has("proof-9-approved", "step", step="again", status="succeeded")
    assert again is not None and again["result"]["user_names"] == ["Sam Okafor", "Lee Chen"]


FIND_RULE = """
id: count-bulk
on: demo.count
actions:
  - id: find
    uses: lytho.find_assets
    with: {name: bulk, max_assets: 1000}
  - uses: slack.post
    with: {channel: "#creative", text: "{{ steps.find.count }} bulk assets"}
"""


def test_a_find_longer_than_a_step_goes_on_in_the_next_time_slices(
    redis_url: str, key_prefix: str, tmp_path: Path, dam: Sandbox
) -> None:
    made = add_assets(dam, 150)  # 162 assets: four pages
    dam.forget_requests()
    env = {
        "LYTHO_API_URL": f"{dam.url}/v1/",
        "LYTHO_API_KEY": KEY,
        # One request every half second, and a step of 2.1 s (so the limiter waits in the
        # step, up to a third of it): a page or two per time slice.
        "BRIDGE_RATE_LIMIT_LYTHO": "2/1s:1",
        "BRIDGE_STEP_TIMEOUT": "2.1",
    }
    with running_bridge(redis_url, key_prefix, tmp_path, **env) as bridge:
        bridge.write_rule("count.yaml", FIND_RULE)
        bridge.start_slack()
        bridge.start_web()
        # The DAM poller, configured by the same settings, is not due for an hour: its
        # pass would read the same pages as the look-up.
        due = Keys(bridge.settings.key_prefix).poll_due("lytho")
        assert bridge.redis.set(due, "1", ex=3600)
        bridge.start_worker()
        assert bridge.post({"id": "count-1", "type": "demo.count", "data": {}}).status_code == 202

        run = wait_for(lambda: bridge.trace_has("count-1", "run"), timeout=60, what="the run")
        assert run is not None and run["status"] == "succeeded", bridge.trace("count-1")
        [message] = bridge.slack.received("#creative")
        assert message["text"] == f"{len(made)} bulk assets"
        stops = [
            e
            for e in bridge.trace("count-1")
            if e["kind"] == "step" and e.get("status") == "rate_limited"
        ]
        assert stops and all(e["attempt"] == 1 for e in stops)
        assert all(
            re.match(r"lytho\.find_assets: \d+ found so far, page [1-3] next; ", e["error"])
            for e in stops
        ), stops
    # Every page read once, across the time slices.
    assert dam.requests() == [f"GET /v1/assets?page={n}&size=50" for n in range(4)]
