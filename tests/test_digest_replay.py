"""`bridge replay dg_…`: a digest run replayed runs its rule again with the same members
(a digest's event matches no rule, so matching it again would do nothing). Real web app,
Redis, worker and Slack sandbox over loopback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.cli.main import main
from tests.helpers import Bridge, running_bridge, wait_for

RULE = """
id: failed-orders-digest
on: shop.order.failed
digest: {key: "{{ data.shop }}", window: 1h, max: 50}
actions:
  - uses: slack.post
    with:
      channel: "#ops"
      text: >-
        {{ digest.count }} orders failed in {{ digest.key }}:
        {{ digest.events | map(attribute='data.n') | join(',') }}
"""


@pytest.fixture
def bridge(
    redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path) as b:
        b.write_rule("digest.yaml", RULE)
        b.start_slack()
        b.start_web()
        for name, value in b.env.items():
            monkeypatch.setenv(name, value)
        yield b


def test_replaying_a_digest_runs_its_rule_again_with_the_same_members(
    bridge: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    bridge.start_worker({"BRIDGE_WORKER_MAX_JOBS": "1"})
    orders = [
        {"id": f"o-{n}", "type": "shop.order.failed", "data": {"n": n, "shop": "eu"}}
        for n in (1, 2)
    ]
    assert bridge.post(orders, source="shop").status_code == 202
    entry = wait_for(lambda: bridge.trace_has("o-2", "evaluated"), what="the second match")
    assert entry is not None
    digest = entry["digests"]["failed-orders-digest"]
    # The window's time is up: its close job becomes due now (the queue's clock).
    job_id = f"{bridge.settings.key_prefix}digest:close:{digest}"
    assert bridge.redis.zadd(bridge.settings.queue_name, {job_id: 0}, xx=True, ch=True) == 1
    wait_for(lambda: bridge.trace_has(digest, "run", status="succeeded"), what="the digest run")
    # A later match opens the next window; the replay keeps the members of this one.
    later = {"id": "o-3", "type": "shop.order.failed", "data": {"n": 3, "shop": "eu"}}
    assert bridge.post(later, source="shop").status_code == 202
    wait_for(lambda: bridge.trace_has("o-3", "evaluated"), what="the third match")

    assert main(["replay", digest]) == 0
    out = capsys.readouterr().out
    found = re.fullmatch(
        rf"event {digest} queued again as run (replay-\d+); see: bridge trace {digest}\n", out
    )
    assert found is not None, out
    run = wait_for(
        lambda: bridge.trace_has(digest, "run", run=found.group(1)), what="the replayed run"
    )
    assert run is not None and run["status"] == "succeeded"
    assert [m["text"] for m in bridge.slack.received("#ops")] == [
        "2 orders failed in eu: 1,2",
        "2 orders failed in eu: 1,2",
    ]
