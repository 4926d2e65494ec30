"""The Workflow poller when the API ignores, refuses or lacks the modified-since filter.

The sandbox is started ignoring `modifiedSince` (as an API without that filter would):
the poller must notice, say so once, show it in its status, and read the kind in full
passes compared with the snapshot, so each change is one event and none is lost.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from bridge.errors import PermanentError
from bridge.ingress.pollers.lytho_workflow import WorkflowPoller, filter_status
from bridge.jobs.schedule import poller_status, tick
from bridge.operate.context import Context
from bridge.sandbox.lytho_dialect import LythoDialect
from bridge.sandbox.lytho_workflow import create_lytho_workflow_app
from bridge.sandbox.server import serve_in_thread
from tests.helpers import running_bridge
from tests.pollers.support import (
    WF_ID,
    WF_SECRET,
    Sandboxes,
    Slots,
    make_context,
    poll,
    poller,
    stored_events,
)
from tests.test_metrics import parse

TOKEN = "fallback-admin-token-0123456789"
WARNING = "Lytho Workflow ignores the modifiedSince filter for {kind}"


@pytest.fixture(scope="module")
def ignoring_running() -> Iterator[Sandboxes]:
    app = create_lytho_workflow_app(WF_ID, WF_SECRET, ignores_modified_since=True)
    with serve_in_thread(app) as server:
        yield Sandboxes("", server.url, "", {"workflow": app})


@pytest.fixture
def ignoring(ignoring_running: Sandboxes) -> Sandboxes:
    httpx.post(f"{ignoring_running.workflow}/_sandbox/reset", timeout=5).raise_for_status()
    return ignoring_running


def workflow_env(sandbox: Sandboxes, profile: Path | None = None) -> dict[str, str]:
    env = {
        "LYTHO_WORKFLOW_API_URL": f"{sandbox.workflow}/v1/",
        "LYTHO_TOKEN_URL": f"{sandbox.workflow}/oauth/token",
        "LYTHO_CLIENT_ID": WF_ID,
        "LYTHO_CLIENT_SECRET": WF_SECRET,
    }
    if profile is not None:
        env["BRIDGE_LYTHO_PROFILE"] = str(profile)
    return env


@pytest.fixture
async def context(ignoring: Sandboxes, redis_url: str, key_prefix: str) -> AsyncIterator[Context]:
    ctx = await make_context(redis_url, key_prefix, workflow_env(ignoring))
    try:
        yield ctx
    finally:
        await ctx.close()


def searches(sandbox: Sandboxes, kind: str, path: str = "{kind}/search") -> list[str]:
    """The query strings of the sandbox's searches of one kind, oldest first."""
    wanted = "/v1/" + path.format(kind=kind)
    return [r["query"] for r in sandbox.requests("workflow") if r["path"] == wanted]


def warnings(caplog: pytest.LogCaptureFixture, kind: str) -> int:
    return sum(WARNING.format(kind=kind) in r.getMessage() for r in caplog.records)


