"""Redis stopped for 10 s under a steady stream of webhooks: acknowledged means processed once."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis

from bridge.cli.redis_server import EmbeddedRedis
from tests.helpers import running_bridge, wait_for
from tests.reliability.conftest import Figures

RULE = """
id: order-to-slack
on: shop.order.paid
actions:
  - id: notify
    uses: slack.post
    with: {channel: "#sales", text: "order {{ event.id }}"}
"""

RATE = 40  # webhooks a second
BEFORE, OUTAGE, AFTER = 2.0, 10.0, 2.0  # seconds of the stream around the outage
MAX_WEBHOOKS = int(RATE * (BEFORE + OUTAGE + AFTER)) + 50


def restart_with_data(server: EmbeddedRedis) -> None:
    """Stop Redis as a persistent one stops (its data saved to disk), to be started again.

    The embedded server keeps no data across a plain stop; a production Redis (an add-on
    with persistence, or a network outage) does. Without this, events acknowledged just
    before the outage would be lost by the test's Redis, not by the bridge.
    """
    client = redis.Redis.from_url(server.url)
    try:
        client.shutdown(save=True)
    except redis.ConnectionError:
        pass  # the server closes the connection as it exits
    finally:
        client.close()
    server.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_redis_outage_loses_nothing_acknowledged(
    own_redis: EmbeddedRedis, key_prefix: str, tmp_path: Path, figures: Figures
) -> None:
    # The stream is about Redis, not Slack's pace: lift the per-channel limit of one
    # message a second, or 40 orders a second to #sales would queue for minutes.
    unpaced = {"BRIDGE_RATE_LIMIT_SLACK": "100000/1s"}
    with running_bridge(own_redis.url, key_prefix, tmp_path, **unpaced) as bridge:
        bridge.write_rule("orders.yaml", RULE)
        bridge.start_slack()
        bridge.start_web()
        worker = bridge.start_worker()
        wait_for(
            lambda: bridge.redis.exists(f"{key_prefix}queue:health-check"),
            what="the worker's first heartbeat",
        )

        answers: dict[str, int] = {}
        began = time.monotonic()
        stopped_at = restarted_at = 0.0
        for n in range(MAX_WEBHOOKS):
            now = time.monotonic() - began
            if now >= BEFORE + OUTAGE + AFTER:
                break
            if not stopped_at and now >= BEFORE:
                restart_with_data(own_redis)
                stopped_at = time.monotonic()
            if stopped_at and not restarted_at and time.monotonic() - stopped_at >= OUTAGE:
                own_redis.start()
                restarted_at = time.monotonic()
            event_id = f"w-{n}"
            answers[event_id] = _deliver(bridge, event_id)
            pause = began + (n + 1) / RATE - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # ok-sleep: the sender's steady pace, not a wait for work
        assert stopped_at and restarted_at, "the stream ended before the outage was over"
        outage = restarted_at - stopped_at

        statuses = Counter(answers.values())
        acknowledged = [i for i, status in answers.items() if 200 <= status < 300]
        refused = [i for i, status in answers.items() if status == 503]
        # Every webhook was either stored (2xx) or refused with 503; nothing else.
        assert set(statuses) <= {202, 503}, statuses

        # The sender retries what was refused, as webhook senders do on 503.
        redelivered = Counter(
            wait_for(
                lambda i=event_id: (status := _deliver(bridge, i)) in (200, 202) and status,  # type: ignore[misc]
                timeout=10,
                what=f"{event_id} to be stored on redelivery",
            )
            for event_id in refused
        )

        def processed() -> Counter[str]:
            return Counter(m["text"].removeprefix("order ") for m in bridge.slack.received())

        wait_for(
            lambda: len(processed()) == len(answers),
            timeout=60,
            what="every stored event to be processed by the same worker",
        )
        counts = processed()
        lost = [i for i in acknowledged if counts[i] == 0]
        repeated = {i: n for i, n in counts.items() if n > 1}
        figures(
            webhooks=len(answers),
            acknowledged_2xx=len(acknowledged),
            refused_503=len(refused),
            redelivered=dict(redelivered),
            outage_seconds=round(outage, 1),
            processed_once=sum(1 for n in counts.values() if n == 1),
            acknowledged_lost=len(lost),
            processed_twice=len(repeated),
            worker_processes=len(bridge.workers),
        )
        assert refused, "no webhook arrived during the outage"
        assert lost == []
        assert repeated == {}
        assert set(counts) == set(answers)
        assert worker.poll() is None, "the worker did not survive the outage"
        assert bridge.workers == [worker]
        assert "worker lost Redis" in bridge.worker_logs()


def _deliver(bridge, event_id: str) -> int:  # type: ignore[no-untyped-def]
    body = {"id": event_id, "type": "shop.order.paid", "data": {"id": event_id}}
    try:
        return int(bridge.post(body, source="shop", msg_id=f"msg_{event_id}").status_code)
    except httpx.TimeoutException:
        return 0  # no answer at all would break the contract; the assertion names it
