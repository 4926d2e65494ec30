"""Every request the client sends and every answer the sandbox gives follow lytics-openapi.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from clients_support import LYTICS_TOKEN, Control
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from bridge.actions import ActionDeps, StepCall, registry
from bridge.clients import LyticsClient, RetryPolicy
from bridge.errors import PermanentError
from bridge.settings import Secret

SPEC_NAME = "lytics-openapi.yaml"
# A copy of shared/api-docs/lytics-openapi.yaml, so that the suite needs nothing outside
# the repository; the test below keeps it identical to the shared original where present.
SPEC = Path(__file__).with_name(SPEC_NAME)


def _spec_path() -> Path:
    return SPEC


def test_the_spec_copy_matches_the_shared_original():
    for parent in Path(__file__).resolve().parents:
        original = parent / "shared" / "api-docs" / SPEC_NAME
        if original.exists():
            assert original.read_bytes() == SPEC.read_bytes(), f"update {SPEC} from {original}"
            return
    pytest.skip("shared/api-docs is not beside this checkout")


class SpecRequest:
    """An httpx request as openapi-core reads it, on the spec's server URL."""

    def __init__(self, request: httpx.Request, body: bytes | None = None) -> None:
        self.host_url = "https://api.lytics.io"
        # The path as sent: a value holding an escaped "/" stays one path segment.
        self.path = request.url.raw_path.decode().split("?", 1)[0]
        self.full_url_pattern = self.host_url + self.path
        self.method = request.method.lower()
        self.body = body if body is not None else request.content or None
        self.content_type = request.headers.get("content-type", "")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(request.url.params.multi_items()),
            header=Headers(list(request.headers.items())),
        )


class SpecResponse:
    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.content_type = response.headers.get("content-type", "")
        self.headers = Headers(list(response.headers.items()))
        self.data = response.content


async def test_client_and_sandbox_speak_the_spec(lytics_server: Control):
    exchanges: list[httpx.Response] = []

    async def record(response: httpx.Response) -> None:
        await response.aread()
        exchanges.append(response)

    async with httpx.AsyncClient(event_hooks={"response": [record]}) as http:
        client = LyticsClient(http, lytics_server.url, Secret(LYTICS_TOKEN))
        await client.collect("web", {"event": "one", "email": "a@example.com"})
        await client.collect("web", [{"event": "a", "email": "a@example.com"}, {"event": "b"}])
        await client.list_accounts()
        await client.get_account("12345")
        segments = await client.list_segments()
        await client.get_segment(segments[0]["slug_name"])
        [p async for p in client.scan_segment(segments[0]["id"], limit=10)]
        [p async for p in client.scan_segment(filter_ql='in_segment("all_users")', limit=50)]
        await client.get_entity("email", "ada0@example.com", fields=["email"])
        await client.get_entity("email", "nobody@example.com")
        await client.get_entity("email", "team/a b@example.com", table="user")
        # The two read actions, as a rule's steps run them (no limiter: they never use it).
        deps = ActionDeps(
            None,  # type: ignore[arg-type]
            http,
            RetryPolicy(attempts=1),
            httpx.Timeout(5.0),
            lytics=client,
        )

        async def step(action: str, **params: object) -> dict[str, object]:
            return await registry()[action].run(deps, StepCall(params, {}, "e-1", "r-1", "s"))

        looked_up = await step("lytics.lookup", field="email", value="ada0@example.com")
        assert looked_up["found"] is True
        member = "lytics.segment_membership"
        assert (await step(member, segment="all_users", field="_uid", value="uid000"))["member"]
        by_id = await step(member, segment=segments[1]["id"], field="_uid", value="uid001")
        assert by_id["member"] is False
        await client.list_datamodels()
        await client.get_datamodel("default")
        created = await client.create_connection("CRM", "salesforce", config={"org": "acme"})
        await client.update_connection(created["id"], {"name": "CRM 2"})
        await client.get_connection(created["id"])
        await client.list_connections()
        await client.delete_connection(created["id"])
        jobs = await client.list_jobs()
        job = await client.create_job("export", jobs[0]["connection_id"])
        await client.get_job(job["id"])
        await client.cancel_job(job["id"])
        await client.create_work("e40a0ad5d0a845ca8549a7d23ede9eed", {"filter_ql": "*"})
        for call in (client.get_segment("nope"), client.get_job("nope")):
            with pytest.raises(PermanentError):
                await call
        with pytest.raises(PermanentError):
            [p async for p in client.scan_segment("nope")]
        bad = LyticsClient(http, lytics_server.url, Secret("wrong"))
        with pytest.raises(PermanentError):
            await bad.list_segments()

    openapi = OpenAPI.from_file_path(str(_spec_path()))
    statuses = set()
    arrays = 0
    for response in exchanges:
        request = SpecRequest(response.request)
        where = f"{response.request.method} {response.request.url.path}"
        sent = json.loads(response.request.content) if response.request.content else None
        if isinstance(sent, list) and response.request.url.path == "/api/collect":
            # A documented deviation from the spec's schema: CollectRequest is one object,
            # and lytics.collect sends a list as one JSON array of such objects, as Lytics'
            # JSON collect takes them (Lytics' Android SDK, lytics/android-sdk
            # PayloadRequest.kt, posts arrays to /collect/json/{stream}). Each element must
            # still be a valid CollectRequest, checked one by one.
            arrays += 1
            for item in sent:
                openapi.validate_request(SpecRequest(response.request, json.dumps(item).encode()))
        elif response.status_code != 401:  # a wrong key is still a well-formed request
            openapi.validate_request(request)
        try:
            openapi.validate_response(request, SpecResponse(response))
        except Exception as exc:  # pragma: no cover - shown on failure
            raise AssertionError(f"{where} → {response.status_code}: {exc!r}") from exc
        statuses.add(response.status_code)
    assert arrays == 1
    paths = [r.request.url.raw_path.decode() for r in exchanges]
    assert "/api/entity/user/email/team%2Fa%20b%40example.com" in paths
    # lookup: 1 request; membership by slug: 1; by id (not among the slugs): 2.
    assert sum(p.startswith("/api/entity/user/_uid/") for p in paths) == 2
    assert len(exchanges) >= 30
    assert statuses == {200, 400, 401, 404}


async def test_the_spec_catches_a_wrong_answer(lytics_server: Control):
    """The check above would notice: a string status breaks SegmentListResponse."""
    from openapi_core.templating.paths.exceptions import PathNotFound
    from openapi_core.validation.response.exceptions import InvalidData

    request = httpx.Request(
        "GET", "https://api.lytics.io/api/segment", headers={"Authorization": "x"}
    )
    wrong = httpx.Response(200, json={"status": "ok", "message": "ok", "data": []}, request=request)
    openapi = OpenAPI.from_file_path(str(_spec_path()))
    with pytest.raises(InvalidData):
        openapi.validate_response(SpecRequest(request), SpecResponse(wrong))
    unknown = httpx.Request("GET", "https://api.lytics.io/api/nothing")
    with pytest.raises(PathNotFound):
        openapi.validate_request(SpecRequest(unknown))
