"""LythoClient against the Lytho DAM sandbox over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from clients_support import LYTHO_KEY, Control, FakeSleep

from bridge.clients import LythoClient, RetryPolicy
from bridge.clients.lytho_profile import load_profile
from bridge.errors import ClientError, PermanentError, RateLimited
from bridge.sandbox.lytho import create_lytho_app
from bridge.sandbox.lytho_dialect import LythoDialect
from bridge.sandbox.server import serve_in_thread
from bridge.settings import Secret


async def test_lists_every_asset_across_pages(lytho: LythoClient, lytho_server: Control):
    assets = [a async for a in lytho.iter_assets(size=5)]

    assert len(assets) == 12
    assert len({a["id"] for a in assets}) == 12
    pages = [r["query"] for r in lytho_server.requests() if r["path"] == "/v1/assets"]
    assert pages == ["page=0&size=5", "page=1&size=5", "page=2&size=5"]


async def test_sends_the_key_in_the_x_api_key_header(lytho: LythoClient, lytho_server: Control):
    asset = await lytho.get_asset(1001)

    assert asset["fileName"] == "spring-hero.jpg"
    assert [r["status"] for r in lytho_server.requests()] == [200]


async def test_wrong_key_is_permanent_with_method_path_status_and_hint(lytho_server: Control):
    async with httpx.AsyncClient() as http:
        client = LythoClient(http, f"{lytho_server.url}/v1/", Secret("wrong-key-xyz"))
        with pytest.raises(PermanentError) as caught:
            await client.get_asset(1001)

    assert str(caught.value) == (
        "GET /v1/assets/1001 → 401 Unauthorized; check LYTHO_API_KEY (sent as the bare key in "
        "x-api-key; dam.auth.header and dam.auth.scheme in BRIDGE_LYTHO_PROFILE)"
    )
    assert caught.value.status == 401
    assert "wrong-key-xyz" not in str(caught.value)


async def test_sandbox_401_body_is_lythos_error_shape(lytho_server: Control):
    response = httpx.get(f"{lytho_server.url}/v1/assets")

    assert response.status_code == 401
    assert set(response.json()) == {"status", "message", "traceId"}
    assert response.json()["status"] == 401


async def test_missing_asset_is_a_404_permanent_error(lytho: LythoClient):
    with pytest.raises(
        PermanentError, match=r"GET /v1/assets/9 → 404 Not Found: Asset 9 not found"
    ):
        await lytho.get_asset(9)


async def test_update_keeps_every_field_it_did_not_change(lytho: LythoClient):
    before = await lytho.get_asset(1001)

    after = await lytho.update_asset(1001, {"description": "New words"})

    assert after["description"] == "New words"
    for field in ("fileName", "name", "tags", "metadata", "fileType", "uploadedBy"):
        assert after[field] == before[field], field
    assert after["version"] == before["version"] + 1


async def test_sandbox_erases_what_a_naive_partial_put_leaves_out(lytho_server: Control):
    url = f"{lytho_server.url}/v1/assets/1001"
    response = httpx.put(url, json={"description": "only this"}, headers={"x-api-key": LYTHO_KEY})

    assert response.status_code == 200
    asset = response.json()
    assert asset["description"] == "only this"
    assert asset["name"] == "" and asset["tags"] == [] and asset["metadata"] == []


async def test_update_retries_after_a_conflicting_write(lytho: LythoClient, lytho_server: Control):
    lytho_server.fail(409, method="PUT", path="/v1/assets/1002", message="changed meanwhile")

    after = await lytho.update_asset(1002, {"name": "Renamed"})

    assert after["name"] == "Renamed"
    puts = [r["status"] for r in lytho_server.requests() if r["method"] == "PUT"]
    assert puts == [409, 200]


async def test_sandbox_refuses_a_stale_version(lytho_server: Control):
    url = f"{lytho_server.url}/v1/assets/1001"
    asset = httpx.get(url, headers={"x-api-key": LYTHO_KEY}).json()
    lytho_server.patch("assets/1001", {"description": "edited in Lytho"})

    response = httpx.put(url, json=asset, headers={"x-api-key": LYTHO_KEY})

    assert response.status_code == 409


async def test_update_refuses_read_only_fields(lytho: LythoClient):
    with pytest.raises(ValueError, match="read-only asset fields: version"):
        await lytho.update_asset(1001, {"version": 9})


async def test_add_and_remove_tags(lytho: LythoClient):
    approved = await lytho.get_tag_by_name("Approved")
    assert approved is not None

    asset = await lytho.add_tags(1001, [approved["id"]])
    assert "approved" in [t["name"] for t in asset["tags"]]
    assert asset["name"] == "Spring campaign hero"

    asset = await lytho.remove_tags(1001, [approved["id"]])
    assert "approved" not in [t["name"] for t in asset["tags"]]
    assert "hero" in [t["name"] for t in asset["tags"]]


async def test_adding_an_unknown_tag_is_a_400(lytho: LythoClient):
    with pytest.raises(PermanentError, match=r"POST /v1/assets/1001/tags → 400 Bad Request"):
        await lytho.add_tags(1001, [999])


async def test_tags_list_get_create_and_ensure(lytho: LythoClient):
    tags = [t async for t in lytho.iter_tags(size=3)]
    assert len(tags) == 8
    assert (await lytho.get_tag(tags[0]["id"]))["name"] == tags[0]["name"]
    assert await lytho.get_tag_by_name("no-such-tag") is None

    created = await lytho.create_tag("Hero banner", {"nl": "Hoofdbanner"})
    assert created["nameTranslation"] == {"nl": "Hoofdbanner"}
    assert (await lytho.ensure_tag("hero banner"))["id"] == created["id"]
    new = await lytho.ensure_tag("autumn-2026")
    assert (await lytho.get_tag_by_name("autumn-2026")) == new

    with pytest.raises(PermanentError, match="409 Conflict"):
        await lytho.create_tag("hero")


async def test_custom_metadata_add_update_remove(lytho: LythoClient):
    assert await lytho.get_metadata(1001) == {"campaign": "spring-2026"}

    assert await lytho.add_metadata(1001, {"channel": "web"}) == {
        "campaign": "spring-2026",
        "channel": "web",
    }
    with pytest.raises(PermanentError, match="409"):
        await lytho.add_metadata(1001, {"channel": "print"})

    updated = await lytho.update_metadata(1001, {"channel": "print", "owner": "Dana"})
    assert updated == {"campaign": "spring-2026", "channel": "print", "owner": "Dana"}

    assert await lytho.remove_metadata(1001, ["channel", "owner"]) == {"campaign": "spring-2026"}
    assert (await lytho.get_asset(1001))["metadata"] == [
        {"name": "campaign", "value": "spring-2026"}
    ]


async def test_collections_list_get_add_remove(lytho: LythoClient):
    collections = [c async for c in lytho.iter_collections()]
    assert [c["name"] for c in collections] == ["Spring 2026 campaign", "Brand"]

    collection = await lytho.add_to_collection(501, [1004, 1001])
    assert [a["id"] for a in collection["assets"]] == [1001, 1002, 1003, 1004]

    collection = await lytho.remove_from_collection(501, [1002])
    assert [a["id"] for a in collection["assets"]] == [1001, 1003, 1004]
    assert (await lytho.get_collection(501))["assets"] == collection["assets"]


async def test_page_size_is_checked_by_client_and_sandbox(lytho: LythoClient, lytho_server):
    with pytest.raises(ValueError, match="between 1 and 50"):
        [a async for a in lytho.iter_assets(size=51)]
    response = httpx.get(f"{lytho_server.url}/v1/assets?size=51", headers={"x-api-key": LYTHO_KEY})
    assert response.status_code == 400
    assert response.json()["message"] == "size must be between 1 and 50"


async def test_5xx_is_retried_with_backoff(
    lytho: LythoClient, lytho_server: Control, fake_sleep: FakeSleep
):
    lytho_server.fail(503, count=2, path="/v1/assets/1001")

    asset = await lytho.get_asset(1001)

    assert asset["id"] == 1001
    assert [r["status"] for r in lytho_server.requests()] == [503, 503, 200]
    assert len(fake_sleep.delays) == 2
    assert all(0 <= d <= 0.05 for d in fake_sleep.delays)


async def test_persistent_5xx_becomes_a_retryable_client_error(
    lytho: LythoClient, lytho_server: Control
):
    lytho_server.fail(500, count=5, message="database is down")

    with pytest.raises(ClientError) as caught:
        await lytho.get_asset(1001)

    assert not isinstance(caught.value, PermanentError)
    assert caught.value.status == 500
    assert str(caught.value) == (
        "GET /v1/assets/1001 → 500 Internal Server Error: database is down; Lytho failed 3 times"
    )
    assert len(lytho_server.requests()) == 3


@pytest.mark.parametrize(("header", "low", "high"), [("2", 2, 2), ("date:3", 1.5, 3.01)])
async def test_429_waits_for_retry_after_in_both_forms(
    lytho: LythoClient, lytho_server: Control, fake_sleep: FakeSleep, header, low, high
):
    lytho_server.fail(429, retry_after=header)

    asset = await lytho.get_asset(1001)

    assert asset["id"] == 1001
    assert len(fake_sleep.delays) == 1
    assert low <= fake_sleep.delays[0] <= high


async def test_long_429_is_raised_as_rate_limited_for_the_queue(
    lytho: LythoClient, lytho_server: Control, fake_sleep: FakeSleep
):
    lytho_server.fail(429, retry_after="120")

    with pytest.raises(RateLimited) as caught:
        await lytho.get_asset(1001)

    assert caught.value.retry_after == 120
    assert "GET /v1/assets/1001 → 429 Too Many Requests" in str(caught.value)
    assert fake_sleep.delays == []


async def test_sandbox_spaces_requests_like_lytho(http: httpx.AsyncClient):
    app = create_lytho_app(LYTHO_KEY, rate_limit_per_minute=20)
    with serve_in_thread(app) as server:
        headers = {"x-api-key": LYTHO_KEY}
        first = await http.get(f"{server.url}/v1/tags", headers=headers)
        second = await http.get(f"{server.url}/v1/tags", headers=headers)

    assert first.status_code == 200
    assert second.status_code == 429
    assert 1 <= int(second.headers["Retry-After"]) <= 3
    assert second.json()["status"] == 429


async def test_sandbox_enforces_the_daily_quota(http: httpx.AsyncClient):
    app = create_lytho_app(LYTHO_KEY, rate_limit_per_minute=None, rate_limit_per_day=2)
    with serve_in_thread(app) as server:
        headers = {"x-api-key": LYTHO_KEY}
        answers = [await http.get(f"{server.url}/v1/tags", headers=headers) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert int(answers[2].headers["Retry-After"]) > 40_000


async def test_timeouts_are_retried_then_reported(fake_sleep: FakeSleep):
    # A server of its own: the slow answers finish after the test and must log nowhere else.
    app = create_lytho_app(LYTHO_KEY, rate_limit_per_minute=None)
    with serve_in_thread(app) as server:
        await _time_out_three_times(Control(server, app), fake_sleep)


async def _time_out_three_times(lytho_server: Control, fake_sleep: FakeSleep) -> None:
    lytho_server.fail(None, count=3, delay=0.3)
    async with httpx.AsyncClient() as http:
        client = LythoClient(
            http,
            f"{lytho_server.url}/v1/",
            Secret(LYTHO_KEY),
            retry=RetryPolicy(backoff=0.01),
            timeout=httpx.Timeout(0.1),
            sleep=fake_sleep,
        )
        with pytest.raises(ClientError, match=r"GET /v1/assets/1001 timed out after 3 requests"):
            await client.get_asset(1001)
    assert len(fake_sleep.delays) == 2


async def test_connection_errors_name_the_base_url(fake_sleep: FakeSleep):
    async with httpx.AsyncClient() as http:
        client = LythoClient(http, "http://127.0.0.1:9/v1/", Secret(LYTHO_KEY), sleep=fake_sleep)
        with pytest.raises(ClientError) as caught:
            await client.get_asset(1)
    assert "GET /v1/assets/1 failed (ConnectError) after 3 requests" in str(caught.value)
    assert "http://127.0.0.1:9/v1/" in str(caught.value)
    assert LYTHO_KEY not in str(caught.value)


async def test_sandbox_controls_edit_create_delete_and_reset(
    lytho: LythoClient, lytho_server: Control
):
    lytho_server.patch("assets/1003", {"name": "Edited in the UI"})
    assert (await lytho.get_asset(1003))["name"] == "Edited in the UI"

    created = lytho_server.post("assets", {"fileName": "new.png", "name": "New"}).json()
    assert (await lytho.get_asset(created["id"]))["fileName"] == "new.png"

    assert httpx.delete(f"{lytho_server.url}/_sandbox/assets/{created['id']}").status_code == 204
    lytho_server.post("reset")
    assert (await lytho.get_asset(1003))["name"] == "Spring story video"
    # The reset emptied the log; it holds the one request made since.
    assert [r["path"] for r in lytho_server.requests()] == ["/v1/assets/1003"]


# The profile: a client overridden by a file against a sandbox speaking that file's dialect.

OTHER_DIALECT = """
dam:
  auth: {header: Authorization, scheme: Bearer}
  pages: {page_param: pageNumber, size_param: perPage, first_page: 1, max_size: 25,
          items: data, total: total, total_pages: "", last: ""}
  paths:
    assets: media
    asset: "media/{asset_id}"
    tags: labels
    tag: "labels/{tag_id}"
    collections: albums
    collection: "albums/{collection_id}"
  operations:
    update_asset: {path: "media/{asset_id}"}
    add_tags: {method: PUT, path: "media/{asset_id}/labels", ids: {in: query, name: labelId}}
    remove_tags: {path: "media/{asset_id}/labels", ids: {in: body, name: labelIds}}
    get_metadata: {path: "media/{asset_id}/fields"}
    add_metadata: {path: "media/{asset_id}/fields"}
    update_metadata: {path: "media/{asset_id}/fields"}
    remove_metadata: {path: "media/{asset_id}/fields", ids: {in: body, name: fieldNames}}
    create_tag: {path: labels}
    add_to_collection: {method: PUT, path: "albums/{collection_id}/media",
                        ids: {in: query, name: mediaId}}
    remove_from_collection: {path: "albums/{collection_id}/media", ids: {in: body, name: mediaIds}}
    get_upload_link: {path: uploads/link}
    finalize_upload: {path: uploads/finish}
  upload: {link_url: url, link_id: token, method: POST}
  fields: {asset_tags: labels, asset_metadata: customFields, asset_version: revision,
           asset_modified: updatedAt}