async def test_an_ignored_filter_is_proved_said_once_and_full_passes_miss_nothing(
    context: Context, ignoring: Sandboxes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.ingress.pollers.lytho_workflow")
    workflow = poller(context, "lytho_workflow")
    prefix = context.settings.key_prefix
    assert (await poll(workflow)).done  # seeds silently
    ignoring.edit_workflow("proof", 7, status="approved")
    assert (await poll(workflow)).done
    # Every proof is as new as the filter's time: nothing proves it ignored yet. A
    # campaign older than the others came back: campaigns are proved at once.
    status = await filter_status(context.redis, prefix)
    assert status["proof"] == "honoured" and status["campaign"] == "ignored"

    # The filter is now after the seeded proofs' time, and they come back: proved.
    assert (await poll(workflow)).done
    status = await filter_status(context.redis, prefix)
    assert status["proof"] == "ignored" and status["project"] == "honoured"
    assert warnings(caplog, "proof") == 1

    ignoring.clear_requests("workflow")
    ignoring.edit_workflow("proof", 8, name="Story video v2")
    ignoring.edit_workflow("task", 104, status="blocked")
    for _ in range(3):
        assert (await poll(workflow)).done
    proof_searches = searches(ignoring, "proof")
    assert len(proof_searches) == 3
    assert all("modifiedSince" not in q for q in proof_searches)  # full passes
    assert all("modifiedSince=" in q for q in searches(ignoring, "project"))

    events = await stored_events(context)
    assert Counter((e.type, e.subject) for e in events) == {
        ("lytho.proof.status_changed", "7"): 1,
        ("lytho.proof.updated", "8"): 1,
        ("lytho.task.status_changed", "104"): 1,
    }
    updated = next(e for e in events if e.subject == "8")
    assert dict(updated.changes) == {"name": {"from": "Story video v1", "to": "Story video v2"}}
    # Tasks were proved too once one was newer than the rest; each said once in all.
    assert (await filter_status(context.redis, prefix))["task"] == "ignored"
    for kind in ("proof", "task", "campaign"):
        assert warnings(caplog, kind) == 1

    [status_row] = [s for s in await poller_status(context) if s["name"] == "lytho_workflow"]
    assert status_row["notes"] == [
        # Lytho's reference gives a work request no modification time: never filtered.
        "workrequest: no modifiedAt on the objects (workflow.fields.modified); full passes",
        "modifiedSince ignored by the API for proof, task, campaign; full passes",
    ]
    assert status_row["full_passes"] == {
        "proof": True,
        "task": True,
        "workrequest": True,
        "project": False,
        "campaign": True,
    }
    assert status_row["filter"]["proof"]["state"] == "ignored"
    assert status_row["filter"]["proof"]["proof"].startswith("proof 8 modified ")


async def test_full_passes_keep_to_the_budget_and_resume_where_they_stopped(
    ignoring: Sandboxes, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    # Pages of 10 (the sandbox accepts 10, 20 and 30): twelve tasks are two pages.
    profile = tmp_path / "profile.yaml"
    profile.write_text("workflow:\n  pages:\n    sizes: [10]\n", encoding="utf-8")
    context = await make_context(redis_url, key_prefix, workflow_env(ignoring, profile))
    try:
        workflow = poller(context, "lytho_workflow")
        assert (await poll(workflow)).done
        ignoring.edit_workflow("task", 100, status="blocked")
        assert (await poll(workflow)).done
        assert (await poll(workflow)).done  # tasks at the seed's time come back: ignored
        assert (await filter_status(context.redis, key_prefix))["task"] == "ignored"

        ignoring.edit_workflow("task", 103, name="Social cut-downs (v2)")  # page 1
        ignoring.edit_workflow("task", 111, status="done")  # page 2
        ignoring.clear_requests("workflow")
        runs = 0
        while True:  # one request per run, as a tight budget allows
            budget = Slots(1)
            runs += 1
            result = await workflow.poll(budget)
            assert budget.requests <= 1
            if result.done:
                break
        # proof, task (2 pages), workrequest, project, campaign: 6 requests in 6 runs.
        assert runs == 6
        tasks = searches(ignoring, "task")
        assert tasks == ["page=1&pageSize=10", "page=2&pageSize=10"]  # no modifiedSince
        for _ in range(2):
            assert (await poll(workflow)).done
        events = await stored_events(context)
        assert Counter((e.type, e.subject) for e in events) == {
            ("lytho.task.status_changed", "100"): 1,
            ("lytho.task.updated", "103"): 1,
            ("lytho.task.status_changed", "111"): 1,
        }
    finally:
        await context.close()


async def test_a_profile_without_the_filter_reads_every_kind_in_full_passes(
    sandboxes: Sandboxes, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text('workflow.search.modified_since: ""\n', encoding="utf-8")
    context = await make_context(redis_url, key_prefix, workflow_env(sandboxes, profile))
    try:
        workflow = poller(context, "lytho_workflow")
        assert (await poll(workflow)).done
        sandboxes.edit_workflow("project", 10, priority="low")
        for _ in range(3):
            assert (await poll(workflow)).done
        [event] = await stored_events(context)
        assert (event.type, event.subject) == ("lytho.project.updated", "10")
        assert dict(event.changes) == {"priority": {"from": "high", "to": "low"}}
        queries = [r["query"] for r in sandboxes.requests("workflow") if "/search" in r["path"]]
        assert len(queries) == 4 * 5 and not any("modifiedSince" in q for q in queries)
        [row] = [s for s in await poller_status(context) if s["name"] == "lytho_workflow"]
        assert row["notes"] == [
            "no modified-since filter in the Lytho profile "
            "(workflow.search.modified_since); full passes"
        ]
        assert set(row["full_passes"].values()) == {True}
        assert isinstance(workflow, WorkflowPoller)
        codes = await filter_status(context.redis, key_prefix, workflow.profile)
        assert set(codes.values()) == {"absent"}
    finally:
        await context.close()


async def test_the_dashboard_api_and_metrics_say_the_filter_is_ignored(
    ignoring: Sandboxes, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    context = await make_context(redis_url, key_prefix, workflow_env(ignoring))
    try:
        for _ in range(2):
            await tick(context)
            await context.redis.delete(f"{key_prefix}poll:lytho_workflow:due")
        ignoring.edit_workflow("proof", 7, status="approved")
        for _ in range(2):
            await tick(context)
            await context.redis.delete(f"{key_prefix}poll:lytho_workflow:due")
    finally:
        await context.close()
    env = {**workflow_env(ignoring), "BRIDGE_ADMIN_TOKEN": TOKEN}
    auth = {"authorization": f"Bearer {TOKEN}"}
    with running_bridge(redis_url, key_prefix, tmp_path, **env) as bridge:
        bridge.start_web()
        api = httpx.get(f"{bridge.web_url}/api/pollers", headers=auth, timeout=10).json()
        page = httpx.get(f"{bridge.web_url}/pollers", headers=auth, timeout=10).text
        metrics = parse(httpx.get(f"{bridge.web_url}/metrics", timeout=10).text)
    [row] = api["pollers"]
    line = "modifiedSince ignored by the API for proof, campaign; full passes"
    assert line in row["notes"]
    assert f"lytho_workflow: {line}" in page
    full = 'lytbridge_poller_full_passes{{kind="{kind}",poller="lytho_workflow"}}'
    assert metrics[full.format(kind="proof")] == 1
    assert metrics[full.format(kind="campaign")] == 1
    assert metrics[full.format(kind="task")] == 0


async def test_a_refused_filter_is_dropped_only_when_the_search_passes_without_it(
    sandboxes: Sandboxes, redis_url: str, key_prefix: str
) -> None:
    context = await make_context(redis_url, key_prefix, workflow_env(sandboxes))
    try:
        workflow = poller(context, "lytho_workflow")
        assert (await poll(workflow)).done
        refusal = {"status": 400, "path": "/v1/project/search", "message": "bad modifiedSince"}
        # A search that fails with and without the filter says nothing of the filter.
        httpx.post(f"{sandboxes.workflow}/_sandbox/fail", json={**refusal, "count": 2}, timeout=5)
        with pytest.raises(PermanentError, match="400 Bad Request: bad modifiedSince"):
            await poll(workflow)
        assert (await filter_status(context.redis, key_prefix))["project"] == "unchecked"

        # Refused with the filter, answered without it: the filter is dropped for projects.
        httpx.post(f"{sandboxes.workflow}/_sandbox/fail", json=refusal, timeout=5)
        sandboxes.edit_workflow("project", 10, priority="low")
        assert (await poll(workflow)).done
        assert (await filter_status(context.redis, key_prefix))["project"] == "refused"
        sandboxes.clear_requests("workflow")
        sandboxes.edit_workflow("project", 10, ownerId=12)
        for _ in range(2):
            assert (await poll(workflow)).done
        assert searches(sandboxes, "project") == ["page=1&pageSize=30"] * 2
        events = await stored_events(context)
        assert [(e.type, dict(e.changes)) for e in events] == [
            ("lytho.project.updated", {"priority": {"from": "high", "to": "low"}}),
            ("lytho.project.updated", {"ownerId": {"from": 11, "to": 12}}),
        ]
        [row] = [s for s in await poller_status(context) if s["name"] == "lytho_workflow"]
        assert "modifiedSince refused by the API for project; full passes" in row["notes"]
        assert row["filter"]["project"]["proof"].startswith("GET /v1/project/search")
    finally:
        await context.close()


# Another dialect, and the override file that makes the poller speak it.
OTHER = """\
workflow:
  pages: {page_param: pageNumber, size_param: limit, first_page: 0, sizes: [5], items: results}
  paths: {search: "{kind}/find"}
  search: {modified_since: updatedAfter}
  fields: {modified: updatedAt}
"""


@pytest.fixture(scope="module")
def other_running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandboxes, Path]]:
    path = tmp_path_factory.mktemp("dialect") / "other.yaml"
    path.write_text(OTHER, encoding="utf-8")
    app = create_lytho_workflow_app(WF_ID, WF_SECRET, dialect=LythoDialect.from_file(path))
    with serve_in_thread(app) as server:
        yield Sandboxes("", server.url, "", {"workflow": app}), path


async def test_an_override_profile_polls_another_dialect_and_its_filter_holds(
    other_running: tuple[Sandboxes, Path], redis_url: str, key_prefix: str
) -> None:
    other, path = other_running
    httpx.post(f"{other.workflow}/_sandbox/reset", timeout=5).raise_for_status()
    context = await make_context(redis_url, key_prefix, workflow_env(other, path))
    try:
        workflow = poller(context, "lytho_workflow")
        assert (await poll(workflow)).done
        other.edit_workflow("task", 111, status="blocked")  # on the third page of five
        other.edit_workflow("campaign", 2, name="Summer 2026 teaser (EU)")
        for _ in range(3):
            assert (await poll(workflow)).done
        events = await stored_events(context)
        assert Counter((e.type, e.subject) for e in events) == {
            ("lytho.task.status_changed", "111"): 1,
            ("lytho.campaign.updated", "2"): 1,
        }
        task = next(e for e in events if e.subject == "111")
        assert task.time == task.data["updatedAt"]
        # The filter under its other name is honoured: nothing is proved ignored.
        assert isinstance(workflow, WorkflowPoller)
        status = await filter_status(context.redis, key_prefix, workflow.profile)
        assert status == {
            "proof": "honoured",
            "task": "honoured",
            "workrequest": "timeless",
            "project": "honoured",
            "campaign": "honoured",
        }
        tasks = searches(other, "task", "{kind}/find")
        assert tasks[:3] == [f"pageNumber={n}&limit=5" for n in range(3)]  # the seeding pass
        assert len(tasks) > 3 and all("updatedAfter=" in q for q in tasks[3:])
    finally:
        await context.close()
