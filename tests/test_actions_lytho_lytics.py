"""Lytho and Lytics actions end to end: webhook → rule → worker → sandboxes over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.sandbox.lytho import create_lytho_app
from bridge.sandbox.lytics import create_lytics_app
from bridge.sandbox.server import ThreadedServer
from tests.helpers import Bridge, running_bridge, wait_for

RULE = """
id: proof-approved-sync
on: lytho.proof.status_changed
when:
  - {path: data.status, eq: approved}
actions:
  - id: tag
    uses: lytho.tag_asset
    with: {asset_id: "{{ data.asset.id }}", tags: [approved, "{{ data.campaign }}"]}
  - id: meta
    uses: lytho.set_metadata
    with: {asset_id: "{{ data.asset.id }}", metadata: {approved_by: "{{ data.by }}"}}
  - uses: lytho.add_to_collection
    with: {collection_id: 502, asset_id: "{{ data.asset.id }}"}
  - id: untag
    uses: lytho.untag_asset
    with: {asset_id: "{{ data.asset.id }}", tags: [draft, no-such-tag]}
  - uses: lytics.collect
    with:
      stream: lytho_workflow
      data: {event: proof_approved, asset_id: "{{ data.asset.id }}", tags: "{{ steps.tag.tags }}"}
  - uses: lytics.trigger_work
    with: {workflow_id: sync-approved, config: {asset: "{{ data.asset.id }}"}}
"""

EVENT = {
    "id": "sync-1",
    "type": "lytho.proof.status_changed",
    "data": {"status": "approved", "asset": {"id": 1003}, "campaign": "summer-2027", "by": "Ana"},
}


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    lytho = ThreadedServer(create_lytho_app("lytho-test-key", rate_limit_per_minute=None))
    lytics = ThreadedServer(create_lytics_app("lytics-test-token"))
    lytho.start()
    lytics.start()
    env = {
        "LYTHO_API_URL": f"{lytho.url}/v1/",
        "LYTHO_API_KEY": "lytho-test-key",
        "LYTICS_API_URL": lytics.url,
        "LYTICS_API_TOKEN": "lytics-test-token",
        # Lytho's documented 20/minute, spaced, would make this test take half a minute;
        # the limiter itself is tested in tests/clients.
        "BRIDGE_RATE_LIMIT_LYTHO": "1000/1s",
    }
    try:
        with running_bridge(redis_url, key_prefix, tmp_path, **env) as b:
            b.lytho_state = lytho  # type: ignore[attr-defined]
            b.lytics_state = lytics  # type: ignore[attr-defined]
            b.start_web()
            yield b
    finally:
        lytho.stop()
        lytics.stop()


def sandbox(server: Any) -> Any:
    return server._server.config.app.state.sandbox


def test_every_lytho_and_lytics_action_from_one_rule(bridge: Bridge) -> None:
    bridge.write_rule("sync.yaml", RULE)
    bridge.start_worker()
    assert bridge.post(EVENT).status_code == 202
    run = wait_for(lambda: bridge.trace_has("sync-1", "run"), timeout=30, what="the run")
    assert run["status"] == "succeeded", bridge.trace("sync-1")

    lytho = sandbox(bridge.lytho_state)  # type: ignore[attr-defined]
    asset = lytho.assets["1003"]
    names = sorted(t["name"] for t in asset["tags"])
    # "draft" was removed, "approved" added, "summer-2027" created on the way.
    assert names == ["approved", "social", "summer-2027"]
    assert any(t["name"] == "summer-2027" for t in lytho.tags.values())
    assert {"name": "approved_by", "value": "Ana"} in asset["metadata"]
    assert {"id": 1003} in lytho.collections["502"]["assets"]
    # The whole-object writes kept the fields the rule did not touch.
    assert asset["fileName"] == "spring-social-story.mp4"
    assert asset["description"] == "Spring story video, uploaded for the demo tenant."

    lytics = sandbox(bridge.lytics_state)  # type: ignore[attr-defined]
    assert lytics.collected["lytho_workflow"] == [
        {"event": "proof_approved", "asset_id": 1003, "tags": ["approved", "summer-2027"]}
    ]
    [work] = lytics.work.values()
    assert work["workflow_id"] == "sync-approved"
    assert work["config"] == {"asset": 1003}
    untag = bridge.trace_has("sync-1", "step", step="untag", status="succeeded")
    assert untag is not None
    assert untag["result"] == {"asset_id": 1003, "removed": ["draft"], "unknown": ["no-such-tag"]}


def test_a_missing_tag_is_refused_when_creating_is_off(bridge: Bridge) -> None:
    bridge.write_rule(
        "strict.yaml",
        """
id: strict-tags
on: lytho.proof.status_changed
actions:
  - uses: lytho.tag_asset
    with: {asset_id: 1001, tags: [brand-new-tag], create_missing: false}
""",
    )
    bridge.start_worker()
    assert bridge.post(EVENT | {"id": "sync-2"}).status_code == 202
    [letter] = wait_for(bridge.dead_letters, what="the refusal")
    assert letter["error"] == (
        "lytho.tag_asset: tag 'brand-new-tag' does not exist in Lytho; create it there, or set "
        "create_missing: true"
    )
    lytho = sandbox(bridge.lytho_state)  # type: ignore[attr-defined]
    assert not any(t["name"] == "brand-new-tag" for t in lytho.tags.values())


def test_a_wrong_lytics_token_is_a_dead_letter_with_a_hint(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    lytics = ThreadedServer(create_lytics_app("right-token"))
    lytics.start()
    env = {"LYTICS_API_URL": lytics.url, "LYTICS_API_TOKEN": "wrong-token-9f8e"}
    try:
        with running_bridge(redis_url, key_prefix, tmp_path, **env) as bridge:
            bridge.write_rule(
                "c.yaml",
                """
id: collect
on: shop.order.paid
actions:
  - uses: lytics.collect
    with: {stream: orders, data: {id: "{{ data.id }}"}}
""",
            )
            bridge.start_web()
            bridge.start_worker()
            body = {"id": "o-9", "type": "shop.order.paid", "data": {"id": 9}}
            assert bridge.post(body).status_code == 202
            [letter] = wait_for(bridge.dead_letters, what="the 401")
            assert letter["error"] == (
                "POST /api/collect?stream=orders → 401 Unauthorized; check LYTICS_API_TOKEN"
            )
            # The run's end (with the error) is traced after the dead letter: check it too.
            wait_for(lambda: bridge.trace_has("o-9", "run"), what="the run's end")
            assert "wrong-token-9f8e" not in bridge.worker_logs() + str(bridge.trace("o-9"))
    finally:
        lytics.stop()
