"""The Lytho sandboxes speak a dialect of their own, over real HTTP on loopback.

Default dialect (the documents' reading), another dialect from an override file, the DAM
upload flow, OPTIONS answers, the Workflow's campaigns and modified-since filter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.sandbox.lytho import create_lytho_app
from bridge.sandbox.lytho_dialect import LythoDialect
from bridge.sandbox.lytho_workflow import create_lytho_workflow_app
from bridge.sandbox.server import serve_in_thread

KEY = "dam-key-0001"
DAM_OTHER = """\
dam:
  auth: {header: Authorization, scheme: Bearer}
  pages: {page_param: pageNumber, size_param: perPage, first_page: 1, max_size: 25,
          items: data, total: total, total_pages: "", last: ""}
  paths: {assets: media, asset: "media/{asset_id}"}
  operations:
    update_asset: {path: "media/{asset_id}"}
    add_tags: {method: PUT, path: "media/{asset_id}/labels", ids: {in: query, name: labelId}}
    remove_tags: {path: "media/{asset_id}/labels", ids: {in: body, name: labelIds}}
    get_upload_link: {path: uploads/link}
    finalize_upload: {path: uploads/finish}
  upload: {link_url: location, link_id: token, method: POST}
  fields: {asset_tags: labels, asset_version: revision}