"""


@pytest.fixture(scope="module")
def other_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("profile") / "other.yaml"
    path.write_text(OTHER_DIALECT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def other_running(other_file: Path) -> Iterator[Control]:
    app = create_lytho_app(
        LYTHO_KEY,
        rate_limit_per_minute=None,
        rate_limit_per_day=None,
        dialect=LythoDialect.from_file(other_file),
    )
    with serve_in_thread(app) as server:
        yield Control(server, app)


@pytest.fixture
def other(
    other_running: Control, other_file: Path, http: httpx.AsyncClient, retry: RetryPolicy
) -> LythoClient:
    other_running.post("reset")
    return LythoClient(
        http,
        f"{other_running.url}/v1/",
        Secret(LYTHO_KEY),
        profile=load_profile(other_file),
        retry=retry,
        sleep=FakeSleep(),
    )


async def test_an_overridden_profile_pages_from_1_under_data_with_its_own_names(
    other: LythoClient, other_running: Control, caplog: pytest.LogCaptureFixture
):
    assets = [a async for a in other.iter_assets(size=5)]

    assert len({a["id"] for a in assets}) == 12
    assert assets[0]["labels"] == [{"id": 1, "name": "hero"}, {"id": 3, "name": "spring-2026"}]
    assert assets[0]["revision"] == 1
    pages = [(r["path"], r["query"]) for r in other_running.requests()]
    assert pages == [
        ("/v1/media", "pageNumber=1&perPage=5"),
        ("/v1/media", "pageNumber=2&perPage=5"),
        ("/v1/media", "pageNumber=3&perPage=5"),
    ]
    assert other.page_shape == "data"
    assert "Lytho DAM pages carry" not in caplog.text  # the shape the profile says: no warning
    with pytest.raises(ValueError, match="between 1 and 25"):
        [a async for a in other.iter_assets(size=26)]


async def test_an_overridden_profile_tags_untags_sets_metadata_and_collects(
    other: LythoClient, other_running: Control
):
    approved = await other.ensure_tag("approved")
    asset = await other.add_tags(1001, [approved["id"]])
    assert [t["name"] for t in asset["labels"]] == ["hero", "spring-2026", "approved"]
    asset = await other.remove_tags(1001, [1])
    assert [t["name"] for t in asset["labels"]] == ["spring-2026", "approved"]

    assert await other.add_metadata(1001, {"channel": "web"}) == {
        "campaign": "spring-2026",
        "channel": "web",
    }
    assert await other.update_metadata(1001, {"channel": "print"}) == {
        "campaign": "spring-2026",
        "channel": "print",
    }
    assert await other.remove_metadata(1001, ["channel"]) == {"campaign": "spring-2026"}

    collection = await other.add_to_collection(502, [1001, 1002])
    assert {"id": 1001} in collection["assets"] and {"id": 1002} in collection["assets"]
    collection = await other.remove_from_collection(502, [1002])
    assert {"id": 1002} not in collection["assets"]

    updated = await other.update_asset(1001, {"description": "Kept whole"})
    assert updated["description"] == "Kept whole"
    assert [t["name"] for t in updated["labels"]] == ["spring-2026", "approved"]
    with pytest.raises(ValueError, match="read-only asset fields: revision"):
        await other.update_asset(1001, {"revision": 9})

    sent = [(r["method"], r["path"], r["query"]) for r in other_running.requests()]
    assert ("PUT", "/v1/media/1001/labels", f"labelId={approved['id']}") in sent
    assert ("DELETE", "/v1/media/1001/labels", "") in sent
    assert ("DELETE", "/v1/media/1001/fields", "") in sent
    assert ("PUT", "/v1/albums/502/media", "mediaId=1001&mediaId=1002") in sent
    assert ("DELETE", "/v1/albums/502/media", "") in sent
    assert ("PUT", "/v1/media/1001", "") in sent
    assert all(r["status"] < 400 for r in other_running.requests())


async def test_the_default_profile_against_that_dialect_fails_naming_the_entry(
    other_running: Control, http: httpx.AsyncClient
):
    other_running.post("reset")
    client = LythoClient(http, f"{other_running.url}/v1/", Secret(LYTHO_KEY), sleep=FakeSleep())

    with pytest.raises(PermanentError) as listing:
        [a async for a in client.iter_assets()]
    with pytest.raises(PermanentError) as tagging:
        await client.add_tags(1001, [1])

    assert str(listing.value) == (
        "GET /v1/assets?page=0&size=50 → 404 Not Found; no such resource; check the id or the "
        "path; if the path or method is wrong for your tenant, set dam.paths.assets in "
        "BRIDGE_LYTHO_PROFILE"
    )
    assert str(tagging.value).endswith("set dam.operations.add_tags in BRIDGE_LYTHO_PROFILE")
    assert [r["status"] for r in other_running.requests()] == [404, 404]


async def test_the_auth_header_and_scheme_come_from_the_profile(
    http: httpx.AsyncClient, tmp_path: Path
):
    auth = "dam:\n  auth: {header: Authorization, scheme: Bearer}\n"
    (tmp_path / "auth.yaml").write_text(auth, encoding="utf-8")
    dialect = LythoDialect.from_file(tmp_path / "auth.yaml")
    app = create_lytho_app(LYTHO_KEY, rate_limit_per_minute=None, dialect=dialect)
    with serve_in_thread(app) as server:
        url = f"{server.url}/v1/"
        default = LythoClient(http, url, Secret(LYTHO_KEY), sleep=FakeSleep())
        with pytest.raises(PermanentError) as caught:
            await default.get_asset(1001)
        profile = load_profile(tmp_path / "auth.yaml")
        overridden = LythoClient(http, url, Secret(LYTHO_KEY), profile=profile)
        asset = await overridden.get_asset(1001)

    assert asset["id"] == 1001
    assert str(caught.value) == (
        "GET /v1/assets/1001 → 401 Unauthorized; check LYTHO_API_KEY (sent as the bare key in "
        "x-api-key; dam.auth.header and dam.auth.scheme in BRIDGE_LYTHO_PROFILE)"
    )
    assert overridden.credential_hint == (
        "check LYTHO_API_KEY (sent as Bearer <key> in Authorization; dam.auth.header and "
        "dam.auth.scheme in BRIDGE_LYTHO_PROFILE)"
    )


@pytest.mark.parametrize("shape", ["content", "items", "data", "results", "list"])
async def test_every_common_page_shape_is_read_and_named(
    shape: str, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
):
    dialect = LythoDialect.from_mapping({"dam.pages.items": shape})
    app = create_lytho_app(LYTHO_KEY, rate_limit_per_minute=None, dialect=dialect)
    with serve_in_thread(app) as server:
        client = LythoClient(http, f"{server.url}/v1/", Secret(LYTHO_KEY))
        assets = [a async for a in client.iter_assets(size=5)]
        tags = [t async for t in client.iter_tags(size=3)]

    assert len({a["id"] for a in assets}) == 12
    assert len(tags) == 8
    assert client.page_shape == shape
    warnings = [r.getMessage() for r in caplog.records if "Lytho DAM pages carry" in r.getMessage()]
    if shape == "content":
        assert warnings == []
    else:
        where = "as a bare JSON list" if shape == "list" else f"under {shape!r}"
        assert warnings == [  # once per client, however many pages it read
            f"Lytho DAM pages carry their items {where}, not 'content' as the Lytho profile "
            f"says; read anyway. Set dam.pages.items: {shape} in BRIDGE_LYTHO_PROFILE (bridge "
            "doctor checks it)"
        ]


async def test_an_unknown_page_shape_is_a_clear_error(http: httpx.AsyncClient):
    dialect = LythoDialect.from_mapping({"dam.pages.items": "records"})
    app = create_lytho_app(LYTHO_KEY, rate_limit_per_minute=None, dialect=dialect)
    with serve_in_thread(app) as server:
        client = LythoClient(http, f"{server.url}/v1/", Secret(LYTHO_KEY))
        with pytest.raises(ClientError) as caught:
            [a async for a in client.iter_assets()]

    assert str(caught.value).startswith(
        "GET assets: expected a page of items (tried content, items, data, results and a bare "
        "list), got an object with keys "
    )
    assert "records" in str(caught.value)
    assert str(caught.value).endswith(
        "; set the page shape in BRIDGE_LYTHO_PROFILE (docs/lytho-api.md)"
    )
    assert client.page_shape is None
