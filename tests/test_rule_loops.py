"""`for_each` loops end to end: a real worker posts each item to a local endpoint, in order;
each item's result is stored as it finishes, so a retry (after a failure, a dead letter or a
SIGKILL) resumes at the first unfinished item and never repeats a finished one."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.actions import action_schemas
from bridge.jobs.handlers import MAX_PICKUPS, run_rule
from bridge.operate.context import build_context
from bridge.queue import Retry
from bridge.rules.loader import check_rules
from bridge.rules.testing import run_tests
from bridge.sandbox.server import ThreadedServer
from bridge.settings import Settings
from bridge.templates.environment import Templates
from tests.helpers import Bridge, running_bridge, wait_for


class Sink:
    """A local endpoint that records what each step posts, and fails or holds on request.

    `received` lists every request's body in arrival order; `answered` those answered with
    200 (what a caller can know was done).
    """

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.answered: list[dict[str, Any]] = []
        self.failing: dict[int, list[int]] = {}  # n → statuses to answer, one per request
        self.hold_n: int | None = None
        self.held = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadedServer(
            Starlette(routes=[Route("/{name}", self._post, methods=["POST"])])
        )

    def __enter__(self) -> Sink:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.stop()

    @property
    def url(self) -> str:
        return self._server.url

    def fail(self, n: int, *statuses: int) -> None:
        """Answer the next requests for item `n` with these statuses, then 200 again."""
        with self._lock:
            self.failing[n] = list(statuses)

    def hold(self, n: int) -> None:
        """Keep the next request for item `n` unanswered until `release` is set."""
        self.hold_n = n

    def ns(self, where: str = "items") -> list[int]:
        return [b["n"] for b in self.received if b["at"] == where]

    def done(self, where: str = "items") -> list[int]:
        return [b["n"] for b in self.answered if b["at"] == where]

    async def _post(self, request: Request) -> Response:
        body = {"at": request.path_params["name"], **await request.json()}
        n = body.get("n")
        with self._lock:
            self.received.append(body)
            statuses = self.failing.get(n) if body["at"] == "items" else None
            status = statuses.pop(0) if statuses else 200
            hold = self.hold_n is not None and self.hold_n == n and body["at"] == "items"
            if hold:
                self.hold_n = None
        if hold:
            self.held.set()
            await anyio.to_thread.run_sync(self.release.wait)
            return JSONResponse({"error": "nobody is listening any more"}, status_code=503)
        if status != 200:
            return JSONResponse({"error": f"item {n} refused"}, status_code=status)
        with self._lock:
            self.answered.append(body)
        return JSONResponse({"stored": n})


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as s:
        yield s


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path, BRIDGE_HTTP_ALLOW="127.0.0.1") as b:
        b.start_web()
        yield b


LOOP = """
id: each-item
on: shop.order.paid
actions:
  - id: tag
    for_each: "{{ data.items }}"
    as: asset
    retry: {attempts: 3, backoff: 0.05s}
    uses: http.post
    with:
      url: "SINK/items"
      json:
        n: "{{ asset.id }}"
        index: "{{ loop.index }}"
        first: "{{ loop.first }}"
        last: "{{ loop.last }}"
  - id: summary
    uses: http.post
    with:
      url: "SINK/summary"
      json: {n: "{{ steps.tag.count }}", last: "{{ steps.tag.results[-1].body.stored }}"}
