"""Dead letters: every failed run is listed exactly once, whatever the order of a retry and
the worker's next failure; two retries of one letter start one run."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.events import Event
from bridge.jobs.deadletters import DeadLetters
from bridge.operate.context import Context, build_context
from bridge.queue.store import loads
from bridge.settings import Settings
from tests.helpers import Bridge, running_bridge, wait_for

ADMIN_TOKEN = "admin-token-for-dead-letter-tests"


@pytest.fixture
async def bridge_context(redis_url: str, key_prefix: str) -> AsyncIterator[Context]:
    settings = Settings.from_env({"REDIS_URL": redis_url, "BRIDGE_KEY_PREFIX": key_prefix})
    context = await build_context(settings, load_rules=False)
    yield context
    await context.close()


EVENT = Event(id="e-1", source="demo", type="shop.order.paid", data={"id": 1})


async def queued_runs(context: Context) -> list[list[Any]]:
    """The arguments of every run_rule job in the queue."""
    ids = await context.redis.zrange(context.settings.queue_name, 0, -1)
    runs = []
    for job_id in ids:
        raw = await context.redis.get(b"arq:job:" + job_id)
        if raw is not None and loads(raw)["f"] == "run_rule":
            runs.append(loads(raw)["a"])
    return runs


async def test_a_retry_whose_run_fails_before_the_clean_up_stays_listed(
    bridge_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's new letter lands at the earliest moment it can: as soon as the retried
    run is in the queue (before the retry's clean-up, if the retry has one left to do)."""
    letters = bridge_context.dead_letters
    first = await letters.add(EVENT, "orders", "", "notify", "slack.post", "first failure", 3)
    worker_failed: list[str] = []

    async def worker_fails_again() -> None:
        if worker_failed or not await queued_runs(bridge_context):
            return
        worker_failed.append("yes")
        # The worker ran the queued run and it failed again: its letter has the same id.
        await bridge_context.dead_letters.add(
            EVENT, "orders", "", "notify", "slack.post", "second failure", 3
        )

    original_drop = DeadLetters.drop

    async def drop_after_the_worker(self: DeadLetters, letter_id: str) -> bool:
        await worker_fails_again()
        return await original_drop(self, letter_id)

    monkeypatch.setattr(DeadLetters, "drop", drop_after_the_worker)
    assert await letters.retry(first.id) is not None
    await worker_fails_again()
    assert worker_failed == ["yes"]
    listed = await letters.list()
    assert [(letter.id, letter.error) for letter in listed] == [(first.id, "second failure")]
    assert await letters.count() == 1
    # And it can be retried again, as `bridge dlq retry` would.
    again = await letters.retry(first.id)
    assert again is not None and again.error == "second failure"
    assert await letters.list() == []


async def test_a_retry_runs_under_the_stored_id_even_when_it_holds_a_secret(
    redis_url: str, key_prefix: str
) -> None:
    """Secrets are masked in a letter, but never its event id: the retried run must find
    the steps, tries and trace stored under that id."""
    secret = "xoxb-secret-in-an-id-0123456789"
    settings = Settings.from_env(
        {"REDIS_URL": redis_url, "BRIDGE_KEY_PREFIX": key_prefix, "SLACK_BOT_TOKEN": secret}
    )
    context = await build_context(settings, load_rules=False)
    try:
        event = Event(id=f"order-{secret}", source="demo", type="shop.order.paid", data={"n": 1})
        letter = await context.dead_letters.add(
            event, "orders", "", "notify", "slack.post", f"boom {secret}", 3
        )
        [stored] = await context.dead_letters.list()
        assert stored.event_id == f"order-{secret}"
        assert secret not in stored.error and secret not in json.dumps(stored.event)
        assert await context.dead_letters.retry(letter.id) is not None
        [[event_dict, rule_id, run]] = await queued_runs(context)
        assert (event_dict["id"], rule_id, run) == (f"order-{secret}", "orders", "")
    finally:
        await context.close()


async def test_two_retries_of_one_letter_at_once_start_one_run(bridge_context: Context) -> None:
    letters = bridge_context.dead_letters
    letter = await letters.add(EVENT, "orders", "", "notify", "slack.post", "boom", 3)
    results = await asyncio.gather(*(letters.retry(letter.id) for _ in range(5)))
    assert [r.id for r in results if r is not None] == [letter.id]
    assert await queued_runs(bridge_context) == [[EVENT.to_dict(), "orders", ""]]
    assert await letters.list() == []
    assert await letters.retry(letter.id) is None


