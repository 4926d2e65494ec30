"""The Lytho DAM poller against the sandbox over HTTP: seeding, diffs, tags, deletes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.actions import action_schemas
from bridge.ingress.pollers import lytho
from bridge.jobs.schedule import poller_status
from bridge.operate.context import Context
from bridge.rules import load_rules
from bridge.sandbox.lytho import create_lytho_app
from bridge.sandbox.lytho_dialect import LythoDialect
from bridge.sandbox.server import serve_in_thread
from bridge.templates.environment import Templates
from tests.pollers.support import Sandboxes, make_context, poll, poller, stored_events


async def test_the_first_poll_seeds_silently(context: Context) -> None:
    dam = poller(context, "lytho")
    result = await poll(dam)
    assert result.done
    assert await stored_events(context) == []
    snapshot = await context.redis.hlen(f"{context.settings.key_prefix}poll:lytho:assets")
    assert snapshot == 12
    # Again, with nothing changed: still nothing.
    assert (await poll(dam)).done
    assert await stored_events(context) == []


async def test_adding_a_tag_is_exactly_one_tagged_event(
    context: Context, sandboxes: Sandboxes
) -> None:
    dam = poller(context, "lytho")
    await poll(dam)
    sandboxes.set_tags(1002, "social", "hero")  # it had [social]
    await poll(dam)
    await poll(dam)  # the same state seen again emits nothing more
    [event] = await stored_events(context)
    assert event.type == "lytho.asset.tagged"
    assert event.source == "lytho"
    assert event.subject == "1002"
    assert event.data["added_tags"] == ["hero"]
    assert event.data["name"] == "Spring social square"
    assert dict(event.changes) == {"tags": {"from": ["social"], "to": ["hero", "social"]}}


async def test_untag_and_edit_are_an_untagged_and_an_updated_event(
    context: Context, sandboxes: Sandboxes
) -> None:
    dam = poller(context, "lytho")
    await poll(dam)
    sandboxes.set_tags(1003, "social")  # it had [social, draft]
    sandboxes.edit_asset(1003, description="Final cut")
    await poll(dam)
    events = {e.type: e for e in await stored_events(context)}
    assert set(events) == {"lytho.asset.untagged", "lytho.asset.updated"}
    assert events["lytho.asset.untagged"].data["removed_tags"] == ["draft"]
    updated = events["lytho.asset.updated"]
    assert updated.changes["description"] == {
        "from": "Spring story video, uploaded for the demo tenant.",
        "to": "Final cut",
    }
    # Every differing field but the tags, which have their event: the version moved twice.
    assert sorted(updated.changes) == ["description", "modificationDate", "version"]
    assert updated.changes["version"] == {"from": 1, "to": 3}


async def test_a_new_asset_is_a_created_event(context: Context, sandboxes: Sandboxes) -> None:
    dam = poller(context, "lytho")
    await poll(dam)
    created = sandboxes.create_asset(fileName="autumn.jpg", name="Autumn teaser")
    await poll(dam)
    [event] = await stored_events(context)
    assert (event.type, event.subject) == ("lytho.asset.created", str(created["id"]))
    assert event.data["fileName"] == "autumn.jpg"


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    # Five assets a page: the sandbox's twelve make three pages, so pages can shift.
    monkeypatch.setattr(lytho.LythoAssetPoller, "page_size", 5)


@pytest.mark.usefixtures("small_pages")
async def test_a_page_shift_is_no_delete_and_a_404_is_exactly_one(
    context: Context, sandboxes: Sandboxes
) -> None:
    dam = poller(context, "lytho")
    assert (await poll(dam)).done  # seeds the three pages in one run
    # The next pass, one page per run, with a delete between its first and second page:
    # asset 1006 shifts from page 1 to page 0, so this pass never reads it.
    assert not (await poll(dam, slots=1)).done
    sandboxes.delete_asset(1002)
    assert not (await poll(dam, slots=1)).done
    assert not (await poll(dam, slots=1)).done  # the last page: 1006 was never read
    gone = await context.redis.smembers(f"{context.settings.key_prefix}poll:lytho:gone")
    assert {g.decode() for g in gone} == {"1006"}
    assert (await poll(dam, slots=1)).done  # its GET answers 200: moved, not deleted
    assert await stored_events(context) == []
    # 1002 was read before it went; the next pass misses it, and its GET answers 404.
    assert (await poll(dam)).done
    [event] = await stored_events(context)
    assert (event.type, event.subject) == ("lytho.asset.deleted", "1002")
    assert event.data["name"] == "Spring social square"
    assert event.data["tags"] == ["social"]
    requests = [(r["method"], r["path"], r["status"]) for r in sandboxes.requests("lytho")]
    assert ("GET", "/v1/assets/1006", 200) in requests
    assert ("GET", "/v1/assets/1002", 404) in requests
    # And the following pass reports nothing again.
    assert (await poll(dam)).done
    assert len(await stored_events(context)) == 1


@pytest.mark.usefixtures("small_pages")
async def test_a_pass_resumes_from_its_cursor(context: Context, sandboxes: Sandboxes) -> None:
    dam = poller(context, "lytho")
    await poll(dam)
    assert not (await poll(dam, slots=1)).done
    sandboxes.set_tags(1012, "hero")  # on the last page, not read yet in this pass
    assert not (await poll(dam, slots=1)).done
    assert (await poll(dam, slots=1)).done
    [event] = await stored_events(context)
    assert (event.type, event.subject) == ("lytho.asset.tagged", "1012")
    pages = [r["query"] for r in sandboxes.requests("lytho") if r["path"] == "/v1/assets"]
    assert pages[-3:] == ["page=0&size=5", "page=1&size=5", "page=2&size=5"]


def test_asset_events_carry_tag_names_and_metadata_values_for_rules() -> None:
    asset = {
        "id": 7,
        "fileName": "a.jpg",
        "version": 2,
        "modificationDate": "2026-11-25T10:00:00Z",
        "tags": [{"id": 3, "name": "spring-2026"}, {"id": 1, "name": "hero"}],
        "metadata": [{"name": "campaign", "value": "spring-2026"}],
    }
    old = lytho.compact({**asset, "version": 1, "tags": [{"id": 1, "name": "hero"}]})
    [tagged] = lytho.asset_events(asset, old)
    assert tagged.type == "lytho.asset.tagged"
    assert tagged.data["tag_names"] == ["hero", "spring-2026"]
    assert tagged.data["metadata_values"] == {"campaign": "spring-2026"}
    assert tagged.data["added_tags"] == ["spring-2026"]
    # The asset as Lytho gave it is still all there.
    assert tagged.data["tags"] == asset["tags"] and tagged.data["metadata"] == asset["metadata"]


# Changes outside any list of fields: Lytho's asset model is not fully documented.


def edit_quietly(sandboxes: Sandboxes, asset_id: int, **fields: Any) -> None:
    """Change fields without a new version, as Lytho does for a view count or a link."""
    url = f"{sandboxes.lytho}/_sandbox/assets/{asset_id}?touch=false"
    response = httpx.patch(url, json=fields, timeout=5)
    assert response.status_code == 200, response.text


async def test_a_status_field_no_list_names_is_an_updated_event(
    context: Context, sandboxes: Sandboxes
) -> None:
    sandboxes.edit_asset(1004, status="in_review")
    before = sandboxes.lytho_state()["assets"]["1004"]
    dam = poller(context, "lytho")
    await poll(dam)
    sandboxes.edit_asset(1004, status="approved")
    await poll(dam)
    await poll(dam)  # the same state seen again emits nothing more
    [event] = await stored_events(context)
    assert (event.type, event.subject) == ("lytho.asset.updated", "1004")
    # (The sandbox's modification date counts seconds: it moved only if a second passed.)
    assert {k: v for k, v in event.changes.items() if k != "modificationDate"} == {
        "status": {"from": "in_review", "to": "approved"},
        "version": {"from": before["version"], "to": before["version"] + 1},
    }
    assert event.data["status"] == "approved"


async def test_custom_metadata_and_nested_fields_list_each_differing_key(
    context: Context, sandboxes: Sandboxes, tmp_path: Path
) -> None:
    sandboxes.edit_asset(1001, customFields={"approval": "pending", "region": "EU"})
    dam = poller(context, "lytho")
    await poll(dam)
    metadata = [
        {"name": "status", "value": "approved"},
        {"name": "campaign", "value": "spring-2026"},
    ]
    sandboxes.edit_asset(
        1001, metadata=metadata, customFields={"region": "EU", "approval": "approved"}
    )
    await poll(dam)
    [event] = await stored_events(context)
    assert event.type == "lytho.asset.updated"
    assert sorted(set(event.changes) - {"modificationDate"}) == [
        "customFields",
        "customFields.approval",
        "metadata",
        "metadata.status",
        "version",
    ]
    # A map is listed whole and by each key that differs; its key order is no change.
    assert event.changes["metadata"] == {
        "from": {"campaign": "spring-2026"},
        "to": {"campaign": "spring-2026", "status": "approved"},
    }
    assert event.changes["metadata.status"] == {"from": None, "to": "approved"}
    assert event.changes["customFields.approval"] == {"from": "pending", "to": "approved"}
    assert event.data["metadata_values"] == {"status": "approved", "campaign": "spring-2026"}
    # What docs/events.md tells rule authors to write matches it.
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "approved.yaml").write_text(APPROVED_RULE)
    rules = load_rules(rules_dir, templates=Templates(), actions=action_schemas())
    assert [r.id for r in rules.matching(event, Templates())] == ["asset-approved"]


APPROVED_RULE = """
id: asset-approved
on: lytho.asset.updated
when:
  - {path: data.metadata.status, changed: {to: approved}}
  - {path: data.metadata_values.status, eq: approved}
