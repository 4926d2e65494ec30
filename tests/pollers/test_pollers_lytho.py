"""The Lytho DAM poller against the sandbox over HTTP: seeding, diffs, tags, deletes."""

from __future__ import annotations

import pytest

from bridge.context import Context
from bridge.ingress.pollers import lytho
from tests.pollers.support import Sandboxes, poll, poller, stored_events


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
    assert dict(events["lytho.asset.updated"].changes) == {
        "description": {
            "from": "Spring story video, uploaded for the demo tenant.",
            "to": "Final cut",
        }
    }


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
