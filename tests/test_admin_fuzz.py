"""The admin surface over whatever is stored: lone surrogates, control characters, infinite
numbers, deep nesting, long strings, undecodable records. Every reader answers, none 5xx.

Records are written straight into Redis (through the store, the tracer and the dead-letter
list, or raw), bypassing the webhook door that refuses such input today: data stored before
that door closed, or by another writer, must still show.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from math import isfinite
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.cli.report import trace_lines
from bridge.events import Event
from bridge.operate.admin import event_with_trace
from bridge.operate.context import Context, build_context
from bridge.queue.store import dumps
from bridge.redaction import TOO_DEEP
from bridge.settings import Settings
from tests.helpers import Bridge, running_bridge

TOKEN = "fuzz-admin-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}
API_PATHS = ("/api/events", "/api/events/{id}", "/api/dead-letters")
PAGES = ("/", "/events", "/events/{id}", "/dead-letters")
EXAMPLES = 30


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path, BRIDGE_ADMIN_TOKEN=TOKEN) as b:
        b.start_web()
        yield b


def seed(bridge: Bridge, work: Callable[[Context], Awaitable[Any]]) -> Any:
    """Run `work` against the bridge's Redis with a context of its own (as a worker would)."""

    async def main() -> Any:
        context = await build_context(Settings.from_env(bridge.env), load_rules=False)
        try:
            return await work(context)
        finally:
            await context.close()

    return asyncio.run(main())


async def store_event(context: Context, event: Event, *, letter_error: str | None = None) -> None:
    """The event as the webhook would store it, a trace as the worker writes it, and a
    dead letter for it when `letter_error` is given."""
    assert await context.store.ingest([event]) == [True]
    data = event.data
    await context.tracer.record(
        event.id,
        "evaluated",
        rules=[
            {
                "rule": "r1",
                "matched": True,
                "conditions": {"op": "exists", "result": True, "path": "data", "actual": data},
            }
        ],
        matched=["r1"],
    )
    await context.tracer.record(
        event.id,
        "step",
        rule="r1",
        step="notify",
        uses="slack.post",
        attempt=1,
        status="failed",
        error=f"Slack said {data!r}"[:2000],
        params={"text": data, "channel": event.subject},
    )
    if letter_error is not None:
        await add_letter(context, event, letter_error)
        await context.tracer.record(
            event.id, "run", rule="r1", status="dead_lettered", error=letter_error
        )


async def add_letter(context: Context, event: Event, error: str) -> None:
    """A dead letter as DeadLetters stores one, written directly: its add() copies the event
    recursively (asdict), which no event nested 900 deep survives."""
    letter = {
        "id": f"dl_{event.id}",
        "event_id": event.id,
        "rule_id": "r1",
        "run": "",
        "step": "notify",
        "uses": "slack.post",
        "error": error,
        "attempts": 1,
        "failed_at": 1.9e9,
        "event": event.to_dict(),
    }
    await context.redis.hset(context.keys.dead_letters, letter["id"], dumps(letter))  # type: ignore[misc]
    await context.redis.zadd(context.keys.dead_letter_index, {letter["id"]: 1.9e9})


def strict_json(response: httpx.Response) -> Any:
    """The body as a strict JSON parser (a browser's) reads it: no NaN or Infinity."""

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    return json.loads(response.content.decode("utf-8"), parse_constant=refuse)


def get(bridge: Bridge, path: str) -> httpx.Response:
    return httpx.get(f"{bridge.web_url}{path}", headers=AUTH, timeout=30)


def every_reader(bridge: Bridge, event_id: str) -> dict[str, httpx.Response]:
    """Every admin endpoint and page that shows stored events or dead letters."""
    quoted = quote(event_id, safe="")
    answers = {}
    for path in (*API_PATHS, *PAGES):
        url = path.replace("{id}", quoted)
        answers[path] = get(bridge, url)
    return answers


def bridge_trace(bridge: Bridge, event_id: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **bridge.env}
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", "trace", event_id],
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