async def test_a_retry_resets_the_failed_steps_tries_and_is_traced(
    bridge_context: Context,
) -> None:
    keys = bridge_context.keys
    attempts = keys.attempts(EVENT.id, "orders")
    await bridge_context.redis.hset(attempts, mapping={"notify": 3, "first": 1})  # type: ignore[misc]
    letters = bridge_context.dead_letters
    letter = await letters.add(EVENT, "orders", "", "notify", "slack.post", "boom", 3)
    await letters.retry(letter.id)
    left = await bridge_context.redis.hgetall(attempts)  # type: ignore[misc]
    assert left == {b"first": b"1"}
    [entry] = await bridge_context.tracer.read(EVENT.id)
    assert {k: v for k, v in entry.items() if k != "at"} == {
        "kind": "retried",
        "rule": "orders",
        "dead_letter": letter.id,
        "step": "notify",
    }


RULE = """
id: orders
on: shop.order.paid
actions:
  - id: notify
    uses: slack.post
    with: {channel: "#sales", text: "order {{ event.id }}"}
"""


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path, BRIDGE_ADMIN_TOKEN=ADMIN_TOKEN) as b:
        b.write_rule("orders.yaml", RULE)
        b.start_slack()
        b.start_web()
        b.start_worker()
        yield b


def api(bridge: Bridge, method: str, path: str) -> httpx.Response:
    return httpx.request(
        method,
        f"{bridge.web_url}{path}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )


def cli(bridge: Bridge, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        env={**os.environ, **bridge.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def slack_fails(bridge: Bridge, error: str = "channel_not_found") -> None:
    httpx.post(f"{bridge.slack_url}/_sandbox/scenario", json={"kind": "error", "error": error})


def dead_lettered_runs(bridge: Bridge, event_id: str) -> list[dict[str, Any]]:
    return [e for e in bridge.trace(event_id) if e["kind"] == "run"]


def test_retries_of_retries_are_listed_once_each_time_then_succeed(bridge: Bridge) -> None:
    slack_fails(bridge)
    assert bridge.post({"id": "o-1", "type": "shop.order.paid", "data": {}}).status_code == 202
    [letter] = wait_for(bridge.dead_letters, what="the first dead letter")
    for n in range(2, 5):
        # The run fails again on retry: the list, the API, the CLI and the trace agree.
        slack_fails(bridge, f"channel_not_found_{n}")
        retried = api(bridge, "POST", f"/api/dead-letters/{letter['id']}/retry")
        assert retried.status_code == 202, retried.text
        runs = wait_for(
            lambda n=n: (
                len(dead_lettered_runs(bridge, "o-1")) == n and dead_lettered_runs(bridge, "o-1")
            ),
            what=f"failure number {n}",
        )
        assert all(r["status"] == "dead_lettered" for r in runs)
        assert {r["dead_letter"] for r in runs} == {letter["id"]}
        listed = wait_for(bridge.dead_letters, what="the letter of the failed retry")
        assert [(d["id"], d["error"]) for d in listed] == [
            (letter["id"], f"Slack chat.postMessage → channel_not_found_{n}")
        ]
        body = api(bridge, "GET", "/api/dead-letters").json()
        assert [d["id"] for d in body["dead_letters"]] == [letter["id"]]
        assert body["count"] == 1
        assert letter["id"] in cli(bridge, "dlq", "list").stdout
    # Slack is fine again: the last retry posts once and leaves no letter behind.
    done = cli(bridge, "dlq", "retry", letter["id"])
    assert done.returncode == 0, done.stderr
    wait_for(lambda: bridge.trace_has("o-1", "run", status="succeeded"), what="the good run")
    assert [m["text"] for m in bridge.slack.received("#sales")] == ["order o-1"]
    assert bridge.dead_letters() == []
    assert api(bridge, "GET", "/api/dead-letters").json() == {"dead_letters": [], "count": 0}
    kinds = [e["kind"] for e in bridge.trace("o-1") if e["kind"] in ("run", "retried")]
    assert kinds == ["run", "retried", "run", "retried", "run", "retried", "run", "retried", "run"]
    assert json.dumps(bridge.trace("o-1")).count('"kind": "retried"') == 4
