"""A run's pickups with a real worker: the queue never gives up on a run itself; the run's
own count does (RuleRun.ready), so a run either goes on or ends as a traced dead letter.

The try counter of the run's job (`arq:retry:<job>`) is set as if the run had been picked
up that many times already, rather than running hundreds of pickups."""

from __future__ import annotations

from bridge.jobs.handlers import MAX_PICKUPS, MAX_RUN_PICKUPS
from tests import test_rule_loops as rule_loops
from tests.helpers import Bridge, wait_for
from tests.test_rule_loops import LOOP, Sink, order

# The loop tests' sink and bridge (web up, the sink's loopback address allowed).
sink, bridge = rule_loops.sink, rule_loops.bridge


def picked_up(bridge: Bridge, times: int, progress: int) -> None:
    """The state of o-1's run as if picked up `times` times, its loop last finishing an
    item at pickup `progress` (what the flow stores as [progress])."""
    job_id = f"{bridge.settings.key_prefix}run:o-1:each-item"
    bridge.redis.set(f"arq:retry:{job_id}", times, ex=3600)
    # The event's handle_event job as if picked up once before: a first try runs the run
    # inline (a fresh run, nothing stored yet), a later one queues its run_rule job.
    bridge.redis.set(f"arq:retry:{bridge.settings.key_prefix}handle:o-1", 1, ex=3600)
    steps = f"{bridge.settings.key_prefix}steps:o-1:each-item"
    bridge.redis.hset(steps, "[progress]", str(progress))


def test_a_loop_that_makes_progress_goes_on_past_the_queues_old_limit(
    bridge: Bridge, sink: Sink
) -> None:
    bridge.write_rule("loop.yaml", LOOP.replace("SINK", sink.url))
    picked_up(bridge, MAX_PICKUPS, MAX_PICKUPS)
    sink.fail(2, 503, 503, 503)  # item 2 fails one try (the client tries 3 times): pickup 502
    bridge.start_worker()
    assert bridge.post(order("o-1")).status_code == 202
    end = wait_for(lambda: bridge.trace_has("o-1", "run"), what="the run's end")
    assert end["status"] == "succeeded"
    assert sink.done() == [1, 2, 3, 4, 5]
    assert bridge.dead_letters() == []
    assert "giving up" not in bridge.worker_logs()


def test_a_run_past_the_bound_in_all_ends_as_a_traced_dead_letter(
    bridge: Bridge, sink: Sink
) -> None:
    bridge.write_rule("loop.yaml", LOOP.replace("SINK", sink.url))
    picked_up(bridge, MAX_RUN_PICKUPS, MAX_RUN_PICKUPS)  # progress at the last pickup
    bridge.start_worker()
    assert bridge.post(order("o-1")).status_code == 202
    end = wait_for(lambda: bridge.trace_has("o-1", "run"), what="the run's end")
    assert end["status"] == "dead_lettered"
    assert end["error"] == f"gave up after {MAX_RUN_PICKUPS} pickups in all"
    [letter] = bridge.dead_letters()
    assert (letter["step"], letter["error"]) == ("tag[0]", end["error"])
    assert sink.received == []
