"""An id that is not a path segment ('..', '.', empty) is refused before anything is sent:
httpx would resolve `assets/../tags` to `tags`, turning an untag into a request on the
whole tags collection (review R2, M1)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from bridge.actions import ActionDeps, StepCall, registry
from bridge.clients import LythoClient, LythoWorkflowClient, LyticsClient, RetryPolicy
from bridge.clients.lytho_profile import default_profile
from bridge.errors import PermanentError
from bridge.sandbox.lytho import create_lytho_app
from bridge.sandbox.lytho_workflow import create_lytho_workflow_app
from bridge.sandbox.lytics import create_lytics_app
from bridge.sandbox.server import ThreadedServer
from bridge.settings import Secret

pytestmark = pytest.mark.asyncio
KEY, WF_ID, WF_SECRET, TOKEN = "ids-key", "wf-ids", "wf-ids-secret", "ids-token"
TAIL = "an empty, '.' or '..' segment would send the request to another path"
ONE = RetryPolicy(attempts=1)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    apps = {
        "dam": create_lytho_app(KEY, rate_limit_per_minute=None),
        "workflow": create_lytho_workflow_app(WF_ID, WF_SECRET),
        "lytics": create_lytics_app(TOKEN),
    }
    running = {name: ThreadedServer(app) for name, app in apps.items()}
    for server in running.values():
        server.start()
    yield {name: server.url for name, server in running.items()}
    for server in running.values():
        server.stop()


def sent(url: str) -> list[str]:
    found = httpx.get(f"{url}/_sandbox/requests").json()["requests"]
    return [f"{r['method']} {r['path']}" for r in found]


@pytest.fixture
def urls(servers: dict[str, str]) -> dict[str, str]:
    for url in servers.values():
        httpx.post(f"{url}/_sandbox/reset").raise_for_status()
        httpx.delete(f"{url}/_sandbox/requests").raise_for_status()
    return servers


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def dam_client(http: httpx.AsyncClient, urls: dict[str, str]) -> LythoClient:
    return LythoClient(http, f"{urls['dam']}/v1/", Secret(KEY), retry=ONE)


@pytest.mark.parametrize("bad", ["..", ".", ""])
async def test_untag_asset_with_a_dot_id_sends_nothing(
    http: httpx.AsyncClient, urls: dict[str, str], bad: str
) -> None:
    deps = ActionDeps(
        None,  # type: ignore[arg-type]
        http,
        ONE,
        httpx.Timeout(5),
        lytho=dam_client(http, urls),
    )
    call = StepCall({"asset_id": bad, "tags": ["draft"]}, {}, "e", "r", "s")
    with pytest.raises(PermanentError) as caught:
        await registry()["lytho.untag_asset"].run(deps, call)
    assert str(caught.value) == f"lytho.untag_asset: asset_id {bad!r} is not an id: {TAIL}"
    assert sent(urls["dam"]) == []


@pytest.mark.parametrize(
    ("action", "params", "name"),
    [
        ("lytho.tag_asset", {"asset_id": "..", "tags": ["new-tag"]}, "asset_id"),
        ("lytho.add_to_collection", {"collection_id": "..", "asset_ids": [1001]}, "collection_id"),
        ("lytho.set_metadata", {"asset_id": "..", "metadata": {"a": 1}}, "asset_id"),
    ],
)
async def test_every_lytho_write_refuses_a_dot_id_before_sending(
    http: httpx.AsyncClient, urls: dict[str, str], action: str, params: dict[str, Any], name: str
) -> None:
    deps = ActionDeps(
        None,  # type: ignore[arg-type]
        http,
        ONE,
        httpx.Timeout(5),
        lytho=dam_client(http, urls),
    )
    with pytest.raises(PermanentError) as caught:
        await registry()[action].run(deps, StepCall(params, {}, "e", "r", "s"))
    assert str(caught.value) == f"{action}: {name} '..' is not an id: {TAIL}"
    assert sent(urls["dam"]) == []


async def test_the_dam_client_refuses_a_dot_id(
    http: httpx.AsyncClient, urls: dict[str, str]
) -> None:
    lytho = dam_client(http, urls)
    with pytest.raises(PermanentError, match=rf"^asset_id '\.\.' is not an id: {TAIL}$"):
        await lytho.remove_tags("..", [7])
    with pytest.raises(PermanentError, match=rf"^collection_id '\.' is not an id: {TAIL}$"):
        await lytho.add_to_collection(".", [1001])
    with pytest.raises(PermanentError, match=r"^tag_id '\.\.' is not an id"):
        await lytho.get_tag("..")
    assert sent(urls["dam"]) == []
    # Anything else stays inside its own segment, quoted.
    assert default_profile().dam_path("asset", asset_id="a/../b?c") == "assets/a%2F..%2Fb%3Fc"
    assert default_profile().dam_path("asset", asset_id="...") == "assets/..."


async def test_the_workflow_client_refuses_a_dot_id(
    http: httpx.AsyncClient, urls: dict[str, str]
) -> None:
    base = urls["workflow"]
    workflow = LythoWorkflowClient(
        http, f"{base}/v1/", f"{base}/oauth/token", WF_ID, Secret(WF_SECRET), retry=ONE
    )
    with pytest.raises(PermanentError, match=rf"^id '\.\.' is not an id: {TAIL}$"):
        await workflow.update("proof", "..", {"status": "approved"})
    with pytest.raises(PermanentError, match=rf"^id '\.' is not an id: {TAIL}$"):
        await workflow.get("task", ".")
    assert sent(base) == []


async def test_the_lytics_client_refuses_a_dot_segment(
    http: httpx.AsyncClient, urls: dict[str, str]
) -> None:
    lytics = LyticsClient(http, urls["lytics"], Secret(TOKEN), retry=ONE)
    with pytest.raises(PermanentError, match=rf"^value '\.\.' is not a path segment: {TAIL}$"):
        await lytics.get_entity("email", "..")
    with pytest.raises(PermanentError, match=rf"^segment '\.\.' is not a path segment: {TAIL}$"):
        await lytics.get_segment("..")
    with pytest.raises(PermanentError, match=rf"^job_id '\.' is not an id: {TAIL}$"):
        await lytics.cancel_job(".")
    assert sent(urls["lytics"]) == []


async def test_lytics_lookup_with_a_dot_value_sends_nothing(
    http: httpx.AsyncClient, urls: dict[str, str]
) -> None:
    lytics = LyticsClient(http, urls["lytics"], Secret(TOKEN), retry=ONE)
    deps = ActionDeps(
        None,  # type: ignore[arg-type]
        http,
        ONE,
        httpx.Timeout(5),
        lytics=lytics,
    )
    call = StepCall({"field": "email", "value": ".."}, {}, "e", "r", "s")
    with pytest.raises(PermanentError, match=r"value '\.\.' is not a path segment"):
        await registry()["lytics.lookup"].run(deps, call)
    assert sent(urls["lytics"]) == []