def test_lone_surrogates_already_stored_show_on_every_reader(bridge: Bridge) -> None:
    event = Event(
        id="sur-1",
        source="demo",
        type="demo.thing\ud800",
        subject="subject \ud800",
        data={"name": "a\ud800b", "\udfff": ["\ud800"]},
    )
    seed(bridge, lambda ctx: store_event(ctx, event, letter_error="boom \ud800"))

    answers = every_reader(bridge, "sur-1")
    for path, response in answers.items():
        assert response.status_code == 200, (path, response.text[:300])
    [listed] = strict_json(answers["/api/events"])["events"]
    assert listed["subject"] == "subject \ufffd" and listed["type"] == "demo.thing\ufffd"
    detail = strict_json(answers["/api/events/{id}"])
    assert detail["event"]["data"] == {"name": "a\ufffdb", "\ufffd": ["\ufffd"]}
    assert detail["outcome"] == "failed"
    [letter] = strict_json(answers["/api/dead-letters"])["dead_letters"]
    assert letter["error"] == "boom \ufffd"
    assert letter["event"]["subject"] == "subject \ufffd"
    assert "subject \ufffd" in answers["/events/{id}"].text
    assert "boom \ufffd" in answers["/dead-letters"].text

    printed = bridge_trace(bridge, "sur-1")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("event sur-1  demo.thing\ufffd  from demo")
    assert "  subject: subject \ufffd\n" in printed.stdout
    assert "a\ufffdb" in printed.stdout


def test_deep_nesting_and_infinite_numbers_show_on_every_reader(bridge: Bridge) -> None:
    deep: Any = "bottom"
    for _ in range(900):
        deep = [deep]
    event = Event(
        id="deep-1",
        source="demo",
        type="demo.thing",
        data={"deep": deep, "numbers": [float("inf"), -float("inf"), float("nan"), 10**4000]},
    )
    seed(bridge, lambda ctx: store_event(ctx, event, letter_error="deep"))
    # A condition tree deeper than any rule may nest (pages and `bridge trace` recurse on it).
    tree: dict[str, Any] = {"op": "exists", "result": True, "path": "data"}
    for _ in range(1000):
        tree = {"op": "not", "result": True, "children": [tree]}
    evaluation = {"rule": "r2", "matched": False, "conditions": tree}
    seed(bridge, lambda ctx: ctx.tracer.record("deep-1", "evaluated", rules=[evaluation]))

    answers = every_reader(bridge, "deep-1")
    for path, response in answers.items():
        assert response.status_code == 200, (path, response.text[:300])
    detail = strict_json(answers["/api/events/{id}"])
    assert detail["event"]["data"]["numbers"][:3] == ["Infinity", "-Infinity", "NaN"]
    assert detail["event"]["data"]["numbers"][3] == 10**4000
    assert TOO_DEEP in json.dumps(detail["event"]["data"]["deep"], ensure_ascii=False)
    assert TOO_DEEP in answers["/events/{id}"].text
    assert "Infinity" in answers["/events/{id}"].text
    letter = strict_json(answers["/api/dead-letters"])["dead_letters"][0]
    assert TOO_DEEP in json.dumps(letter["event"], ensure_ascii=False)

    assert answers["/events/{id}"].text.count('<span class="op">not</span>') > 20
    printed = bridge_trace(bridge, "deep-1")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.count(" not") > 20
    assert '"Infinity", "-Infinity", "NaN"' not in printed.stdout  # data is cut at 200 chars
    assert "data: {" in printed.stdout


