"""/metrics: what web and worker processes count, summed in Redis, in Prometheus text format."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from bridge.errors import RateLimited
from bridge.events import Event
from bridge.operate import metrics
from bridge.operate.context import build_context
from bridge.sandbox.slack import Scenario
from bridge.settings import Settings
from bridge.web import prometheus
from tests.helpers import Bridge, running_bridge, signed_headers, wait_for

RULES = """
rules:
  - id: proof-approved-to-slack
    on: lytho.proof.status_changed
    when:
      - {path: data.status, eq: approved}
    actions:
      - id: notify
        uses: slack.post
        retry: {attempts: 3, backoff: 0.2s}
        with: {channel: "#creative", text: "Proof {{ data.name }} approved"}
  - id: proof-to-nowhere
    on: lytho.proof.status_changed
    when:
      - {path: data.status, eq: rejected}
    actions:
      - id: notify
        uses: slack.post
        with: {channel: "#no-such-channel", text: "rejected"}
"""

SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})?'
    r" (?P<value>[-+]?(?:\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|Inf|NaN))$"
)


def parse(text: str) -> dict[str, float]:
    """Every sample of an exposition; fails on any line that is not valid text format."""
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("# HELP "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a valid sample line: {line!r}"
        name = match["name"]
        assert any(name == t or name.startswith(t + "_") for t in typed), f"untyped {name}"
        samples[name + (match["labels"] or "")] = float(match["value"].replace("Inf", "inf"))
    return samples


def scrape(bridge: Bridge) -> dict[str, float]:
    response = httpx.get(f"{bridge.web_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path) as b:
        b.write_rule("proof.yaml", RULES)
        b.start_slack()
        b.start_web()
        yield b


def proof(event_id: str, status: str) -> dict[str, object]:
    return {
        "id": event_id,
        "type": "lytho.proof.status_changed",
        "data": {"status": status, "name": "Banner"},
    }


def test_web_and_worker_counts_reach_the_scrape(bridge: Bridge) -> None:
    bridge.slack.scenarios.append(Scenario(kind="status", status=500, count=1))
    bridge.start_worker()
    demo = [bridge.post(proof("m-1", "approved")), bridge.post(proof("m-1", "approved"))]
    assert [r.status_code for r in demo] == [202, 200]  # the second is a duplicate
    # The failing Slack answer is meant for m-1: send the rest once it went through.
    wait_for(lambda: bridge.slack.received("#creative"), what="m-1's message after its retry")
    demo.append(bridge.post(proof("m-2", "rejected")))
    assert demo[-1].status_code == 202
    assert bridge.post(proof("m-3", "draft"), source="shop").status_code == 202
    raw = json.dumps(proof("m-4", "approved")).encode()
    assert bridge.post(raw, headers=signed_headers(raw, secret="whsec_d3Jvbmc=")).status_code == 401
    assert bridge.post(raw, source="not.a.source").status_code == 404

    def settled() -> dict[str, float] | None:
        found = scrape(bridge)
        done = found.get('lytbridge_dead_letters_total{rule="proof-to-nowhere"}') == 1 and (
            found.get(
                'lytbridge_steps_total{rule="proof-approved-to-slack",status="succeeded",'
                'uses="slack.post"}'
            )
            == 1
            # m-3 (matched by no rule) may be handled after m-2's dead letter.
            and found.get('lytbridge_events_total{source="shop",type="lytho.proof.status_changed"}')
            == 1
        )
        return found if done else None

    # The worker flushes every 2 s: wait for its counts to arrive.
    found = wait_for(settled, what="the worker's counts in /metrics")

    assert found['lytbridge_webhook_requests_total{source="demo",status="202"}'] == 2
    assert found['lytbridge_webhook_requests_total{source="demo",status="200"}'] == 1
    assert found['lytbridge_webhook_requests_total{source="shop",status="202"}'] == 1
    assert found['lytbridge_webhook_requests_total{source="demo",status="401"}'] == 1
    assert found['lytbridge_webhook_requests_total{source="(unknown)",status="404"}'] == 1
    assert 'lytbridge_webhook_ack_seconds_count{source="(unknown)"}' not in found
    assert found['lytbridge_webhook_ack_seconds_count{source="demo"}'] == 3
    assert found['lytbridge_webhook_ack_seconds_bucket{source="demo",le="+Inf"}'] == 3
    # Seconds, measured inside the requests: at most what the client waited for them.
    waited = sum(r.elapsed.total_seconds() for r in demo)
    assert 0 < found['lytbridge_webhook_ack_seconds_sum{source="demo"}'] <= waited
    assert found['lytbridge_webhook_events_total{outcome="accepted",source="demo"}'] == 2
    assert found['lytbridge_webhook_events_total{outcome="duplicate",source="demo"}'] == 1

    assert found['lytbridge_events_total{source="demo",type="lytho.proof.status_changed"}'] == 2
    assert found['lytbridge_events_total{source="shop",type="lytho.proof.status_changed"}'] == 1
    assert found['lytbridge_rule_matches_total{rule="proof-approved-to-slack"}'] == 1
    assert found['lytbridge_rule_matches_total{rule="proof-to-nowhere"}'] == 1
    failed = (
        'lytbridge_steps_total{rule="proof-approved-to-slack",status="failed",uses="slack.post"}'
    )
    assert found[failed] == 1
    retries = 'lytbridge_step_retries_total{rule="proof-approved-to-slack",uses="slack.post"}'
    assert found[retries] == 1
    assert found['lytbridge_step_duration_seconds_count{uses="slack.post"}'] == 3

    assert found["lytbridge_dead_letters"] == 1
    assert found['lytbridge_rules{state="enabled"}'] == 2
    assert found["lytbridge_rule_set_valid"] == 1
    assert found["lytbridge_worker_up"] == 1
    assert "lytbridge_queue_jobs" in found


def test_a_rate_limited_step_is_counted_and_waits(bridge: Bridge) -> None:
    bridge.slack.scenarios.append(Scenario(kind="rate_limit", retry_after=1, count=1))
    bridge.start_worker()
    assert bridge.post(proof("rl-1", "approved")).status_code == 202
    key = (
        'lytbridge_steps_total{rule="proof-approved-to-slack",status="rate_limited",'
        'uses="slack.post"}'
    )
    found = wait_for(
        lambda: (
            (f := scrape(bridge)).get(key) == 1
            and f.get(key.replace("rate_limited", "succeeded")) == 1
            and f
        ),
        timeout=20,
        what="the rate-limited and then successful attempt",
    )
    assert 'lytbridge_step_retries_total{rule="proof-approved-to-slack",uses="slack.post"}' not in (
        found
    )


def test_histogram_buckets_are_cumulative_and_ordered() -> None:
    text = prometheus.exposition(
        {
            'lytbridge_webhook_ack_seconds_bucket{source="a",le="10"}': 2,
            'lytbridge_webhook_ack_seconds_bucket{source="a",le="0.005"}': 1,
            'lytbridge_webhook_ack_seconds_bucket{source="a",le="+Inf"}': 2,
            'lytbridge_webhook_ack_seconds_count{source="a"}': 2,
            'lytbridge_webhook_ack_seconds_sum{source="a"}': 0.5,
            'lytbridge_webhook_ack_seconds_bucket{source="a",le="2.5"}': 1,
            "lytbridge_dead_letters": 0,
            "not_ours_total": 5,
        }
    )
    lines = [line for line in text.splitlines() if line.startswith("lytbridge_webhook_ack")]
    assert lines == [
        'lytbridge_webhook_ack_seconds_bucket{source="a",le="0.005"} 1',
        'lytbridge_webhook_ack_seconds_bucket{source="a",le="2.5"} 1',
        'lytbridge_webhook_ack_seconds_bucket{source="a",le="10"} 2',
        'lytbridge_webhook_ack_seconds_bucket{source="a",le="+Inf"} 2',
        'lytbridge_webhook_ack_seconds_sum{source="a"} 0.5',
        'lytbridge_webhook_ack_seconds_count{source="a"} 2',
    ]
    assert "# TYPE lytbridge_webhook_ack_seconds histogram" in text
    assert "not_ours" not in text
    parse(text)


def test_label_values_are_escaped() -> None:
    assert metrics.series("x_total", {"type": 'a"b\\c\nd'}) == 'x_total{type="a\\"b\\\\c\\nd"}'


async def test_increments_stay_in_memory_until_the_flush(redis_url: str, key_prefix: str) -> None:
    settings = Settings.from_env({"REDIS_URL": redis_url, "BRIDGE_KEY_PREFIX": key_prefix})
    context = await build_context(settings, load_rules=False)
    check = redis.Redis.from_url(redis_url)
    try:
        m = context.metrics
        m.interval = 3600  # only explicit flushes in this test
        for n in range(1000):
            metrics.event_handled(
                context.metrics, Event(id=f"e{n}", source="demo", type="t.created")
            )
        metrics.rules_matched(context.metrics, ["r1", "r1"])
        metrics.dead_lettered(context.metrics, "r1")
        assert check.keys(f"{key_prefix}*") == []  # no Redis round trip per event
        assert await m.flush()
        counters = check.hgetall(f"{key_prefix}metrics:counters")
        assert counters[b'lytbridge_events_total{source="demo",type="t.created"}'] == b"1000"
        assert counters[b'lytbridge_rule_matches_total{rule="r1"}'] == b"2"
        hours = await metrics.hourly_stats(context.metrics, 2)
        assert hours[-1][1] == {"events": 1000, "matches:r1": 2, "dead": 1, "dead:r1": 1}
        assert hours[0][1] == {}
        assert set(await metrics.last_fired(context.metrics)) == {"r1"}
        assert check.ttl(f"{key_prefix}metrics:hour:{hours[-1][0]}") > 48 * 3600
    finally:
        await context.metrics.stop()
        await context.close()
        check.close()


async def test_a_failed_flush_keeps_the_increments(redis_url: str, key_prefix: str) -> None:
    down = Settings.from_env(
        {"REDIS_URL": "redis://127.0.0.1:1/0", "BRIDGE_KEY_PREFIX": key_prefix}
    )
    context = await build_context(down, load_rules=False)
    up = await build_context(
        Settings.from_env({"REDIS_URL": redis_url, "BRIDGE_KEY_PREFIX": key_prefix}),
        load_rules=False,
    )
    unreachable = context.redis
    try:
        m = context.metrics
        m.interval = 3600
        metrics.webhook_answered(context.metrics, "demo", 202, 0.01)
        assert not await m.flush()
        metrics.webhook_answered(context.metrics, "demo", 202, 0.02)
        context.redis = m.redis = up.redis  # Redis is back
        text = await prometheus.render(context)
        samples = parse(text)
        assert samples['lytbridge_webhook_requests_total{source="demo",status="202"}'] == 2
        assert samples['lytbridge_webhook_ack_seconds_bucket{source="demo",le="0.025"}'] == 2
        assert samples['lytbridge_webhook_ack_seconds_bucket{source="demo",le="0.01"}'] == 1
    finally:
        await m.stop()
        await unreachable.aclose()
        await up.close()


async def test_rate_limiter_waits_are_exported(redis_url: str, key_prefix: str) -> None:
    settings = Settings.from_env(
        {"REDIS_URL": redis_url, "BRIDGE_KEY_PREFIX": key_prefix, "BRIDGE_STEP_TIMEOUT": "0.3"}
    )
    context = await build_context(settings, load_rules=False)
    try:
        context.metrics.interval = 3600
        assert await context.limiter.acquire("lytho") == 0
        # Lytho allows one request every 3 s; this process may wait 0.1 s: it gives up.
        with pytest.raises(RateLimited):
            await context.limiter.acquire("lytho")
        samples = parse(await prometheus.render(context))
        assert samples['lytbridge_rate_limiter_waits_total{api="lytho"}'] == 1
        # Reading again adds nothing: only new waits are counted.
        samples = parse(await prometheus.render(context))
        assert samples['lytbridge_rate_limiter_waits_total{api="lytho"}'] == 1
    finally:
        await context.metrics.stop()
        await context.close()


async def test_too_many_label_values_are_counted_as_other(redis_url: str, key_prefix: str) -> None:
    settings = Settings.from_env({"REDIS_URL": redis_url, "BRIDGE_KEY_PREFIX": key_prefix})
    context = await build_context(settings, load_rules=False)
    try:
        context.metrics.interval = 3600
        for n in range(metrics.MAX_LABEL_VALUES + 5):
            metrics.event_handled(
                context.metrics, Event(id=f"e{n}", source="demo", type=f"t{n}.created")
            )
        samples = parse(await prometheus.render(context))
        assert samples['lytbridge_events_total{source="demo",type="(other)"}'] == 5
        types = [k for k in samples if k.startswith("lytbridge_events_total")]
        assert len(types) == metrics.MAX_LABEL_VALUES + 1
    finally:
        await context.metrics.stop()
        await context.close()


def test_a_worker_hands_over_its_last_counts_when_it_stops(bridge: Bridge) -> None:
    worker = bridge.start_worker()
    assert bridge.post(proof("s-1", "approved")).status_code == 202
    wait_for(lambda: bridge.trace_has("s-1", "run", status="succeeded"), what="the run")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(25) == 0
    found = scrape(bridge)
    key = (
        'lytbridge_steps_total{rule="proof-approved-to-slack",status="succeeded",uses="slack.post"}'
    )
    assert found[key] == 1
    assert "Task was destroyed" not in bridge.worker_logs()
    assert "Unclosed" not in bridge.worker_logs()


def test_every_metric_family_is_in_the_operations_page() -> None:
    """docs/operations.md lists what /metrics exports: each family, with its type."""
    from bridge.web.prometheus import FAMILIES

    page = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    missing = [f.name for f in FAMILIES if f"| `{f.name}` | {f.kind} |" not in page]
    assert missing == []
