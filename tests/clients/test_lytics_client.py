"""LyticsClient against the Lytics sandbox over real HTTP (and one envelope unit test)."""

from __future__ import annotations

import json

import httpx
import pytest
from clients_support import LYTICS_TOKEN, Control, FakeSleep

from bridge.clients import LyticsClient
from bridge.clients.lytics import MAX_COLLECT_ITEMS
from bridge.errors import ClientError, PermanentError, RateLimited
from bridge.sandbox.lytics import create_lytics_app
from bridge.sandbox.server import serve_in_thread
from bridge.settings import Secret


async def test_collect_one_event(lytics: LyticsClient, lytics_server: Control):
    result = await lytics.collect("lytho_workflow", {"event": "proof_approved", "proof_id": 7})

    assert result == {"message_count": 1, "rejected_count": 0}
    assert lytics_server.state.collected == {
        "lytho_workflow": [{"event": "proof_approved", "proof_id": 7}]
    }
    assert [(r["path"], r["query"]) for r in lytics_server.requests()] == [
        ("/api/collect", "stream=lytho_workflow")
    ]


async def test_collect_a_list_sends_one_request_with_every_item(
    lytics: LyticsClient, lytics_server: Control
):
    result = await lytics.collect("web", [{"event": "a"}, {"event": "b"}, {"event": "c"}])

    assert result == {"message_count": 3, "rejected_count": 0}
    assert [e["event"] for e in lytics_server.state.collected["web"]] == ["a", "b", "c"]
    assert [(r["method"], r["path"]) for r in lytics_server.requests()] == [
        ("POST", "/api/collect")
    ]


async def test_collect_with_rejected_messages_is_a_partial_failure(
    lytics: LyticsClient, lytics_server: Control
):
    with pytest.raises(PermanentError) as caught:
        await lytics.collect("web", [{"event": "a"}, {}, {"event": "c"}])

    assert str(caught.value) == (
        "POST /api/collect?stream=web → 200 OK; Lytics rejected 1 of 3 messages sent to "
        "stream 'web'; not retried, as that would send the accepted ones again"
    )
    # One request: the accepted items are in, once; nothing was sent twice.
    assert lytics_server.state.collected == {"web": [{"event": "a"}, {"event": "c"}]}
    assert len(lytics_server.requests()) == 1


async def test_a_failed_list_is_retried_whole_and_kept_once(
    lytics: LyticsClient, lytics_server: Control, fake_sleep: FakeSleep
):
    lytics_server.fail(503, count=1)

    result = await lytics.collect("web", [{"event": "a"}, {"event": "b"}])

    assert result == {"message_count": 2, "rejected_count": 0}
    assert lytics_server.state.collected == {"web": [{"event": "a"}, {"event": "b"}]}
    assert [r["status"] for r in lytics_server.requests()] == [503, 200]


async def test_collect_refuses_a_list_past_the_bounds_before_sending(
    lytics: LyticsClient, lytics_server: Control
):
    too_many = [{"n": n} for n in range(MAX_COLLECT_ITEMS + 1)]
    with pytest.raises(ValueError) as caught:
        await lytics.collect("web", too_many)
    assert str(caught.value) == (
        "1001 items are more than the 1000 sent in one request; split the list over "
        "several steps, or load it with Lytics' bulk upload"
    )

    too_big = [{"blob": "x" * 100_000} for _ in range(101)]
    with pytest.raises(ValueError, match=r"^the list is 10\d{6} bytes of JSON, over Lytics'"):
        await lytics.collect("web", too_big)

    with pytest.raises(ValueError, match=r"^item 2 collected must be an object, not str$"):
        await lytics.collect("web", [{"n": 1}, "two"])  # type: ignore[list-item]

    assert await lytics.collect("web", []) == {"message_count": 0, "rejected_count": 0}
    assert lytics_server.requests() == []
    assert lytics_server.state.collected == {}


async def test_collect_takes_exactly_the_bound(lytics: LyticsClient, lytics_server: Control):
    result = await lytics.collect("web", [{"n": n} for n in range(MAX_COLLECT_ITEMS)])

    assert result == {"message_count": MAX_COLLECT_ITEMS, "rejected_count": 0}
    assert len(lytics_server.state.collected["web"]) == MAX_COLLECT_ITEMS
    assert len(lytics_server.requests()) == 1


async def test_wrong_token_message_matches_the_style_guide(lytics_server: Control):
    async with httpx.AsyncClient() as http:
        client = LyticsClient(http, lytics_server.url, Secret("bad-token-777"))
        with pytest.raises(PermanentError) as caught:
            await client.collect("lytho_workflow", {"event": "x"})

    assert str(caught.value) == (
        "POST /api/collect?stream=lytho_workflow → 401 Unauthorized; check LYTICS_API_TOKEN"
    )
    assert "bad-token-777" not in str(caught.value)