def test_records_that_cannot_be_decoded_are_listed_with_why(bridge: Bridge) -> None:
    ok = Event(id="ok-1", source="demo", type="demo.thing", data={"n": 1})
    seed(bridge, lambda ctx: store_event(ctx, ok, letter_error="fine"))
    keys = bridge.settings.key_prefix
    hopeless = b"[" * 100_000  # deeper than any decoder goes
    bridge.redis.set(f"{keys}event:raw-1", hopeless)
    bridge.redis.zadd(f"{keys}events", {"raw-1": 1.9e12})
    bridge.redis.rpush(f"{keys}trace:raw-1", hopeless, b"{not json")
    for odd in ({"kind": "step", "at": "soon", "rule": "r"}, {"kind": "run", "at": 1e300}):
        bridge.redis.rpush(f"{keys}trace:raw-1", json.dumps(odd))
    odd_changes = {"id": "raw-2", "source": "demo", "type": "demo.thing", "changes": {"a": 5}}
    bridge.redis.set(f"{keys}event:raw-2", json.dumps(odd_changes))
    bridge.redis.zadd(f"{keys}events", {"raw-2": 1.8e12})
    bridge.redis.hset(f"{keys}dlq", "dl_raw", hopeless)
    bridge.redis.zadd(f"{keys}dlq:index", {"dl_raw": 1.9e9})

    events = get(bridge, "/api/events")
    assert events.status_code == 200
    listed = {e["id"]: e for e in strict_json(events)["events"]}
    assert set(listed) == {"ok-1", "raw-1", "raw-2"}
    assert listed["raw-1"]["type"] == "" and listed["raw-1"]["outcome"] == "pending"
    detail = get(bridge, "/api/events/raw-1")
    assert detail.status_code == 200
    body = strict_json(detail)
    assert body["event"]["data"] == {
        "unreadable": "the stored event cannot be read: nested too deep"
    }
    assert [e["kind"] for e in body["trace"]] == ["unreadable", "unreadable", "step", "run"]
    assert body["trace"][0]["error"] == "this trace entry cannot be read: nested too deep"
    odd = get(bridge, "/api/events/raw-2")
    assert odd.status_code == 200
    assert strict_json(odd)["event"]["data"] == {
        "unreadable": "the stored event cannot be read: TypeError: 'int' object is not iterable"
    }
    assert get(bridge, "/events/raw-2").status_code == 200
    page = get(bridge, "/events/raw-1")
    assert page.status_code == 200
    assert "this trace entry cannot be read: nested too deep" in page.text

    letters = get(bridge, "/api/dead-letters")
    assert letters.status_code == 200
    by_id = {dl["id"]: dl for dl in strict_json(letters)["dead_letters"]}
    assert by_id["dl_raw"]["error"] == "this dead letter cannot be read: nested too deep"
    assert [dl["error"] for dl in by_id.values() if dl["id"] != "dl_raw"] == ["fine"]
    assert get(bridge, "/dead-letters").status_code == 200

    printed = bridge_trace(bridge, "raw-1")
    assert printed.returncode == 0, printed.stderr
    assert "this trace entry cannot be read: nested too deep" in printed.stdout

    # Nothing can be replayed from it: said so, and nothing is queued.
    queued, traced = bridge.queued(), bridge.redis.llen(f"{keys}trace:raw-1")
    replay = httpx.post(f"{bridge.web_url}/api/events/raw-1/replay", headers=AUTH, timeout=10)
    assert replay.status_code == 409
    message = (
        "the stored event 'raw-1' cannot be read (nested too deep), so it cannot be replayed; "
        "send it again"
    )
    assert replay.json() == {"error": "unreadable", "message": message}
    cli = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "replay", "raw-1"],
        env={**os.environ, **bridge.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 1 and message in cli.stderr and "Traceback" not in cli.stderr
    assert (bridge.queued(), bridge.redis.llen(f"{keys}trace:raw-1")) == (queued, traced)


def test_control_characters_in_ids_cannot_forge_lines_or_links(bridge: Bridge) -> None:
    forged = "ctl-1\n12:00:00.000  run r1  succeeded\x1b[2J\r"
    event = Event(id=forged, source="demo", type="demo.thing", subject="s\x00\x85\u2028")
    seed(bridge, lambda ctx: store_event(ctx, event))

    answers = every_reader(bridge, forged)
    for path, response in answers.items():
        assert response.status_code == 200, (path, response.text[:300])
    assert strict_json(answers["/api/events/{id}"])["event"]["id"] == forged
    assert 'href="/events/ctl-1%0A12%3A00%3A00.000%20%20run' in answers["/events"].text

    printed = bridge_trace(bridge, forged)
    assert printed.returncode == 0, printed.stderr
    first, *rest = printed.stdout.splitlines()
    assert first.startswith("event ctl-1\\n12:00:00.000  run r1  succeeded\\u001b[2J\\r  ")
    assert "  subject: s\\u0000\\u0085\\u2028" in rest
    assert not any("run r1" in line for line in rest)
    assert "\x1b" not in printed.stdout and "\r" not in printed.stdout


# --- fuzz: every JSON edge, through every reader -----------------------------------------

CHARACTERS = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
TEXT = st.text(CHARACTERS, max_size=12) | st.sampled_from(
    ["\ud800", "\udfff", "a\ud83db", "\x00", "\x1b[2J", "\n", "\u2028", "x" * 70_000, TOKEN]
)
NUMBERS = (
    st.integers(min_value=-(10**40), max_value=10**40)
    | st.sampled_from([10**4000, -(10**300), 2**63, 2**53 + 1])
    | st.floats(allow_nan=True, allow_infinity=True)
)
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT


def _deep(depth: int, leaf: Any, as_dict: bool) -> Any:
    for _ in range(depth):
        leaf = {"k": leaf} if as_dict else [leaf]
    return leaf


JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.just(TOKEN) | TEXT, inner, max_size=4)
    ),
    max_leaves=12,
) | st.builds(_deep, st.sampled_from([63, 64, 65, 200, 900]), SCALARS, st.booleans())