"""


def dam_app(**kwargs: Any) -> Any:
    return create_lytho_app(KEY, rate_limit_per_minute=None, rate_limit_per_day=None, **kwargs)


@pytest.fixture(scope="module")
def dam() -> Iterator[str]:
    with serve_in_thread(dam_app()) as server:
        yield server.url


@pytest.fixture
def dam_url(dam: str) -> str:
    httpx.post(f"{dam}/_sandbox/reset").raise_for_status()
    return dam


@pytest.fixture(scope="module")
def other_dam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("dialect") / "dam.yaml"
    path.write_text(DAM_OTHER, encoding="utf-8")
    with serve_in_thread(dam_app(dialect=LythoDialect.from_file(path))) as server:
        yield server.url


def get(url: str, **params: Any) -> httpx.Response:
    return httpx.get(url, params=params, headers={"x-api-key": KEY})


def test_default_dialect_pages_like_spring_with_assets_carrying_tags_metadata_version(
    dam_url: str,
) -> None:
    first = get(f"{dam_url}/v1/assets", page=0, size=5).json()
    last = get(f"{dam_url}/v1/assets", page=2, size=5).json()

    assert [a["id"] for a in first["content"]] == [1001, 1002, 1003, 1004, 1005]
    assert (first["totalElements"], first["totalPages"], first["last"]) == (12, 3, False)
    assert (first["number"], first["first"]) == (0, True)
    assert [a["id"] for a in last["content"]] == [1011, 1012] and last["last"] is True
    hero = first["content"][0]
    assert hero["tags"] == [{"id": 1, "name": "hero"}, {"id": 3, "name": "spring-2026"}]
    assert hero["metadata"] == [{"name": "campaign", "value": "spring-2026"}]
    assert (hero["version"], hero["fileName"]) == (1, "spring-hero.jpg")
    assert get(f"{dam_url}/v1/assets", size=51).json()["message"] == (
        "size must be between 1 and 50"
    )
    assert httpx.get(f"{dam_url}/v1/assets").status_code == 401


def test_another_dialect_is_served_and_the_default_paths_are_not(other_dam: str) -> None:
    httpx.post(f"{other_dam}/_sandbox/reset").raise_for_status()
    bearer = {"Authorization": f"Bearer {KEY}"}

    page = httpx.get(f"{other_dam}/v1/media?pageNumber=3&perPage=5", headers=bearer).json()
    tagged = httpx.put(f"{other_dam}/v1/media/1008/labels?labelId=1&labelId=2", headers=bearer)
    untagged = httpx.request(
        "DELETE", f"{other_dam}/v1/media/1008/labels", json={"labelIds": [1]}, headers=bearer
    )

    assert page == {"data": page["data"], "total": 12}  # no totalPages, no last flag
    assert [a["id"] for a in page["data"]] == [1011, 1012]
    assert tagged.status_code == 200
    assert tagged.json()["labels"] == [{"id": 1, "name": "hero"}, {"id": 2, "name": "approved"}]
    assert (tagged.json()["revision"], "tags" in tagged.json()) == (2, False)
    assert untagged.json()["labels"] == [{"id": 2, "name": "approved"}]
    first_page = httpx.get(f"{other_dam}/v1/media?pageNumber=0", headers=bearer)
    assert first_page.json()["message"] == "pageNumber must be at least 1"
    assert httpx.get(f"{other_dam}/v1/media", headers={"x-api-key": KEY}).status_code == 401
    for method, path in [("GET", "assets"), ("POST", "assets/1008/tags"), ("GET", "assets/1")]:
        answer = httpx.request(method, f"{other_dam}/v1/{path}", headers=bearer, json={})
        assert answer.status_code == 404, (method, path)
        assert set(answer.json()) == {"status", "message", "traceId"}


def test_upload_flow_creates_the_asset_from_what_was_uploaded(dam_url: str) -> None:
    data = b"\x89PNG fake image bytes" * 10
    link = httpx.post(
        f"{dam_url}/v1/assets/getUploadLink",
        json={"fileName": "hero.png", "contentType": "image/png", "fileSize": len(data)},
        headers={"x-api-key": KEY},
    ).json()
    assert set(link) == {"uploadUrl", "uploadId"}
    assert link["uploadUrl"].startswith(f"{dam_url}/")

    sent = httpx.put(link["uploadUrl"], content=data, headers={"content-type": "image/png"})
    again = httpx.put(link["uploadUrl"], content=b"other bytes")
    asset = httpx.post(
        f"{dam_url}/v1/assets/finalizeUpload",
        json={
            "uploadId": link["uploadId"],
            "fileName": "hero.png",
            "name": "Hero",
            "collectionId": 502,
        },
        headers={"x-api-key": KEY},
    )
    twice = httpx.post(
        f"{dam_url}/v1/assets/finalizeUpload",
        json={"uploadId": link["uploadId"], "fileName": "hero.png", "name": "Hero"},
        headers={"x-api-key": KEY},
    )

    assert sent.status_code == 200 and sent.headers["etag"]
    assert again.status_code == 409
    assert again.json()["message"].startswith(f"Upload {link['uploadId']} already has its file")
    assert asset.status_code == 201
    made = asset.json()
    assert (made["fileName"], made["name"], made["fileSize"], made["fileType"]) == (
        "hero.png",
        "Hero",
        len(data),
        "image/png",
    )
    assert (made["tags"], made["metadata"], made["version"]) == ([], [], 1)
    assert twice.status_code == 409
    assert twice.json()["message"] == (
        f"Upload {link['uploadId']} was already finalized as asset {made['id']}"
    )
    assert get(f"{dam_url}/v1/assets/{made['id']}").json() == made
    brand = get(f"{dam_url}/v1/collections/502").json()
    assert {"id": made["id"]} in brand["assets"]
    kept = httpx.get(f"{dam_url}/_sandbox/uploads/{link['uploadId']}")
    assert kept.content == data  # the refused second upload changed nothing


def test_upload_failures_are_clear_and_lose_nothing(
    dam_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bridge.sandbox.lytho_upload.MAX_UPLOAD_BYTES", 100)
    key = {"x-api-key": KEY}

    def link(**body: Any) -> dict[str, Any]:
        answer = httpx.post(f"{dam_url}/v1/assets/getUploadLink", json=body, headers=key)
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    def finalize(upload_id: str) -> httpx.Response:
        body = {"uploadId": upload_id, "fileName": "a.txt", "name": "A"}
        return httpx.post(f"{dam_url}/v1/assets/finalizeUpload", json=body, headers=key)

    empty = link(fileName="a.txt", contentType="text/plain")
    wrong_size = link(fileName="b.txt", contentType="text/plain", fileSize=5)
    big = link(fileName="c.txt", contentType="text/plain")
    assets_before = get(f"{dam_url}/v1/assets", size=50).json()["totalElements"]

    unfinished = finalize(empty["uploadId"])
    unknown = finalize("no-such-upload")
    stranger = httpx.put(f"{dam_url}/upload/no-such-upload", content=b"x")
    mismatch = httpx.put(wrong_size["uploadUrl"], content=b"123456")
    too_big = httpx.put(big["uploadUrl"], content=b"x" * 101)
    no_file_name = httpx.post(f"{dam_url}/v1/assets/getUploadLink", json={}, headers=key)
    huge = httpx.post(
        f"{dam_url}/v1/assets/getUploadLink", json={"fileName": "h", "fileSize": 101}, headers=key
    )
    no_key = httpx.post(f"{dam_url}/v1/assets/getUploadLink", json={"fileName": "a"})

    assert (unfinished.status_code, unfinished.json()["message"]) == (
        400,
        f"Upload {empty['uploadId']} has no file yet; send the file to its URL first",
    )
    assert set(unfinished.json()) == {"status", "message", "traceId"}
    assert (unknown.status_code, unknown.json()["message"]) == (
        400,
        "Upload no-such-upload does not exist; ask getUploadLink first",
    )
    assert stranger.status_code == 404
    assert mismatch.status_code == 400
    assert mismatch.json()["message"].endswith("got 6 bytes; getUploadLink announced fileSize 5")
    assert (too_big.status_code, too_big.json()["message"]) == (
        413,
        "the file is over the 100 bytes allowed",
    )
    assert no_file_name.json()["message"] == "fileName is required and must be a non-empty string"
    assert huge.json()["message"] == "fileSize 101 is over the 100 bytes allowed"
    assert no_key.status_code == 401
    assert get(f"{dam_url}/v1/assets", size=50).json()["totalElements"] == assets_before
    # A refused file leaves the link usable.
    assert httpx.put(wrong_size["uploadUrl"], content=b"12345").status_code == 200
    assert finalize(wrong_size["uploadId"]).status_code == 201


def test_upload_in_another_dialect(other_dam: str) -> None:
    bearer = {"Authorization": f"Bearer {KEY}"}
    link = httpx.post(f"{other_dam}/v1/uploads/link", json={"fileName": "x.txt"}, headers=bearer)
    body = link.json()
    put = httpx.put(body["location"], content=b"abc")
    posted = httpx.post(body["location"], content=b"abc")
    asset = httpx.post(
        f"{other_dam}/v1/uploads/finish", json={"token": body["token"]}, headers=bearer
    )

    assert set(body) == {"location", "token"}
    assert put.status_code == 405 and posted.status_code == 200
    assert asset.status_code == 201
    made = asset.json()
    assert (made["fileName"], made["name"], made["labels"], made["revision"]) == (
        "x.txt",
        "x.txt",
        [],
        1,
    )
    assert httpx.post(f"{other_dam}/v1/assets/getUploadLink", headers=bearer).status_code == 404


def test_every_path_answers_options_with_its_methods_and_no_rate_limit() -> None:
    app = create_lytho_app(KEY, rate_limit_per_minute=1, rate_limit_burst=1)
    with serve_in_thread(app) as server:
        answers = {
            path: httpx.options(f"{server.url}{path}")
            for path in (
                "/v1/assets",
                "/v1/assets/1001",
                "/v1/assets/1001/tags",
                "/v1/assets/1001/metadata",
                "/v1/tags",
                "/v1/collections/501/assets",
                "/v1/assets/getUploadLink",
                "/upload/anything",
            )
        }
        first = get(f"{server.url}/v1/assets/1001")
        second = get(f"{server.url}/v1/assets/1001")
        after = httpx.options(f"{server.url}/v1/assets/1001")

    assert {p: (a.status_code, a.headers["allow"]) for p, a in answers.items()} == {
        "/v1/assets": (204, "GET,HEAD,OPTIONS"),
        "/v1/assets/1001": (204, "GET,HEAD,PUT,OPTIONS"),
        "/v1/assets/1001/tags": (204, "POST,DELETE,OPTIONS"),
        "/v1/assets/1001/metadata": (204, "GET,HEAD,POST,PUT,DELETE,OPTIONS"),
        "/v1/tags": (204, "GET,HEAD,POST,OPTIONS"),
        "/v1/collections/501/assets": (204, "POST,DELETE,OPTIONS"),
        "/v1/assets/getUploadLink": (204, "POST,OPTIONS"),
        "/upload/anything": (204, "PUT,OPTIONS"),
    }
    # Eight OPTIONS booked nothing: the first GET still passes the one-a-minute limit.
    assert (first.status_code, second.status_code, after.status_code) == (200, 429, 204)


# --- Workflow --------------------------------------------------------------------------

WF_OTHER = """\
workflow:
  auth: {token_auth: body}
  pages: {page_param: offsetPage, size_param: limit, first_page: 0, sizes: [2, 4],
          items: list}
  paths: {search: "{kind}/find"}
  kinds: {campaign: campaigns}
  search: {modified_since: updatedAfter}
  fields: {modified: updatedAt}