actions:
  - uses: slack.post
    with: {channel: "#creative", text: "{{ data.name }} was approved"}
"""


async def test_a_version_only_change_is_an_updated_event_once(
    context: Context, sandboxes: Sandboxes
) -> None:
    dam = poller(context, "lytho")
    await poll(dam)
    sandboxes.edit_asset(1006)  # a new version with the same fields (say, a re-upload)
    await poll(dam)
    await poll(dam)
    [event] = await stored_events(context)
    assert (event.type, event.subject) == ("lytho.asset.updated", "1006")
    assert set(event.changes) - {"modificationDate"} == {"version"}
    assert event.changes["version"] == {"from": 1, "to": 2}


async def test_volatile_fields_are_no_event_but_a_link_to_another_file_is(
    context: Context, sandboxes: Sandboxes
) -> None:
    link = "https://cdn.example.test/t1/1002/square.png"
    sandboxes.edit_asset(
        1002,
        viewCount=10,
        downloadUrl=f"{link}?X-Amz-Expires=300&X-Amz-Signature=aa11",
        renditions=[{"size": "thumb", "url": f"{link}?w=64&sig=bb22"}],
    )
    dam = poller(context, "lytho")
    await poll(dam)
    # Viewed, and its links signed anew: the asset did not change.
    edit_quietly(
        sandboxes,
        1002,
        viewCount=11,
        lastViewedDate="2026-12-01T10:00:00Z",
        downloadUrl=f"{link}?X-Amz-Expires=300&X-Amz-Signature=cc33",
        renditions=[{"size": "thumb", "url": f"{link}?w=64&sig=dd44"}],
    )
    await poll(dam)
    assert await stored_events(context) == []
    # The same kind of field, now pointing at another file: a change, even without a version.
    other = "https://cdn.example.test/t1/1002/square-v2.png"
    edit_quietly(sandboxes, 1002, downloadUrl=f"{other}?X-Amz-Signature=ee55", viewCount=12)
    await poll(dam)
    [event] = await stored_events(context)
    assert (event.type, event.subject) == ("lytho.asset.updated", "1002")
    assert dict(event.changes) == {"downloadUrl": {"from": link, "to": other}}
    assert event.data["downloadUrl"] == f"{other}?X-Amz-Signature=ee55"


async def test_a_snapshot_of_the_first_format_reports_no_change_on_upgrade(
    context: Context, sandboxes: Sandboxes
) -> None:
    dam = poller(context, "lytho")
    await poll(dam)
    # Rewrite the snapshot as a version before this one kept it: a few fields only.
    key = f"{context.settings.key_prefix}poll:lytho:assets"
    for asset_id, asset in sandboxes.lytho_state()["assets"].items():
        entry = {name: asset.get(name) for name in lytho.COMPARED_V1}
        entry["metadata"] = lytho.metadata_values(asset["metadata"])
        entry.update(
            tags=lytho.tag_names(asset),
            id=asset["id"],
            version=asset["version"],
            modified=asset["modificationDate"],
        )
        if asset_id == "1008":
            entry["description"] = "An older description"
        await context.redis.hset(key, asset_id, json.dumps(entry))
    await poll(dam)
    # Fields the old entries did not keep are no change; the one real difference is.
    [event] = await stored_events(context)
    assert (event.type, event.subject) == ("lytho.asset.updated", "1008")
    assert list(event.changes) == ["description"]
    # The snapshot is of the current format now, and the next pass is silent.
    raw = await context.redis.hget(key, "1001")
    assert json.loads(raw)["v"] == lytho.FORMAT
    await poll(dam)
    assert len(await stored_events(context)) == 1


def test_a_string_that_only_looks_like_a_signed_link_is_kept_as_it_is() -> None:
    asset = {
        "id": 9,
        "version": 1,
        "source": "http://[::1?sig=1",  # no valid URL: compared as text, no crash
        "page": "https://example.test/a?lang=en",  # not signed: its query counts
        "file": "https://cdn.example.test/a.jpg?Signature=x#top",
    }
    fields = lytho.compact(asset)["asset"]
    assert fields["source"] == "http://[::1?sig=1"
    assert fields["page"] == "https://example.test/a?lang=en"
    assert fields["file"] == "https://cdn.example.test/a.jpg"


# The profile: pages, their shape and the asset's field names as BRIDGE_LYTHO_PROFILE says.

DIALECT = """
dam:
  pages: {page_param: p, size_param: n, first_page: 1, items: list, total: "", total_pages: "",
          last: ""}
  paths: {assets: library/items, asset: "library/items/{asset_id}"}
  fields: {asset_tags: keywords, asset_version: rev, asset_modified: changedAt}
