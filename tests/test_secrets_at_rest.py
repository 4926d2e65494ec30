"""No configured secret is stored in clear by a rule run: not in the dead letters (error and
event, keys included), the step results, the error texts or the trace, even when an
upstream error body and the event's data carry every one of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.helpers import SECRET, Bridge, running_bridge, wait_for

SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-at-rest-slack-5b0e",
    "LYTICS_API_TOKEN": "lytics-at-rest-token-77c1",
    "BRIDGE_ADMIN_TOKEN": "admin-at-rest-token-9d2f",
    "LYTHO_API_KEY": "lytho-at-rest-key-31aa",
    "LYTHO_CLIENT_SECRET": "lytho-at-rest-client-secret-c4e8",
    "BRIDGE_WEBHOOK_SECRET_SHOP": "whsec_c2hvcC1zb3VyY2Utc2VjcmV0LWF0LXJlc3Q=",
}
EVERY_SECRET = [*SECRETS.values(), SECRET]

RULE = """
id: leaky
on: shop.order.paid
actions:
  - id: first
    uses: slack.post
    continue_on_error: true
    with: {channel: "#sales", text: "order {{ data.order }}"}
  - id: second
    uses: slack.post
    with: {channel: "#sales", text: "first said {{ steps.first.error }}"}
"""


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    env = {**SECRETS, "LYTHO_CLIENT_ID": "lytho-client-id", "LYTICS_API_URL": "http://127.0.0.1:9"}
    with running_bridge(redis_url, key_prefix, tmp_path, **env) as b:
        b.slack.tokens = (SECRETS["SLACK_BOT_TOKEN"],)
        b.write_rule("leaky.yaml", RULE)
        b.start_slack()
        b.start_web()
        b.start_worker()
        yield b


def stored_values(client: redis.Redis, prefix: str) -> dict[str, str]:
    """Every value under the bridge's prefix, as text, by key (the event records and the
    queue's jobs, which hold the event as it was received, left out)."""
    found: dict[str, str] = {}
    for raw_key in client.scan_iter(match=f"{prefix}*", count=500):
        key = raw_key.decode()
        if key.startswith(f"{prefix}event:") or key == f"{prefix}queue":
            continue
        kind = client.type(raw_key).decode()
        if kind == "string":
            value: object = client.get(raw_key)
        elif kind == "hash":
            value = client.hgetall(raw_key)
        elif kind == "list":
            value = client.lrange(raw_key, 0, -1)
        elif kind == "zset":
            value = client.zrange(raw_key, 0, -1, withscores=True)
        elif kind == "set":
            value = client.smembers(raw_key)
        else:
            value = kind
        found[key] = repr(value)
    return found


def test_no_secret_is_stored_in_clear(bridge: Bridge, key_prefix: str) -> None:
    echo = "boom Bearer " + " ".join(EVERY_SECRET)
    for _ in range(2):
        httpx.post(f"{bridge.slack_url}/_sandbox/scenario", json={"kind": "error", "error": echo})
    data = {
        "order": 9,
        "note": f"tokens {EVERY_SECRET}",
        "headers": {secret: "as a key" for secret in EVERY_SECRET},
        "nested": [{"deep": {"value": secret}} for secret in EVERY_SECRET],
    }
    assert bridge.post({"id": "leak-1", "type": "shop.order.paid", "data": data}).status_code == 202
    [letter] = wait_for(bridge.dead_letters, what="the dead letter")
    wait_for(lambda: bridge.trace_has("leak-1", "run"), what="the run's end in the trace")
    assert letter["step"] == "second"
    assert letter["error"].startswith("Slack chat.postMessage → boom Bearer **********")
    assert letter["event"]["data"]["order"] == 9
    assert "**********" in letter["event"]["data"]["headers"]
    steps = bridge.redis.hgetall(f"{key_prefix}steps:leak-1:leaky")
    first = json.loads(steps[b"first"])
    assert first["failed"] is True and "**********" in first["error"]
    stored = stored_values(bridge.redis, key_prefix)
    assert f"{key_prefix}dlq" in stored and f"{key_prefix}trace:leak-1" in stored
    for key, text in stored.items():
        for secret in EVERY_SECRET:
            assert secret not in text, f"{key} holds a secret in clear"
    # Nor does the message the second step would have sent (the first step's error).
    step = bridge.trace_has("leak-1", "step", step="second", status="failed")
    assert step is not None
    assert all(secret not in json.dumps(step) for secret in EVERY_SECRET)