"""


def order(event_id: str, n: int = 5) -> dict[str, Any]:
    items = [{"id": i} for i in range(1, n + 1)]
    return {"id": event_id, "type": "shop.order.paid", "data": {"items": items}}


def steps_of(bridge: Bridge, event_id: str, status: str) -> list[str]:
    return [
        e["step"]
        for e in bridge.trace(event_id)
        if e["kind"] == "step" and e.get("status") == status
    ]


def stored(bridge: Bridge, event_id: str, rule_id: str) -> dict[str, Any]:
    key = f"{bridge.settings.key_prefix}steps:{event_id}:{rule_id}"
    return {k.decode(): json.loads(v) for k, v in bridge.redis.hgetall(key).items()}


def test_a_loop_posts_each_item_in_order_and_its_result_is_the_list(
    bridge: Bridge, sink: Sink
) -> None:
    bridge.write_rule("loop.yaml", LOOP.replace("SINK", sink.url))
    bridge.start_worker()
    assert bridge.post(order("o-1")).status_code == 202
    wait_for(lambda: bridge.trace_has("o-1", "run", status="succeeded"), what="the run")
    assert [b for b in sink.received if b["at"] == "items"] == [
        {"at": "items", "n": n, "index": n, "first": n == 1, "last": n == 5} for n in range(1, 6)
    ]
    # The next step reads the loop's result: one entry per item, in order.
    assert [b for b in sink.received if b["at"] == "summary"] == [
        {"at": "summary", "n": 5, "last": 5}
    ]
    assert steps_of(bridge, "o-1", "succeeded") == [f"tag[{i}]" for i in range(5)] + ["summary"]
    result = stored(bridge, "o-1", "each-item")["tag"]
    assert result["count"] == 5
    assert (result["failed"], result["skipped"]) == (0, 0)
    assert [r["body"] for r in result["results"]] == [{"stored": n} for n in range(1, 6)]
    loops = [e for e in bridge.trace("o-1") if e["kind"] == "loop"]
    assert [(e["status"], e["items"]) for e in loops] == [("started", 5), ("finished", 5)]


def test_a_failed_item_is_retried_from_that_item(bridge: Bridge, sink: Sink) -> None:
    """Item 3 fails (three 503s: one try of the step); the retry starts at item 3."""
    bridge.write_rule("loop.yaml", LOOP.replace("SINK", sink.url))
    sink.fail(3, 503, 503, 503)
    bridge.start_worker()
    assert bridge.post(order("o-2")).status_code == 202
    wait_for(lambda: bridge.trace_has("o-2", "run", status="succeeded"), what="the run")
    assert sink.done() == [1, 2, 3, 4, 5]
    assert Counter(sink.ns()) == {1: 1, 2: 1, 3: 4, 4: 1, 5: 1}
    assert steps_of(bridge, "o-2", "failed") == ["tag[2]"]
    assert steps_of(bridge, "o-2", "succeeded") == [f"tag[{i}]" for i in range(5)] + ["summary"]


NOW_LOOP = """
id: stamped
on: shop.order.paid
actions:
  - id: tag
    for_each: "{{ [now().isoformat()] * 3 }}"
    as: stamp
    retry: {attempts: 3, backoff: 0.05s}
    uses: http.post
    with:
      url: "SINK/items"
      json: {n: "{{ loop.index }}", stamp: "{{ stamp }}"}
"""


def test_a_retry_runs_over_the_list_rendered_on_the_first_try(bridge: Bridge, sink: Sink) -> None:
    """The list holds the time it was rendered at: every item, the ones after the retry
    included, carries the first try's."""
    bridge.write_rule("stamped.yaml", NOW_LOOP.replace("SINK", sink.url))
    sink.fail(2, 503, 503, 503)
    bridge.start_worker()
    assert bridge.post(order("o-3")).status_code == 202
    wait_for(lambda: bridge.trace_has("o-3", "run", status="succeeded"), what="the run")
    assert sink.done() == [1, 2, 3]
    assert len({b["stamp"] for b in sink.received}) == 1
    assert steps_of(bridge, "o-3", "failed") == ["tag[1]"]