"""


def workflow_token(url: str, *, body: bool = False) -> dict[str, str]:
    form = {"grant_type": "client_credentials"}
    if body:
        answer = httpx.post(
            f"{url}/oauth/token", data={**form, "client_id": "id", "client_secret": "secret"}
        )
    else:
        answer = httpx.post(f"{url}/oauth/token", data=form, auth=("id", "secret"))
    answer.raise_for_status()
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@pytest.fixture(scope="module")
def workflow() -> Iterator[str]:
    with serve_in_thread(create_lytho_workflow_app("id", "secret")) as server:
        yield server.url


def test_campaigns_are_searched_paged_and_filtered(workflow: str) -> None:
    url = workflow
    httpx.post(f"{url}/_sandbox/reset").raise_for_status()
    auth = workflow_token(url)
    search = f"{url}/v1/campaign/search"

    every = httpx.get(search, headers=auth).json()
    active = httpx.get(search, params={"status": "active"}, headers=auth).json()
    recent = httpx.get(search, params={"modifiedSince": "2026-01-01T00:00:00Z"}, headers=auth)
    unknown = httpx.get(search, params={"operatorMode": "2", "isArchived": "x"}, headers=auth)
    bad_time = httpx.get(search, params={"modifiedSince": "yesterday"}, headers=auth)

    assert set(every) == {"items", "page", "pageSize", "totalCount", "totalPages"}
    assert [c["name"] for c in every["items"]] == [
        "Spring 2026 launch",
        "Summer 2026 teaser",
        "Winter sale 2025",
    ]
    assert set(every["items"][0]) >= {
        "id",
        "name",
        "status",
        "startDate",
        "endDate",
        "ownerId",
        "modifiedAt",
    }
    assert [c["id"] for c in active["items"]] == [1]
    assert [c["id"] for c in recent.json()["items"]] == [1, 2]
    assert unknown.status_code == 200 and unknown.json()["totalCount"] == 3
    assert (bad_time.status_code, bad_time.json()["message"]) == (
        400,
        "modifiedSince must be a date-time like 2026-10-01T08:00:00Z",
    )
    assert httpx.options(search).headers["allow"] == "GET,HEAD,OPTIONS"
    assert httpx.options(f"{url}/v1/task/100").headers["allow"] == "GET,HEAD,PATCH,OPTIONS"
    assert httpx.options(f"{url}/oauth/token").headers["allow"] == "POST,OPTIONS"


def test_a_workflow_that_ignores_modified_since() -> None:
    app = create_lytho_workflow_app("id", "secret", ignores_modified_since=True)
    with serve_in_thread(app) as server:
        answer = httpx.get(
            f"{server.url}/v1/campaign/search",
            params={"modifiedSince": "2026-01-01T00:00:00Z"},
            headers=workflow_token(server.url),
        )
    assert [c["id"] for c in answer.json()["items"]] == [1, 2, 3]


def test_another_workflow_dialect(tmp_path: Path) -> None:
    path = tmp_path / "workflow.yaml"
    path.write_text(WF_OTHER, encoding="utf-8")
    app = create_lytho_workflow_app("id", "secret", dialect=LythoDialect.from_file(path))
    with serve_in_thread(app) as server:
        url = server.url
        basic = httpx.post(
            f"{url}/oauth/token", data={"grant_type": "client_credentials"}, auth=("id", "secret")
        )
        auth = workflow_token(url, body=True)
        httpx.patch(f"{url}/_sandbox/campaign/2", json={"status": "active"}).raise_for_status()
        find = f"{url}/v1/campaigns/find"
        first = httpx.get(find, params={"limit": 2}, headers=auth).json()
        second = httpx.get(find, params={"offsetPage": 1, "limit": 2}, headers=auth).json()
        since = {"updatedAfter": "2026-11-01T00:00:00Z"}
        changed = httpx.get(find, params=since, headers=auth).json()
        ignored = httpx.get(find, params={"modifiedSince": "2026-11-01T00:00:00Z"}, headers=auth)
        size = httpx.get(find, params={"limit": 10}, headers=auth)
        defaults = [
            httpx.get(f"{url}/v1/campaign/search", headers=auth).status_code,
            httpx.get(f"{url}/v1/campaigns/search", headers=auth).status_code,
            httpx.get(f"{url}/v1/campaign/find", headers=auth).status_code,
        ]

    assert basic.status_code == 401
    assert [c["id"] for c in first] == [1, 2] and [c["id"] for c in second] == [3]
    assert "updatedAt" in first[0] and "modifiedAt" not in first[0]
    assert [c["id"] for c in changed] == [2]
    assert len(ignored.json()) == 2  # an unknown parameter filters nothing
    assert (size.status_code, size.json()["message"]) == (400, "limit must be one of 2, 4")
    assert defaults == [404, 404, 404]


def test_a_wrong_method_is_a_405_that_says_which_methods_the_path_has():
    with serve_in_thread(create_lytho_app("k")) as server:
        response = httpx.patch(
            f"{server.url}/v1/assets/1/tags", headers={"x-api-key": "k"}, json={}
        )
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) >= {"POST", "DELETE"}
    assert response.json()["status"] == 405