async def test_sandbox_401_body_is_lytics_error_shape(lytics_server: Control):
    response = httpx.get(f"{lytics_server.url}/api/segment", headers={"Authorization": "nope"})

    assert response.status_code == 401
    assert response.json() == {"data": None, "message": "Not authorized", "status": 401}


async def test_token_is_sent_without_bearer_and_query_key_works_too(lytics_server: Control):
    bearer = httpx.get(
        f"{lytics_server.url}/api/segment", headers={"Authorization": f"Bearer {LYTICS_TOKEN}"}
    )
    query = httpx.get(f"{lytics_server.url}/api/segment", params={"key": LYTICS_TOKEN})

    assert bearer.status_code == 401
    assert query.status_code == 200


async def test_query_string_key_never_shows_in_messages(fake_sleep: FakeSleep):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"status": 403, "message": "forbidden"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = LyticsClient(http, "https://api.lytics.io", Secret("tok-123"), sleep=fake_sleep)
        with pytest.raises(PermanentError) as caught:
            await client.request("GET", "api/segment", params={"key": "tok-123", "x": "1"})

    assert str(caught.value) == (
        "GET /api/segment?x=1 → 403 Forbidden; the credentials lack permission for this; "
        "check LYTICS_API_TOKEN"
    )


async def test_segments_list_and_get(lytics: LyticsClient):
    segments = await lytics.list_segments()
    by_slug = {s["slug_name"]: s for s in segments}

    assert set(by_slug) == {"all_users", "high_value_users", "cart_abandoners"}
    assert by_slug["all_users"]["size"] == 24
    assert (await lytics.get_segment("high_value_users"))["size"] == 8
    assert (await lytics.get_segment(by_slug["cart_abandoners"]["id"]))["name"] == (
        "Cart Abandoners"
    )
    with pytest.raises(PermanentError, match=r"GET /api/segment/nope → 404 Not Found"):
        await lytics.get_segment("nope")


async def test_scan_follows_the_next_cursor(lytics: LyticsClient, lytics_server: Control):
    segment = await lytics.get_segment("all_users")

    profiles = [p async for p in lytics.scan_segment(segment["id"], limit=10)]

    assert len(profiles) == 24
    assert len({p["_uid"] for p in profiles}) == 24
    scans = [r["query"] for r in lytics_server.requests() if r["path"] == "/api/segment/scan"]
    assert len(scans) == 3
    assert scans[0] == "limit=10" and scans[1].startswith("limit=10&next=")


async def test_scan_by_filter_and_limits(lytics: LyticsClient):
    found = [p async for p in lytics.scan_segment(filter_ql='in_segment("cart_abandoners")')]
    assert len(found) == 6

    with pytest.raises(ValueError, match="between 1 and 100"):
        [p async for p in lytics.scan_segment("x", limit=500)]
    with pytest.raises(ValueError, match="exactly one"):
        [p async for p in lytics.scan_segment()]
    with pytest.raises(PermanentError, match="400 Bad Request: unknown segment nope"):
        [p async for p in lytics.scan_segment("nope")]


async def test_entity_lookup(lytics: LyticsClient):
    profile = await lytics.get_entity("email", "ben1@example.com", fields=["_uid", "email"])

    assert profile == {"_uid": "uid001", "email": "ben1@example.com"}
    assert await lytics.get_entity("email", "nobody@example.com") is None
    assert await lytics.get_entity("email", "ben1@example.com", table="content") is None


async def test_entity_values_with_slashes_spaces_and_at_signs_are_quoted(
    lytics: LyticsClient, lytics_server: Control
):
    odd = "team/a b@example.com?x=1#y"
    lytics_server.post("profiles", {"_uid": "odd", "external_id": odd})

    found = await lytics.get_entity("external_id", odd)

    assert found is not None and found["_uid"] == "odd"
    # A value that only shares a prefix up to the slash is another value.
    assert await lytics.get_entity("external_id", "team") is None
    assert lytics_server.requests()[-2]["status"] == 200


async def test_entity_path_is_percent_encoded_on_the_wire():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404, json={"data": None, "message": "not found", "status": 404})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = LyticsClient(http, "https://api.lytics.io", Secret("t"))
        assert await client.get_entity("e mail", "a/b c@x.com", fields=["email", "_uid"]) is None

    (request,) = seen
    assert request.url.raw_path == (
        b"/api/entity/user/e%20mail/a%2Fb%20c%40x.com?fields=email%2C_uid"
    )


async def test_sandbox_404_for_an_unknown_profile_is_lytics_error_shape(lytics_server: Control):
    response = httpx.get(
        f"{lytics_server.url}/api/entity/user/email/nobody%40example.com",
        headers={"Authorization": LYTICS_TOKEN},
    )

    assert response.status_code == 404
    assert response.json() == {
        "data": None,
        "message": "no user entity with email = nobody@example.com",
        "status": 404,
    }