# Each example also carries one of these, so that every edge is met in a bounded run.
EDGES = st.sampled_from(
    [
        float("inf"),
        float("nan"),
        -(10**4000),
        "\ud800 \x1b[2J\n",
        _deep(900, "bottom", True),
        {TOKEN: "a secret as a key"},
        "x" * 100_000,
    ]
)


def edges_of(*values: Any) -> set[str]:
    """Which JSON edges the values hold (for the fuzz to show what it covered)."""
    found: set[str] = set()
    stack = [(value, 1) for value in values]
    while stack:
        value, depth = stack.pop()
        if depth > 64:
            found.add("deeper than 64")
        if isinstance(value, dict):
            stack += [(k, depth) for k in value] + [(v, depth + 1) for v in value.values()]
            if TOKEN in value:
                found.add("secret as a key")
        elif isinstance(value, list):
            stack += [(v, depth + 1) for v in value]
        elif isinstance(value, float) and not isfinite(value):
            found.add("NaN or infinity")
        elif isinstance(value, int) and abs(value) > 2**63:
            found.add("huge integer")
        elif isinstance(value, str):
            if any("\ud800" <= c <= "\udfff" for c in value):
                found.add("lone surrogate")
            if any(c < " " or "\x7f" <= c <= "\x9f" for c in value):
                found.add("control character")
            if len(value) > 60_000:
                found.add("long string")
            if TOKEN in value:
                found.add("secret in a value")
    return found


@pytest.mark.timeout(300)  # ~15 s alone; a loaded 2-core machine is slower, not wrong
def test_fuzz_no_reader_answers_5xx(bridge: Bridge) -> None:
    seen: list[int] = []
    covered: set[str] = set()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        subject=st.none() | TEXT,
        type_=TEXT.filter(bool),
        data=JSON,
        edge=EDGES,
        changes=st.dictionaries(TEXT, st.fixed_dictionaries({"from": SCALARS, "to": JSON})),
        error=TEXT,
    )
    def check(
        subject: str | None, type_: str, data: Any, edge: Any, changes: Any, error: str
    ) -> None:
        event_id = f"fz-{len(seen)}"
        seen.append(1)
        data = {"fuzzed": data, "edge": edge}
        covered.update(edges_of(subject, type_, data, changes, error))
        event = Event(
            id=event_id, source="demo", type=type_, subject=subject, data=data, changes=changes
        )
        seed(bridge, lambda ctx: store_event(ctx, event, letter_error=error))
        for path, response in every_reader(bridge, event_id).items():
            assert response.status_code < 500, (path, response.text[:300])
            assert response.status_code == 200, (path, response.text[:300])
            if path.startswith("/api/"):
                body = strict_json(response)
                assert TOKEN not in json.dumps(body, ensure_ascii=False)
            else:
                assert TOKEN not in response.text
        # What `bridge trace` prints: strict UTF-8, one line per line, no secret.
        found = seed(bridge, lambda ctx: event_with_trace(ctx, event_id))
        printed = "\n".join(trace_lines(*found)).encode("utf-8")
        assert TOKEN.encode() not in printed and b"\x1b" not in printed

    check()
    assert len(seen) == EXAMPLES
    assert covered == {
        "deeper than 64",
        "secret as a key",
        "secret in a value",
        "NaN or infinity",
        "huge integer",
        "lone surrogate",
        "control character",
        "long string",
    }
