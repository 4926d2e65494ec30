"""LythoWorkflowClient against the Lytho Workflow sandbox over real HTTP."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from clients_support import WF_ID, WF_SECRET, Control, FakeSleep

from bridge.clients import LythoWorkflowClient
from bridge.clients.lytho_profile import load_profile
from bridge.errors import PermanentError
from bridge.sandbox._common import ApiError, apply_patch
from bridge.sandbox.lytho_dialect import LythoDialect
from bridge.sandbox.lytho_workflow import create_lytho_workflow_app
from bridge.sandbox.server import serve_in_thread
from bridge.settings import Secret


async def test_fetches_one_token_and_reuses_it(
    workflow: LythoWorkflowClient, workflow_server: Control
):
    proof = await workflow.get("proof", 7)
    task = await workflow.get("task", 100)

    assert proof["name"] == "Hero visual v3"
    assert task["projectId"] == 10
    assert workflow.tokens_fetched == 1
    assert workflow_server.state.tokens_issued == 1
    assert [r["path"] for r in workflow_server.requests()] == [
        "/oauth/token",
        "/v1/proof/7",
        "/v1/task/100",
    ]


async def test_token_is_renewed_shortly_before_it_expires(workflow_server: Control, fake_sleep):
    now = [1000.0]
    async with httpx.AsyncClient() as http:
        client = LythoWorkflowClient(
            http,
            f"{workflow_server.url}/v1/",
            f"{workflow_server.url}/oauth/token",
            WF_ID,
            Secret(WF_SECRET),
            sleep=fake_sleep,
            clock=lambda: now[0],
        )
        await client.get("project", 10)
        now[0] += 3600 - 120  # two minutes before expiry: still good
        await client.get("project", 10)
        assert client.tokens_fetched == 1
        now[0] += 90  # within the renewal margin
        await client.get("project", 10)
        assert client.tokens_fetched == 2


async def test_a_401_refreshes_the_token_once(
    workflow: LythoWorkflowClient, workflow_server: Control
):
    await workflow.get("proof", 7)
    workflow_server.post("expire-tokens")

    proof = await workflow.get("proof", 8)

    assert proof["id"] == 8
    assert workflow.tokens_fetched == 2
    statuses = [(r["path"], r["status"]) for r in workflow_server.requests()]
    assert statuses[-3:] == [("/v1/proof/8", 401), ("/oauth/token", 200), ("/v1/proof/8", 200)]


async def test_a_401_after_refreshing_is_permanent(
    workflow: LythoWorkflowClient, workflow_server: Control
):
    workflow_server.fail(401, count=2, path="/v1/proof")

    with pytest.raises(PermanentError) as caught:
        await workflow.get("proof", 7)

    assert str(caught.value) == (
        "GET /v1/proof/7 → 401 Unauthorized; check LYTHO_CLIENT_ID and LYTHO_CLIENT_SECRET"
    )
    assert workflow.tokens_fetched == 2


async def test_bad_client_secret_names_the_variables_and_hides_the_secret(
    workflow_server: Control,
):
    async with httpx.AsyncClient() as http:
        client = LythoWorkflowClient(
            http,
            f"{workflow_server.url}/v1/",
            f"{workflow_server.url}/oauth/token",
            WF_ID,
            Secret("not-the-secret-42"),
        )
        with pytest.raises(PermanentError) as caught:
            await client.get("task", 100)

    message = str(caught.value)
    assert message == (
        "POST /oauth/token → 401 Unauthorized; check LYTHO_CLIENT_ID and LYTHO_CLIENT_SECRET, "
        "and how they are sent (workflow.auth.token_auth: basic)"
    )
    assert "not-the-secret-42" not in message


async def test_token_endpoint_wants_client_credentials(workflow_server: Control):
    response = httpx.post(
        f"{workflow_server.url}/oauth/token",
        data={"grant_type": "password"},
        auth=(WF_ID, WF_SECRET),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


async def test_get_many_sends_repeated_ids_and_chunks_them(
    workflow: LythoWorkflowClient, workflow_server: Control
):
    tasks = await workflow.get_many("task", [100 + n for n in range(12)] + [999], page_size=10)

    assert [t["id"] for t in tasks] == [100 + n for n in range(12)]
    queries = [r["query"] for r in workflow_server.requests() if r["path"] == "/v1/task"]
    assert len(queries) == 2
    assert queries[0].startswith("ids=100&ids=101&") and queries[0].endswith("page=1&pageSize=10")


async def test_search_pages_through_every_match(
    workflow: LythoWorkflowClient, workflow_server: Control
):
    tasks = [t async for t in workflow.search("task", {"projectId": 10}, page_size=10)]
    todo = [t async for t in workflow.search("task", {"status": "todo"})]
    proofs = [p async for p in workflow.search("proof", {"q": "banner"})]
    campaigns = [c async for c in workflow.search("campaign")]

    assert len(tasks) == 12
    assert {t["status"] for t in todo} == {"todo"} and len(todo) == 6
    assert [p["id"] for p in proofs] == [10]
    assert campaigns[0]["name"] == "Spring 2026 launch"
    pages = [r["query"] for r in workflow_server.requests() if "projectId" in r["query"]]
    assert pages == ["projectId=10&page=1&pageSize=10", "projectId=10&page=2&pageSize=10"]


async def test_page_size_must_be_10_20_or_30(
    workflow: LythoWorkflowClient, workflow_server: Control
):
    with pytest.raises(ValueError, match="pageSize must be one of 10, 20, 30"):
        await workflow.get_many("task", [100], page_size=25)
    token = await workflow.access_token()
    response = httpx.get(
        f"{workflow_server.url}/v1/task?ids=100&pageSize=25",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 400
    assert set(response.json()) == {"status", "message", "traceId"}


async def test_users_and_file_urls(workflow: LythoWorkflowClient):
    users = await workflow.users("proof", 7)
    files = await workflow.file_urls("workrequest", 300)

    assert {(u["firstName"], u["role"]) for u in users} == {
        ("Sam", "reviewer"),
        ("Lee", "reviewer"),
    }
    assert files[0]["fileName"] == "workrequest-300.pdf"
    assert files[0]["url"].startswith("http://127.0.0.1:")


async def test_json_patch_updates_and_a_failed_test_is_a_409(
    workflow: LythoWorkflowClient, workflow_server: Control
):
    updated = await workflow.update(
        "proof", 7, {"status": "approved"}, expect={"status": "in_review"}
    )
    assert updated["status"] == "approved"
    assert updated["name"] == "Hero visual v3"

    with pytest.raises(PermanentError) as caught:
        await workflow.update("proof", 7, {"status": "rejected"}, expect={"status": "in_review"})
    assert caught.value.status == 409
    assert "PATCH /v1/proof/7 → 409 Conflict: test failed: /status" in str(caught.value)

    patched = await workflow.patch(
        "task", 103, [{"op": "add", "path": "/labels", "value": ["urgent"]}]
    )
    assert patched["labels"] == ["urgent"]


async def test_patch_is_validated(workflow: LythoWorkflowClient, workflow_server: Control):
    with pytest.raises(PermanentError, match="400 Bad Request: status must be one of"):
        await workflow.update("task", 100, {"status": "finished"})
    with pytest.raises(PermanentError, match="400 Bad Request: id cannot be changed"):
        await workflow.update("task", 100, {"id": 5})
    token = await workflow.access_token()
    response = httpx.patch(
        f"{workflow_server.url}/v1/task/100",
        json=[{"op": "replace", "path": "/status", "value": "done"}],
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 415


async def test_missing_object_and_unknown_kind(workflow: LythoWorkflowClient):
    with pytest.raises(PermanentError, match=r"GET /v1/project/77 → 404 Not Found"):
        await workflow.get("project", 77)
    with pytest.raises(ValueError, match="unknown Lytho Workflow type 'invoice'"):
        await workflow.get("invoice", 1)  # type: ignore[arg-type]


async def test_sandbox_control_approves_a_proof(
    workflow: LythoWorkflowClient, workflow_server: Control
):
    workflow_server.patch("proof/9", {"status": "approved"})

    proof = await workflow.get("proof", 9)

    assert proof["status"] == "approved"
    assert proof["modifiedAt"] != "2026-10-01T08:00:00Z"


async def test_5xx_on_the_token_endpoint_is_retried(
    workflow: LythoWorkflowClient, workflow_server: Control, fake_sleep: FakeSleep
):
    workflow_server.fail(502, path="/oauth/token")

    assert (await workflow.get("campaign", 1))["status"] == "active"
    assert len(fake_sleep.delays) == 1


def test_json_patch_operations():
    doc = {"id": 1, "labels": ["a"], "meta": {"x": 1}, "status": "todo"}

    patched = apply_patch(
        doc,
        [
            {"op": "add", "path": "/labels/-", "value": "b"},
            {"op": "copy", "from": "/meta/x", "path": "/y"},
            {"op": "move", "from": "/meta", "path": "/details"},
            {"op": "remove", "path": "/labels/0"},
            {"op": "test", "path": "/details/x", "value": 1},
        ],
    )

    assert patched == {"id": 1, "labels": ["b"], "details": {"x": 1}, "y": 1, "status": "todo"}
    assert doc["labels"] == ["a"]  # the original is untouched
    for ops, status in [
        ([{"op": "test", "path": "/status", "value": "done"}], 409),
        ([{"op": "replace", "path": "/nope", "value": 1}], 400),
        ([{"op": "jump", "path": "/status"}], 400),
        ([{"op": "add", "path": "status", "value": 1}], 400),
    ]:
        with pytest.raises(ApiError) as caught:
            apply_patch(doc, ops)
        assert caught.value.status == status


# --- another dialect: the client follows its profile, and reads other page shapes --------

# A Workflow API unlike the documents' reading, and the override file that describes it.
OTHER = """\
workflow:
  auth: {token_auth: body}
  pages: {page_param: pageNumber, size_param: limit, first_page: 0, sizes: [5],
          items: results, total: count, total_pages: ""}
  paths: {get: "{kind}/byId/{id}", search: "{kind}/find", users: "{kind}/{id}/people"}
  kinds: {workrequest: work-requests}
  search: {modified_since: updatedAfter}
  fields: {modified: updatedAt}
