"""Issue 14's proof, end to end: a Lytho DAM that speaks another dialect (other paths, pages
from 1 under another key, ids elsewhere, other field names, Bearer auth) works with the
bridge through an override file alone — poll, tag, untag, metadata, collection, upload —
and without the file the bridge fails saying what to set, never silently.

Real parts: the sandbox over loopback, settings from the environment, Redis, the web
process and `bridge worker` (with the pollers' cron job) as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.sandbox.lytho import create_lytho_app
from bridge.sandbox.lytho_dialect import LythoDialect
from bridge.sandbox.server import ThreadedServer
from tests.helpers import Bridge, running_bridge, wait_for
from tests.pollers import polling_worker
from tests.pollers.support import make_context, poll, poller

ROOT = Path(__file__).resolve().parents[1]
KEY = "lytho-e2e-key-s3cr3t"

# One file, read by the sandbox (as the API it plays) and by the bridge (as its profile).
DIALECT = """
dam:
  auth: {header: Authorization, scheme: Bearer}
  pages:
    page_param: pageIndex
    size_param: limit
    first_page: 1
    max_size: 20
    items: results
    total: count
    total_pages: ""
    last: ""
  paths:
    assets: media
    asset: "media/{asset_id}"
    tags: keywords
    tag: "keywords/{tag_id}"
    collections: folders
    collection: "folders/{collection_id}"
  operations:
    update_asset: {path: "media/{asset_id}"}
    add_tags: {method: PUT, path: "media/{asset_id}/keywords", ids: {in: query, name: keywordId}}
    remove_tags: {path: "media/{asset_id}/keywords", ids: {in: body, name: keywordIds}}
    get_metadata: {path: "media/{asset_id}/properties"}
    add_metadata: {path: "media/{asset_id}/properties"}
    update_metadata: {path: "media/{asset_id}/properties"}
    remove_metadata: {path: "media/{asset_id}/properties", ids: {in: query, name: property}}
    create_tag: {path: keywords}
    add_to_collection: {path: "folders/{collection_id}/media", ids: {in: body, name: ids}}
    remove_from_collection: {path: "folders/{collection_id}/media", ids: {in: query, name: id}}
    get_upload_link: {path: media/uploads}
    finalize_upload: {path: media/uploads/complete}
  upload: {link_url: href, link_id: ticket, method: PUT}
  fields: {asset_tags: keywords, asset_metadata: properties, asset_version: rev,
           asset_modified: updated}
"""

RULES = """
rules:
  - id: new-asset
    on: lytho.asset.created
    actions:
      - id: tag
        uses: lytho.tag_asset
        with: {asset_id: "{{ data.id }}", tags: [approved, reviewed-2027]}
      - id: untag
        uses: lytho.untag_asset
        with: {asset_id: "{{ data.id }}", tags: [draft]}
      - id: meta
        uses: lytho.set_metadata
        with: {asset_id: "{{ data.id }}", metadata: {source: "{{ data.fileName }}"}}
      - uses: lytho.add_to_collection
        with: {collection_id: 502, asset_id: "{{ data.id }}"}
  - id: file-ready
    on: demo.file.ready
    actions:
      - id: upload
        uses: lytho.upload_asset
        with:
          content: "{{ data.text }}"
          file_name: "{{ data.name }}"
          collection_id: 501