async def test_accounts_datamodels_connections(lytics: LyticsClient):
    assert [a["aid"] for a in await lytics.list_accounts()] == ["12345"]
    assert (await lytics.get_account("12345"))["name"] == "ACME Corp"
    assert [d["name"] for d in await lytics.list_datamodels()] == ["default"]
    assert (await lytics.get_datamodel("default"))["fields"][0]["is_by"] is True

    created = await lytics.create_connection(
        "CRM", "salesforce", auth_id="a1", config={"org": "acme"}
    )
    updated = await lytics.update_connection(created["id"], {"name": "CRM (prod)"})
    assert updated["config"] == {"org": "acme"} and updated["auth_id"] == "a1"
    assert updated["name"] == "CRM (prod)"
    assert [c["name"] for c in await lytics.list_connections()] == ["Warehouse", "CRM (prod)"]
    await lytics.delete_connection(created["id"])
    with pytest.raises(PermanentError, match="404"):
        await lytics.get_connection(created["id"])


async def test_jobs_and_work(lytics: LyticsClient, lytics_server: Control):
    jobs = await lytics.list_jobs()
    assert [j["status"] for j in jobs] == ["complete", "running", "pending"]

    job = await lytics.create_job("export", jobs[0]["connection_id"], {"segment": "all_users"})
    assert job["status"] == "pending"
    lytics_server.post(f"jobs/{job['id']}", {"status": "failed", "error": "quota exceeded"})
    failed = await lytics.get_job(job["id"])
    assert (failed["status"], failed["error"]) == ("failed", "quota exceeded")
    await lytics.cancel_job(jobs[1]["id"])
    assert (await lytics.get_job(jobs[1]["id"]))["status"] == "cancelled"

    work = await lytics.create_work("e40a0ad5d0a845ca8549a7d23ede9eed", {"filter_ql": "*"})
    assert set(work) == {"id"}
    with pytest.raises(PermanentError, match="400 Bad Request: unknown connection"):
        await lytics.create_job("export", "no-such-connection")


async def test_sandbox_control_moves_profiles_between_segments(
    lytics: LyticsClient, lytics_server: Control
):
    lytics_server.post("segments/high_value_users/members", {"add": ["uid001", "new-uid"]})

    assert (await lytics.get_segment("high_value_users"))["size"] == 10


async def test_429_without_retry_after_backs_off_by_itself(
    lytics: LyticsClient, lytics_server: Control, fake_sleep: FakeSleep
):
    lytics_server.fail(429, count=2, message="Too many requests")

    assert len(await lytics.list_jobs()) == 3
    assert len(fake_sleep.delays) == 2
    assert 1 <= fake_sleep.delays[0] <= 2 and 2 <= fake_sleep.delays[1] <= 4


async def test_429_past_the_wait_budget_is_rate_limited(
    lytics: LyticsClient, lytics_server: Control, fake_sleep: FakeSleep
):
    lytics_server.fail(429, count=10)

    with pytest.raises(RateLimited) as caught:
        await lytics.list_jobs()

    assert caught.value.retry_after > 0
    assert sum(fake_sleep.delays) <= 10


async def test_sandbox_rate_limit_sends_no_headers(http: httpx.AsyncClient):
    app = create_lytics_app(LYTICS_TOKEN, rate_limit_per_minute=60, rate_limit_burst=1)
    with serve_in_thread(app) as server:
        headers = {"Authorization": LYTICS_TOKEN}
        await http.get(f"{server.url}/api/job", headers=headers)
        second = await http.get(f"{server.url}/api/job", headers=headers)

    assert second.status_code == 429
    assert "retry-after" not in second.headers
    assert second.json() == {"data": None, "message": "Too many requests", "status": 429}


@pytest.mark.parametrize("status", [200, "200", "success"])
async def test_envelope_status_may_be_a_number_or_a_string(status):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": status, "message": "ok", "data": [{"id": "1"}]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = LyticsClient(http, "https://api.lytics.io", Secret("t"))
        assert await client.list_jobs() == [{"id": "1"}]


async def test_error_status_inside_a_200_envelope_is_an_error():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "400", "message": "bad filter", "data": None})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = LyticsClient(http, "https://api.lytics.io", Secret("t"))
        with pytest.raises(PermanentError, match="the envelope says status 400"):
            await client.list_segments()


async def test_non_json_answer_is_a_client_error():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>login</html>")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = LyticsClient(http, "https://api.lytics.io", Secret("t"))
        with pytest.raises(ClientError, match="expected a JSON envelope"):
            await client.list_segments()


async def test_collect_sends_the_documented_request():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": 200, "message": "success"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = LyticsClient(http, "https://api.lytics.io/", Secret("tok"))
        await client.collect("s1", {"a": 1})
        await client.collect("s1", [{"a": 1}, {"a": 2}])

    one, several = seen
    assert str(one.url) == "https://api.lytics.io/api/collect?stream=s1"
    assert one.headers["Authorization"] == "tok"
    assert one.headers["Content-Type"] == "application/json"
    assert json.loads(one.content) == {"a": 1}
    assert str(several.url) == "https://api.lytics.io/api/collect?stream=s1"
    assert json.loads(several.content) == [{"a": 1}, {"a": 2}]