"""


@pytest.fixture(scope="module")
def other_running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Control, Path]]:
    path = tmp_path_factory.mktemp("dialect") / "other.yaml"
    path.write_text(OTHER, encoding="utf-8")
    app = create_lytho_workflow_app(WF_ID, WF_SECRET, dialect=LythoDialect.from_file(path))
    with serve_in_thread(app) as server:
        yield Control(server, app), path


@pytest.fixture
def other(
    other_running: tuple[Control, Path], http: httpx.AsyncClient, fake_sleep: FakeSleep
) -> tuple[LythoWorkflowClient, Control, Path]:
    control, path = other_running
    control.post("reset")
    client = LythoWorkflowClient(
        http,
        f"{control.url}/v1/",
        f"{control.url}/oauth/token",
        WF_ID,
        Secret(WF_SECRET),
        sleep=fake_sleep,
        profile=load_profile(path),
    )
    return client, control, path


async def test_an_override_profile_drives_every_path_page_and_the_token(
    other: tuple[LythoWorkflowClient, Control, Path], caplog: pytest.LogCaptureFixture
) -> None:
    client, control, _ = other
    tasks = [t async for t in client.search("task", {"projectId": 10})]
    proof = await client.get("proof", 7)
    requests = await client.get_many("workrequest", [300, 301, 999])
    users = await client.users("proof", 7)

    assert [t["id"] for t in tasks] == [100 + n for n in range(12)]
    assert proof["name"] == "Hero visual v3" and "updatedAt" in proof
    assert [r["id"] for r in requests] == [300, 301]
    assert {u["firstName"] for u in users} == {"Sam", "Lee"}
    assert client.page_shape == "results" and client.tokens_fetched == 1
    assert not [r for r in caplog.records if "BRIDGE_LYTHO_PROFILE" in r.getMessage()]
    seen = [(r["path"], r["query"]) for r in control.requests() if r["path"] != "/oauth/token"]
    assert seen == [
        ("/v1/task/find", "projectId=10&pageNumber=0&limit=5"),
        ("/v1/task/find", "projectId=10&pageNumber=1&limit=5"),
        ("/v1/task/find", "projectId=10&pageNumber=2&limit=5"),
        ("/v1/proof/byId/7", ""),
        ("/v1/work-requests", "ids=300&ids=301&ids=999&pageNumber=0&limit=5"),
        ("/v1/proof/7/people", ""),
    ]


async def test_the_default_profile_against_that_api_fails_clearly(
    other: tuple[LythoWorkflowClient, Control, Path], http: httpx.AsyncClient
) -> None:
    _, control, _ = other
    client = LythoWorkflowClient(
        http, f"{control.url}/v1/", f"{control.url}/oauth/token", WF_ID, Secret(WF_SECRET)
    )
    # The credentials go as HTTP Basic, which this token endpoint does not take.
    with pytest.raises(PermanentError) as caught:
        await client.get("proof", 7)
    assert str(caught.value).startswith("POST /oauth/token → 401 Unauthorized")
    assert str(caught.value).endswith("(workflow.auth.token_auth: basic)")


@pytest.fixture(scope="module")
def data_running() -> Iterator[Control]:
    dialect = LythoDialect.from_mapping({"workflow.pages.items": "data"})
    app = create_lytho_workflow_app(WF_ID, WF_SECRET, dialect=dialect)
    with serve_in_thread(app) as server:
        yield Control(server, app)


async def test_another_page_shape_is_read_and_named_once_with_the_fix(
    data_running: Control, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    data_running.post("reset")
    client = LythoWorkflowClient(
        http, f"{data_running.url}/v1/", f"{data_running.url}/oauth/token", WF_ID, Secret(WF_SECRET)
    )
    tasks = [t async for t in client.search("task", page_size=10)]
    many = await client.get_many("task", [100, 101])

    assert len(tasks) == 12 and [t["id"] for t in many] == [100, 101]
    assert client.page_shape == "data"
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said == [
        "Lytho Workflow pages hold their items under 'data', not 'items' as the profile says; "
        "read anyway. Set workflow.pages.items: data in BRIDGE_LYTHO_PROFILE."
    ]
