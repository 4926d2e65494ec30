"""POST /hooks/{source}: the status contract, over real HTTP against a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.cli.redis_server import EmbeddedRedis
from tests.helpers import SECRET, Bridge, running_bridge, signed_headers, wait_for

EVENT = {"id": "evt-1", "type": "lytho.asset.updated", "data": {"status": "approved"}}


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path) as b:
        b.start_web()
        yield b


def assert_nothing_stored(bridge: Bridge) -> None:
    assert bridge.queued() == 0
    assert bridge.stored_events() == 0


def test_signed_webhook_is_stored_queued_and_acknowledged(bridge: Bridge) -> None:
    response = bridge.post(EVENT)
    assert response.status_code == 202
    assert response.json() == {"accepted": ["evt-1"], "duplicates": []}
    assert bridge.queued() == 1
    stored = json.loads(bridge.redis.get(f"{bridge.settings.key_prefix}event:evt-1"))
    assert stored["type"] == "lytho.asset.updated"
    assert stored["source"] == "demo"
    assert stored["data"] == {"status": "approved"}


def test_a_duplicate_id_answers_2xx_and_is_not_queued_again(bridge: Bridge) -> None:
    assert bridge.post(EVENT).status_code == 202
    again = bridge.post(EVENT)
    assert again.status_code == 200
    assert again.json() == {"accepted": [], "duplicates": ["evt-1"]}
    assert bridge.queued() == 1


def test_an_array_without_ids_takes_the_webhook_id_and_index(bridge: Bridge) -> None:
    body = [{"type": "shop.order.paid", "data": {"n": 1}}, {"type": "shop.order.paid"}]
    response = bridge.post(body, msg_id="msg_batch")
    assert response.status_code == 202
    assert response.json()["accepted"] == ["msg_batch:0", "msg_batch:1"]


def test_bad_signature_is_401_and_nothing_is_stored(bridge: Bridge) -> None:
    raw = json.dumps(EVENT).encode()
    headers = signed_headers(raw)
    response = bridge.post(raw.replace(b"approved", b"rejected"), headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "error": "bad_signature",
        "message": "webhook-signature does not match the body",
    }
    assert_nothing_stored(bridge)


def test_stale_timestamp_is_401(bridge: Bridge) -> None:
    raw = json.dumps(EVENT).encode()
    response = bridge.post(raw, headers=signed_headers(raw, stamp=int(time.time()) - 600))
    assert response.status_code == 401
    assert response.json()["message"].startswith("webhook-timestamp is 6")
    assert response.json()["message"].endswith("s off; at most 300 s allowed")
    assert_nothing_stored(bridge)


def test_missing_signature_is_401(bridge: Bridge) -> None:
    response = bridge.post(EVENT, headers={"content-type": "application/json"})
    assert response.status_code == 401
    assert response.json() == {
        "error": "bad_signature",
        "message": "missing header webhook-id, webhook-timestamp, webhook-signature",
    }
    assert_nothing_stored(bridge)


def test_malformed_json_is_400(bridge: Bridge) -> None:
    response = bridge.post(b'{"type": "x.y", ')
    assert response.status_code == 400
    assert response.json() == {
        "error": "bad_event",
        "message": "malformed JSON at line 1 column 17: Expecting property name enclosed in "
        "double quotes",
    }
    assert_nothing_stored(bridge)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"data": {}}', "'type' is required"),
        (b'[{"type": "a.b"}, 3]', "item 1: expected a JSON object, got a number"),
        (b'"hello"', "expected a JSON object or an array of them, got a string"),
        (b"[" * 100_000 + b"]" * 100_000, "the JSON is nested too deeply"),
        (b'{"type": "a.b", "n": ' + b"9" * 5000 + b"}", None),
        (b'{"type": "a.b", "n": NaN}', "the JSON cannot be accepted: NaN is not valid JSON"),
        (
            b'{"type": "bad type!"}',
            "'type' 'bad type!' is not a valid event type; expected "
            "dotted words such as lytho.asset.updated",
        ),
    ],
)
def test_bad_events_are_400_with_the_reason(
    bridge: Bridge, body: bytes, message: str | None
) -> None:
    response = bridge.post(body)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_event"
    if message is not None:
        assert response.json()["message"] == message
    else:
        assert "integer string conversion" in response.json()["message"]
    assert_nothing_stored(bridge)


def test_oversized_body_is_413_without_storing(bridge: Bridge) -> None:
    raw = json.dumps({"type": "a.b", "data": "x" * (1024 * 1024)}).encode()
    response = bridge.post(raw)
    assert response.status_code == 413
    assert response.json() == {
        "error": "body_too_large",
        "message": "the body is over the limit of 1048576 bytes",
    }
    assert_nothing_stored(bridge)


def test_oversized_chunked_body_is_413(bridge: Bridge) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"type": "a.b", "data": "'
        for _ in range(300):
            yield b"x" * 4096
        yield b'"}'

    headers = {"content-type": "application/json"}
    response = httpx.post(f"{bridge.web_url}/hooks/demo", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert_nothing_stored(bridge)


def test_wrong_content_type_is_415(bridge: Bridge) -> None:
    raw = b"type=a.b"
    headers = signed_headers(raw) | {"content-type": "application/x-www-form-urlencoded"}
    response = bridge.post(raw, headers=headers)
    assert response.status_code == 415
    assert response.json() == {
        "error": "unsupported_media_type",
        "message": "content type 'application/x-www-form-urlencoded' is not JSON; send "
        "application/json",
    }
    assert_nothing_stored(bridge)


def test_paths_and_methods_around_the_webhook_route(bridge: Bridge) -> None:
    base = f"{bridge.web_url}/hooks"
    assert httpx.get(f"{base}/demo", timeout=10).status_code == 405
    raw = json.dumps(EVENT).encode()
    nested = httpx.post(f"{base}/demo/extra", content=raw, headers=signed_headers(raw), timeout=10)
    assert nested.status_code == 404
    assert (
        httpx.post(f"{base}/", content=raw, headers=signed_headers(raw), timeout=10).status_code
        == 404
    )
    assert_nothing_stored(bridge)


def test_an_unexpected_error_is_a_json_500_and_stores_nothing(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.ingress import webhooks

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(webhooks, "to_events", broken)
    response = bridge.post(EVENT)
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal_error",
        "message": "the webhook could not be processed",
    }
    assert_nothing_stored(bridge)


def test_unknown_source_is_404(redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    with running_bridge(
        redis_url, key_prefix, tmp_path, BRIDGE_WEBHOOK_SECRET="", BRIDGE_WEBHOOK_SECRET_SHOP=SECRET
    ) as bridge:
        bridge.start_web()
        assert bridge.post(EVENT, source="shop").status_code == 202
        response = bridge.post(EVENT, source="other")
        assert response.status_code == 404
        assert response.json()["error"] == "unknown_source"
        assert response.json()["message"].startswith("no webhook source 'other' is configured")
        assert bridge.post(EVENT, source="bad.name").status_code == 404


def test_github_scheme_for_one_source(redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    from bridge.ingress.signatures import sign_github

    with running_bridge(
        redis_url,
        key_prefix,
        tmp_path,
        BRIDGE_WEBHOOK_SECRET_GH="gh-secret",
        BRIDGE_WEBHOOK_SCHEME_GH="github",
    ) as bridge:
        bridge.start_web()
        raw = json.dumps(EVENT).encode()
        good = {
            "content-type": "application/json",
            "x-hub-signature-256": sign_github("gh-secret", raw),
            "x-github-delivery": "d-1",
        }
        assert bridge.post(raw, source="gh", headers=good).status_code == 202
        bad = good | {"x-hub-signature-256": sign_github("other", raw)}
        assert bridge.post(raw, source="gh", headers=bad).status_code == 401


def test_a_default_secret_kept_for_github_senders_is_said_plainly_to_a_standard_one(
    redis_url: str, key_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """DESIGN.md: the default secret is every source's. A GitHub secret there serves the
    github-scheme sources that have none of their own; a standard source cannot be checked
    with it: a 500 that says so (no traceback), nothing stored, the sender retries."""
    from bridge.ingress.signatures import sign_github

    with running_bridge(
        redis_url,
        key_prefix,
        tmp_path,
        BRIDGE_WEBHOOK_SECRET="a github secret",
        BRIDGE_WEBHOOK_SCHEME_GH="github",
    ) as bridge:
        bridge.start_web()
        raw = json.dumps(EVENT).encode()
        signed = {
            "content-type": "application/json",
            "x-hub-signature-256": sign_github("a github secret", raw),
            "x-github-delivery": "d-1",
        }
        assert bridge.post(raw, source="gh", headers=signed).status_code == 202
        standard = bridge.post(EVENT | {"id": "std-1"}, source="shop")
        assert standard.status_code == 500
        assert standard.json() == {
            "error": "secret_misconfigured",
            "message": "the bridge's secret for source 'shop' cannot check this signature scheme",
        }
        assert bridge.redis.zcard(f"{key_prefix}events") == 1  # the GitHub one only
    told = [r for r in caplog.records if "cannot be verified" in r.getMessage()]
    assert [r.getMessage() for r in told] == [
        "webhook for source 'shop' cannot be verified: a webhook secret for the standard "
        "scheme must be whsec_ followed by base64"
    ]
    assert told[0].exc_info is None  # one line, no traceback


def test_redis_down_is_503_and_recovers(key_prefix: str, tmp_path: Path) -> None:
    server = EmbeddedRedis().start()
    try:
        with running_bridge(server.url, key_prefix, tmp_path) as bridge:
            bridge.write_rule(
                "r.yaml",
                "id: r\non: lytho.asset.updated\nactions:\n  - uses: slack.post\n"
                "    with: {channel: '#creative', text: 'asset {{ event.id }}'}\n",
            )
            bridge.start_slack()
            bridge.start_web()
            worker = bridge.start_worker()
            wait_for(
                lambda: bridge.redis.exists(f"{key_prefix}queue:health-check"),
                what="the worker's first heartbeat",
            )
            server.stop()
            response = bridge.post(EVENT | {"id": "during-outage"})
            assert response.status_code == 503
            assert response.json() == {
                "error": "store_unavailable",
                "message": "events cannot be stored right now; retry later",
            }
            health = httpx.get(f"{bridge.web_url}/readyz")
            assert health.status_code == 503
            assert health.json()["checks"]["redis"] == "unreachable"
            assert httpx.get(f"{bridge.web_url}/healthz").status_code == 200
            wait_for(lambda: "worker lost Redis" in bridge.worker_logs(), what="the worker")
            server.start()
            # The sender retries the same delivery: it was never stored, so now it is.
            response = wait_for(
                lambda: (
                    (r := bridge.post(EVENT | {"id": "during-outage"})).status_code == 202 and r
                ),
                what="the web process to reach Redis again",
            )
            assert response.json()["accepted"] == ["during-outage"]
            # The same worker process reconnects by itself and runs it.
            messages = wait_for(lambda: bridge.slack.received(), what="the worker to recover")
            assert [m["text"] for m in messages] == ["asset during-outage"]
            assert worker.poll() is None
    finally:
        server.close()


CLOUDEVENT = {
    "specversion": "1.0",
    "id": "ce-9",
    "source": "/lytho/dam",
    "type": "lytho.asset.created",
    "data": {"id": 9},
}


def test_cloudevents_structured_batch_and_binary_over_http(bridge: Bridge) -> None:
    raw = json.dumps(CLOUDEVENT).encode()
    headers = signed_headers(raw) | {"content-type": "application/cloudevents+json"}
    response = bridge.post(raw, source="cloudevents", headers=headers)
    assert (response.status_code, response.json()["accepted"]) == (202, ["ce-9"])

    batch = json.dumps([CLOUDEVENT | {"id": "ce-10"}, CLOUDEVENT | {"id": "ce-11"}]).encode()
    headers = signed_headers(batch) | {"content-type": "application/cloudevents-batch+json"}
    response = bridge.post(batch, source="cloudevents", headers=headers)
    assert response.json()["accepted"] == ["ce-10", "ce-11"]

    data = json.dumps({"id": 12}).encode()
    headers = signed_headers(data) | {
        "ce-specversion": "1.0",
        "ce-id": "ce-12",
        "ce-source": "/x",
        "ce-type": "lytho.asset.deleted",
    }
    response = bridge.post(data, source="cloudevents", headers=headers)
    assert response.json()["accepted"] == ["ce-12"]
    stored = json.loads(bridge.redis.get(f"{bridge.settings.key_prefix}event:ce-12"))
    assert (stored["type"], stored["source"], stored["data"]) == (
        "lytho.asset.deleted",
        "/x",
        {"id": 12},
    )


def test_lytics_audience_webhook_over_http(bridge: Bridge) -> None:
    body = {
        "id": "lyt-1",
        "data": {
            "email": "ana@example.com",
            "segment_events": [
                {"id": "se-1", "event": "segment_entered", "slug": "vip", "enter": True}
            ],
        },
    }
    response = bridge.post(body, source="lytics")
    assert (response.status_code, response.json()["accepted"]) == (202, ["se-1"])
    stored = json.loads(bridge.redis.get(f"{bridge.settings.key_prefix}event:se-1"))
    assert (stored["type"], stored["subject"]) == ("lytics.segment.entered", "vip")
    bad = bridge.post({"id": "x", "data": {}}, source="lytics")
    assert bad.status_code == 400
    assert bad.json()["message"] == "'data.segment_events' must be a non-empty array"
