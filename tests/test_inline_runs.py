"""A matched event's runs start inside its handle_event job (bridge/jobs/handlers.py), on
real Redis and a real worker: no second job when all goes well, and whatever must wait (a
retry's backoff) or was cut short (a SIGKILL) goes on as the run's own run_rule job, from
its first unfinished step, with no finished step done twice."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests import test_rule_loops as rule_loops
from tests.helpers import Bridge, running_bridge, wait_for
from tests.test_rule_loops import Sink

TWO_STEPS = """
id: two-steps
on: shop.order.paid
actions:
  - id: first
    uses: http.post
    with:
      url: "SINK/first"
      json: {n: "{{ data.n }}"}
  - id: second
    retry: {attempts: 3, backoff: 0.05s}
    uses: http.post
    with:
      url: "SINK/items"
      json: {n: "{{ data.n }}"}
"""

OTHER = """
id: other-rule
on: shop.order.paid
actions:
  - id: only
    uses: http.post
    with:
      url: "SINK/other"
      json: {n: "{{ data.n }}"}
"""


def paid(event_id: str, n: int) -> dict[str, Any]:
    return {"id": event_id, "type": "shop.order.paid", "data": {"n": n}}


def run_job_keys(bridge: Bridge, event_id: str, rule_id: str) -> list[str]:
    """The Redis keys a run_rule job of this run would leave (queued, or its result)."""
    job_id = f"{bridge.settings.key_prefix}run:{event_id}:{rule_id}"
    return [k.decode() for k in bridge.redis.keys(f"arq:*:{job_id}")]


def kinds(bridge: Bridge, event_id: str) -> list[str]:
    return [e["kind"] for e in bridge.trace(event_id)]


def succeeded_steps(bridge: Bridge, event_id: str) -> Counter[str]:
    return Counter(
        e["step"]
        for e in bridge.trace(event_id)
        if e["kind"] == "step" and e["status"] == "succeeded"
    )


# The loop tests' sink and bridge (web up, the sink's loopback address allowed).
sink, bridge = rule_loops.sink, rule_loops.bridge


def test_a_matched_event_runs_in_its_handle_event_job_with_one_trace_in_order(
    bridge: Bridge, sink: Sink
) -> None:
    bridge.write_rule("two.yaml", TWO_STEPS.replace("SINK", sink.url))
    bridge.start_worker()
    assert bridge.post(paid("o-1", 1)).status_code == 202
    end = wait_for(lambda: bridge.trace_has("o-1", "run"), what="the run's end")
    assert end["status"] == "succeeded"
    assert kinds(bridge, "o-1") == ["evaluated", "step", "step", "run"]
    steps = [(e["step"], e["attempt"]) for e in bridge.trace("o-1") if e["kind"] == "step"]
    assert steps == [("first", 1), ("second", 1)]
    assert (sink.done("first"), sink.done()) == ([1], [1])
    # No run_rule job was ever queued: the handle_event job ran it and holds the result.
    assert run_job_keys(bridge, "o-1", "two-steps") == []
    handled = f"arq:result:{bridge.settings.key_prefix}handle:o-1"
    wait_for(lambda: bridge.redis.exists(handled), what="handle_event's result")


def test_a_step_that_must_wait_goes_on_as_its_own_job_and_done_steps_stay_done(
    bridge: Bridge, sink: Sink
) -> None:
    bridge.write_rule("two.yaml", TWO_STEPS.replace("SINK", sink.url))
    sink.fail(2, 503, 503, 503)  # the client tries 3 times: the step's first try fails
    bridge.start_worker()
    assert bridge.post(paid("o-2", 2)).status_code == 202
    end = wait_for(lambda: bridge.trace_has("o-2", "run"), what="the run's end")
    assert end["status"] == "succeeded"
    steps = [
        (e["step"], e["attempt"], e["status"]) for e in bridge.trace("o-2") if e["kind"] == "step"
    ]
    assert steps == [
        ("first", 1, "succeeded"),
        ("second", 1, "failed"),
        ("second", 2, "succeeded"),
    ]
    assert sink.ns("first") == [2]  # done once, inline; the retry did not repeat it
    assert sink.ns() == [2, 2, 2, 2]  # three refused, then answered
    # The retry ran as the run's own job.
    result = f"arq:result:{bridge.settings.key_prefix}run:o-2:two-steps"
    assert run_job_keys(bridge, "o-2", "two-steps") == [result]
    assert bridge.dead_letters() == []


def test_two_matched_rules_run_side_by_side_and_one_waiting_holds_up_nothing(
    bridge: Bridge, sink: Sink
) -> None:
    bridge.write_rule("two.yaml", TWO_STEPS.replace("SINK", sink.url))
    bridge.write_rule("other.yaml", OTHER.replace("SINK", sink.url))
    sink.fail(3, 503, 503, 503)
    bridge.start_worker()
    assert bridge.post(paid("o-3", 3)).status_code == 202
    wait_for(
        lambda: bridge.trace_has("o-3", "run", rule="two-steps", status="succeeded"),
        what="the retried run's end",
    )
    other = bridge.trace_has("o-3", "run", rule="other-rule")
    assert other is not None and other["status"] == "succeeded"
    assert (sink.ns("other"), sink.ns("first"), sink.ns()) == ([3], [3], [3, 3, 3, 3])
    assert run_job_keys(bridge, "o-3", "other-rule") == []  # inline, and only there
    [evaluated] = [e for e in bridge.trace("o-3") if e["kind"] == "evaluated"]
    assert sorted(evaluated["matched"]) == ["other-rule", "two-steps"]


@pytest.mark.timeout(120)
def test_a_worker_killed_inside_an_inline_run_resumes_it_as_its_own_job(
    redis_url: str, key_prefix: str, tmp_path: Path, sink: Sink
) -> None:
    env = {"BRIDGE_HTTP_ALLOW": "127.0.0.1", "BRIDGE_STEP_TIMEOUT": "1"}
    with running_bridge(redis_url, key_prefix, tmp_path, **env) as bridge:
        bridge.start_web()
        bridge.write_rule("two.yaml", TWO_STEPS.replace("SINK", sink.url))
        sink.hold(4)  # the second step's request stays unanswered
        worker = bridge.start_worker()
        assert bridge.post(paid("o-4", 4)).status_code == 202
        wait_for(sink.held.is_set, what="the second step's request to be in flight")
        worker.send_signal(signal.SIGKILL)
        worker.wait(5)
        sink.release.set()  # its answer reaches no one
        assert sink.done("first") == [4]
        bridge.start_worker()
        # The handle_event job is picked up again once its lock expires; a second try
        # queues the run as its own job, which resumes at the unfinished step.
        end = wait_for(lambda: bridge.trace_has("o-4", "run"), timeout=60, what="the run")
        assert end["status"] == "succeeded"
        assert sink.ns("first") == [4]  # never repeated
        assert sink.done() == [4]
        assert succeeded_steps(bridge, "o-4") == {"first": 1, "second": 1}
        evaluated = [e for e in bridge.trace("o-4") if e["kind"] == "evaluated"]
        assert len(evaluated) == 2  # each try of handle_event says what it matched
        assert bridge.dead_letters() == []