"""


@pytest.fixture
def dialect_dam(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = tmp_path / "dialect.yaml"
    path.write_text(DIALECT, encoding="utf-8")
    app = create_lytho_app(
        rate_limit_per_minute=None, rate_limit_per_day=None, dialect=LythoDialect.from_file(path)
    )
    with serve_in_thread(app) as server:
        yield server.url, path


async def test_an_overridden_profile_polls_bare_list_pages_from_1_with_its_field_names(
    dialect_dam: tuple[str, Path], redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, profile = dialect_dam
    monkeypatch.setattr(lytho.LythoAssetPoller, "page_size", 5)
    env = {"LYTHO_API_URL": f"{url}/v1/", "LYTHO_API_KEY": "sandbox-lytho-key"}
    ctx = await make_context(redis_url, key_prefix, {**env, "BRIDGE_LYTHO_PROFILE": str(profile)})
    try:
        dam = poller(ctx, "lytho")
        assert (await poll(dam)).done
        tags = {
            t["name"]: t["id"] for t in httpx.get(f"{url}/_sandbox/state").json()["tags"].values()
        }
        body = {"keywords": [{"id": tags["social"], "name": "social"}, {"id": 1, "name": "hero"}]}
        httpx.patch(f"{url}/_sandbox/assets/1002", json=body).raise_for_status()
        assert (await poll(dam)).done
        [event] = await stored_events(ctx)
        status = await dam.status_extra()  # type: ignore[attr-defined]
    finally:
        await ctx.close()

    assert (event.type, event.subject, event.data["added_tags"]) == (
        "lytho.asset.tagged",
        "1002",
        ["hero"],
    )
    assert event.data["keywords"] == body["keywords"]
    # `rev` and `changedAt` moved with the tags: bookkeeping, so no `updated` event beside.
    assert event.time == event.data["changedAt"]
    assert dict(event.changes) == {"tags": {"from": ["social"], "to": ["hero", "social"]}}
    assert status == {"page_shape": "list", "notes": []}
    log = httpx.get(f"{url}/_sandbox/requests").json()["requests"]
    assert [r["query"] for r in log if r["path"] == "/v1/library/items"][:3] == [
        "p=1&n=5",
        "p=2&n=5",
        "p=3&n=5",
    ]


async def test_pages_of_another_shape_are_read_and_the_status_says_what_to_set(
    dialect_dam: tuple[str, Path], redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    url, _ = dialect_dam
    # The paths and pages of the dialect, but not its page shape: the profile still says
    # `content`.
    profile = tmp_path / "almost.yaml"
    profile.write_text(DIALECT.replace("items: list", "items: content"), encoding="utf-8")
    env = {"LYTHO_API_URL": f"{url}/v1/", "LYTHO_API_KEY": "sandbox-lytho-key"}
    ctx = await make_context(redis_url, key_prefix, {**env, "BRIDGE_LYTHO_PROFILE": str(profile)})
    try:
        dam = poller(ctx, "lytho")
        assert (await poll(dam)).done
        snapshot = await ctx.redis.hlen(f"{key_prefix}poll:lytho:assets")
        [status] = await poller_status(ctx)
    finally:
        await ctx.close()

    assert snapshot == 12
    assert status["page_shape"] == "list"
    assert status["notes"] == [
        "pages came as 'list', not 'content': set dam.pages.items: list in BRIDGE_LYTHO_PROFILE"
    ]