def cli(bridge: Bridge, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        env={**os.environ, **bridge.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_dead_lettered_item_resumes_there_on_dlq_retry(bridge: Bridge, sink: Sink) -> None:
    bridge.write_rule("loop.yaml", LOOP.replace("SINK", sink.url))
    sink.fail(3, 400)
    bridge.start_worker()
    assert bridge.post(order("o-4")).status_code == 202
    [letter] = wait_for(bridge.dead_letters, what="the dead letter of item 3")
    assert letter["step"] == "tag[2]"
    assert letter["error"].startswith("POST ") and "→ 400" in letter["error"]
    assert sink.done() == [1, 2]
    retried = cli(bridge, "dlq", "retry", letter["id"])
    assert retried.returncode == 0, retried.stderr
    wait_for(lambda: bridge.trace_has("o-4", "run", status="succeeded"), what="the resumed run")
    assert sink.done() == [1, 2, 3, 4, 5]
    assert sink.ns() == [1, 2, 3, 3, 4, 5]  # item 3 twice (refused, then done); no other
    assert sink.ns("summary") == [5]
    assert bridge.dead_letters() == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_worker_killed_mid_loop_resumes_with_no_item_done_twice_or_skipped(
    redis_url: str, key_prefix: str, tmp_path: Path, sink: Sink
) -> None:
    env = {"BRIDGE_HTTP_ALLOW": "127.0.0.1", "BRIDGE_STEP_TIMEOUT": "1"}
    with running_bridge(redis_url, key_prefix, tmp_path, **env) as bridge:
        bridge.start_web()
        bridge.write_rule("loop.yaml", LOOP.replace("SINK", sink.url))
        sink.hold(3)
        worker = bridge.start_worker()
        assert bridge.post(order("o-5")).status_code == 202
        wait_for(sink.held.is_set, what="item 3's request to be in flight")
        worker.send_signal(signal.SIGKILL)
        worker.wait(5)
        sink.release.set()  # its answer reaches no one: the worker that asked is gone
        assert sink.done() == [1, 2]
        bridge.start_worker()
        # arq hands the killed worker's job to another once its lock expires (job timeout
        # + 10 s), and the run resumes at item 3.
        wait_for(
            lambda: bridge.trace_has("o-5", "run", status="succeeded"),
            timeout=60,
            what="the resumed run",
        )
        # Every item done exactly once, in order; item 3 was asked twice, as its first
        # answer never arrived.
        assert sink.done() == [1, 2, 3, 4, 5]
        assert sink.ns() == [1, 2, 3, 3, 4, 5]
        assert sink.ns("summary") == [5]
        assert Counter(steps_of(bridge, "o-5", "succeeded")) == dict.fromkeys(
            [*(f"tag[{i}]" for i in range(5)), "summary"], 1
        )
        assert bridge.dead_letters() == []


def test_a_list_longer_than_max_items_fails_the_step_for_good(bridge: Bridge, sink: Sink) -> None:
    bridge.write_rule(
        "loop.yaml",
        LOOP.replace("SINK", sink.url).replace("as: asset", "as: asset\n    max_items: 4"),
    )
    bridge.start_worker()
    assert bridge.post(order("o-6")).status_code == 202
    [letter] = wait_for(bridge.dead_letters, what="the dead letter")
    assert letter["step"] == "tag"
    assert letter["error"] == (
        "for_each of step 'tag' gave 5 items, more than max_items (4); "
        "raise max_items (at most 1,000) or narrow the list"
    )
    assert letter["attempts"] == 1
    assert sink.received == []


def test_a_for_each_that_gives_no_list_fails_the_step_saying_what_it_got(
    bridge: Bridge, sink: Sink
) -> None:
    bridge.write_rule("loop.yaml", LOOP.replace("SINK", sink.url))
    bridge.start_worker()
    event = {"id": "o-7", "type": "shop.order.paid", "data": {"items": "1,2,3"}}
    assert bridge.post(event).status_code == 202
    [letter] = wait_for(bridge.dead_letters, what="the dead letter")
    assert letter["error"] == (
        "for_each of step 'tag' must give a list, but '{{ data.items }}' gave string '1,2,3'"
    )
    assert sink.received == []


SKIPS = """
id: skips
on: shop.order.paid
actions:
  - id: tag
    for_each: "{{ data.items }}"
    as: asset
    if: "asset.id != 2"
    continue_on_error: true
    retry: {attempts: 1}
    uses: http.post
    with:
      url: "SINK/items"
      json: {n: "{{ asset.id }}"}
  - uses: http.post
    with:
      url: "SINK/summary"
      json: {n: "{{ steps.tag.failed }}", skipped: "{{ steps.tag.skipped }}"}
"""


def test_if_skips_items_and_continue_on_error_goes_on_past_a_failed_one(
    bridge: Bridge, sink: Sink
) -> None:
    bridge.write_rule("skips.yaml", SKIPS.replace("SINK", sink.url))
    sink.fail(4, 400)
    bridge.start_worker()
    assert bridge.post(order("o-8")).status_code == 202
    run = wait_for(lambda: bridge.trace_has("o-8", "run"), what="the run")
    assert run["status"] == "succeeded_with_errors"
    assert run["failed_steps"] == ["tag"]
    assert sink.done() == [1, 3, 5]
    assert sink.received[-1] == {"at": "summary", "n": 1, "skipped": 1}
    results = stored(bridge, "o-8", "skips")["tag"]["results"]
    assert results[1] == {"skipped": True}
    assert results[3]["failed"] is True and "→ 400" in results[3]["error"]


# -- validation: bridge validate's messages ------------------------------------------------


def problems(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "loop.yaml").write_text(text)
    checked = check_rules(tmp_path / "rules", templates=Templates(), actions=action_schemas())
    return [str(p).replace(str(tmp_path) + "/", "") for p in checked.errors]


def test_loop_mistakes_are_reported_with_their_places(tmp_path: Path) -> None:
    text = """\
id: loops
on: shop.order.paid
actions:
  - uses: http.post
    as: asset
    max_item: 3
    with: {url: "https://example.com"}
  - uses: http.post
    for_each: "{{ data.items | join(',') }}"
    with: {url: "https://example.com"}
  - uses: http.post
    for_each: "ids: {{ data.items }}"
    with: {url: "https://example.com"}
  - uses: http.post
    for_each: data.items
    as: data
    max_items: 5000
    with: {url: "https://example.com"}
  - uses: http.post
    for_each: "{{ steps.find.assets }}"
    as: "an asset"
    with: {url: "https://example.com"}
"""
    assert problems(tmp_path, text) == [
        "rules/loop.yaml:5:5: 'as' in rule 'loops' belongs to a loop, and this step has no "
        "for_each; add for_each (the list to run the step over, such as "
        "\"{{ steps.find.assets }}\") or remove 'as'",
        "rules/loop.yaml:6:5: unknown key 'max_item' in step in rule 'loops'; did you mean "
        "'max_items'? expected one of id, uses, with, if, retry, continue_on_error, for_each, "
        "as, max_items, choose",
        "rules/loop.yaml:9:15: for_each in rule 'loops' must give a list, but "
        "\"{{ data.items | join(',') }}\" renders a string",
        "rules/loop.yaml:12:15: for_each in rule 'loops' renders text ('ids: {{ data.items }}'); "
        'expected one expression that gives a list, such as "{{ steps.find.assets }}"',
        "rules/loop.yaml:15:15: for_each in rule 'loops' is the text 'data.items'; expected a "
        'template of a list, such as "{{ steps.find.assets }}"',
        "rules/loop.yaml:16:9: 'as: data' in rule 'loops' would hide 'data' in the step's "
        "templates; choose another name, such as asset",
        "rules/loop.yaml:17:16: 'max_items' in rule 'loops' must be an integer from 1 to 1,000, "
        "not 5000",
        "rules/loop.yaml:20:15: for_each in rule 'loops' reads steps.find, which is not an "
        "earlier step; earlier steps: step0, step1, step2, step3",
        "rules/loop.yaml:21:9: 'as' in rule 'loops' is 'an asset'; expected a name of letters, "
        "digits and '_' (such as asset, then {{ asset.id }} in with:)",
    ]


# -- the cookbook recipe in docs/rules.md --------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "rules.md"


def recipe() -> tuple[str, str]:
    """The cookbook's campaign rule and its rule test, as docs/rules.md shows them."""
    text = DOCS.read_text()
    section = text[text.index("### 7. A campaign goes live → tag every asset of it") :]
    rule, tests = re.findall(r"```yaml\n(.*?)```", section, re.S)[:2]
    return rule, tests


def test_the_cookbook_recipe_validates_and_passes_its_rule_test(tmp_path: Path) -> None:
    rule, tests = recipe()
    (tmp_path / "rules" / "tests").mkdir(parents=True)
    (tmp_path / "rules" / "tag-campaign-assets.yaml").write_text(rule)
    (tmp_path / "rules" / "tests" / "tag-campaign-assets.test.yaml").write_text(tests)
    templates = Templates()
    checked = check_rules(tmp_path / "rules", templates=templates, actions=action_schemas())
    assert checked.errors == [] and checked.ruleset is not None
    [result] = run_tests(tmp_path / "rules", checked.ruleset, templates)
    assert result.problems == []
    assert [(case.name, case.failures) for case in result.cases] == [
        ("a campaign that goes live tags each of its assets not tagged yet", []),
        ("a campaign that ends is not this rule's", []),
    ]


# -- a long loop is given up only after MAX_PICKUPS pickups without progress ---------------


async def test_a_long_loop_that_keeps_finishing_items_is_not_cut_by_the_pickup_limit(
    redis_url: str, key_prefix: str, tmp_path: Path, sink: Sink
) -> None:
    """A loop whose items are each deferred (a rate limit, a time slice) is picked up again
    and again; the queue's limit of MAX_PICKUPS counts pickups since its last finished item,
    so it goes on while it makes progress, and still gives up when it stops making any."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "loop.yaml").write_text(LOOP.replace("SINK", sink.url))
    env = {
        "REDIS_URL": redis_url,
        "BRIDGE_KEY_PREFIX": key_prefix,
        "BRIDGE_RULES_DIR": str(tmp_path / "rules"),
        "BRIDGE_TEMPLATES_DIR": str(tmp_path / "templates"),
        "BRIDGE_HTTP_ALLOW": "127.0.0.1",
    }
    context = await build_context(Settings.from_env(env))
    event = order("o-9")["data"]
    event_dict = {"id": "o-9", "type": "shop.order.paid", "source": "shop", "data": event}

    async def pickup(number: int) -> dict[str, Any] | None:
        try:
            return await run_rule({"bridge": context, "job_try": number}, event_dict, "each-item")
        except Retry:
            return None  # deferred: the queue picks it up again later

    try:
        sink.fail(3, 503, 503, 503)
        assert await pickup(1) is None  # items 1, 2 done; item 3 failed once
        sink.fail(4, 503, 503, 503)
        assert await pickup(MAX_PICKUPS - 10) is None  # item 3 done; item 4 failed once
        # 20 pickups past the limit in all, but only 10 + 20 since the last item finished.
        done = await pickup(MAX_PICKUPS + 20)
        assert done is not None and done["status"] == "succeeded"
        assert sink.done() == [1, 2, 3, 4, 5]
        assert sink.ns("summary") == [5]
        # A run that makes no progress for MAX_PICKUPS pickups still gives up.
        stuck = {**event_dict, "id": "o-10"}
        sink.fail(1, *[503] * 3)
        with pytest.raises(Retry):
            await run_rule({"bridge": context, "job_try": 1}, stuck, "each-item")
        gave_up = await run_rule(
            {"bridge": context, "job_try": MAX_PICKUPS + 2}, stuck, "each-item"
        )
        assert gave_up == {"status": "dead_lettered", "step": "tag[0]"}
        [letter] = await context.dead_letters.list()
        assert (letter.step, letter.error) == ("tag[0]", f"gave up after {MAX_PICKUPS} pickups")
    finally:
        await context.close()