"""


@pytest.fixture
def dialect_file(tmp_path: Path) -> Path:
    path = tmp_path / "lytho-profile.yaml"
    path.write_text(DIALECT, encoding="utf-8")
    return path


@pytest.fixture
def dam(dialect_file: Path) -> Iterator[ThreadedServer]:
    app = create_lytho_app(
        KEY,
        rate_limit_per_minute=None,
        rate_limit_per_day=None,
        dialect=LythoDialect.from_file(dialect_file),
    )
    server = ThreadedServer(app)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def bridge_env(dam: ThreadedServer, **more: str) -> dict[str, str]:
    return {
        "LYTHO_API_URL": f"{dam.url}/v1/",
        "LYTHO_API_KEY": KEY,
        "BRIDGE_POLL_INTERVAL": "5",
        # Lytho's 20 a minute would make this test take minutes; the limiter has its own tests.
        "BRIDGE_RATE_LIMIT_LYTHO": "1000/1s",
        # The sandbox's upload link is on loopback, which the guarded client refuses.
        "BRIDGE_HTTP_ALLOW": "127.0.0.1",
        **more,
    }


def start_polling_worker(b: Bridge) -> None:
    """`bridge worker` with the pollers' cron job (tests/pollers/polling_worker.py)."""
    env = {**os.environ, **b.env, "PYTHONPATH": str(ROOT)}
    with (b.tmp / f"worker-{len(b.workers)}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(Path(polling_worker.__file__))],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    b.workers.append(process)


def state(dam: ThreadedServer) -> Any:
    return dam._server.config.app.state.sandbox


def runs(b: Bridge, rule: str) -> list[dict[str, Any]]:
    """The `run` trace entries of `rule`, over every stored event."""
    found = []
    for key in b.redis.scan_iter(match=f"{b.settings.key_prefix}trace:*"):
        for raw in b.redis.lrange(key, 0, -1):
            entry = json.loads(raw)
            if entry["kind"] == "run" and entry.get("rule") == rule:
                found.append(entry)
    return found


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_an_override_file_makes_the_bridge_work_against_another_dialect(
    dam: ThreadedServer, dialect_file: Path, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    env = bridge_env(dam, BRIDGE_LYTHO_PROFILE=str(dialect_file))
    with running_bridge(redis_url, key_prefix, tmp_path, **env) as b:
        b.write_rule("lytho.yaml", RULES)
        # The first pass seeds the snapshot silently; done here, so the worker's first tick
        # already sees the new asset.
        ctx = await make_context(redis_url, key_prefix, env)
        try:
            assert (await poll(poller(ctx, "lytho"))).done
        finally:
            await ctx.close()
        draft = next(t for t in state(dam).tags.values() if t["name"] == "draft")
        created = httpx.post(
            f"{dam.url}/_sandbox/assets",
            json={
                "fileName": "autumn.jpg",
                "name": "Autumn",
                "keywords": [{"id": draft["id"], "name": "draft"}],
            },
            timeout=5,
        ).json()
        asset_id = str(created["id"])
        start_polling_worker(b)
        b.start_web()

        [run] = wait_for(lambda: runs(b, "new-asset"), timeout=60, what="the new-asset run")
        assert run["status"] == "succeeded", b.trace(run.get("event", ""))
        assert (
            b.post(
                {"id": "file-1", "type": "demo.file.ready", "data": {"text": "hi", "name": "a.txt"}}
            ).status_code
            == 202
        )
        upload = wait_for(lambda: b.trace_has("file-1", "run"), timeout=30, what="the upload")
        assert upload["status"] == "succeeded", b.trace("file-1")
        step = b.trace_has("file-1", "step", step="upload", status="succeeded")
        assert step is not None

        sandbox = state(dam)
        asset = sandbox.assets[asset_id]
        assert sorted(t["name"] for t in asset["tags"]) == ["approved", "reviewed-2027"]
        assert {"name": "source", "value": "autumn.jpg"} in asset["metadata"]
        assert {"id": created["id"]} in sandbox.collections["502"]["assets"]
        uploaded = sandbox.assets[str(step["result"]["asset_id"])]
        assert (uploaded["fileName"], uploaded["fileSize"]) == ("a.txt", 2)
        assert {"id": uploaded["id"]} in sandbox.collections["501"]["assets"]
        # Every request the bridge sent was one the dialect knows: nothing refused.
        refused = [r for r in sandbox.core.requests if r["status"] >= 400]
        assert refused == []
        paths = {r["path"] for r in sandbox.core.requests}
        assert {"/v1/media", f"/v1/media/{asset_id}/keywords", "/v1/keywords"} <= paths
        assert "/v1/assets" not in paths


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_without_the_override_file_the_bridge_fails_saying_what_to_set(
    dam: ThreadedServer, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    with running_bridge(redis_url, key_prefix, tmp_path, **bridge_env(dam)) as b:
        b.write_rule("lytho.yaml", RULES)
        before = dict(state(dam).assets)
        start_polling_worker(b)
        b.start_web()
        status_key = f"{key_prefix}poll:lytho:status"

        def poll_error() -> str:
            raw = b.redis.hget(status_key, "last_error")
            return raw.decode() if raw else ""

        error = wait_for(poll_error, timeout=60, what="the poller's error")
        assert (
            b.post(
                {"id": "file-2", "type": "demo.file.ready", "data": {"text": "hi", "name": "b.txt"}}
            ).status_code
            == 202
        )
        [letter] = wait_for(b.dead_letters, timeout=30, what="the upload's dead letter")

    assert error == (
        "GET /v1/assets?page=0&size=50 → 404 Not Found; no such resource; check the id or the "
        "path; if the path or method is wrong for your tenant, set dam.paths.assets in "
        "BRIDGE_LYTHO_PROFILE"
    )
    assert letter["error"].startswith(
        "lytho.upload_asset: getUploadLink failed: POST /v1/assets/getUploadLink → 404 Not Found"
    )
    assert letter["error"].endswith("set dam.operations.get_upload_link in BRIDGE_LYTHO_PROFILE")
    assert dict(state(dam).assets) == before  # nothing written, nothing lost
