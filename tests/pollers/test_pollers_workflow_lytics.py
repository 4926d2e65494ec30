"""The Lytho Workflow and Lytics pollers against their sandboxes over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

from bridge.ingress.pollers import poller_event_types
from bridge.operate.context import Context
from tests.pollers.support import Sandboxes, poll, poller, stored_events


async def test_workflow_seeds_silently_then_a_proof_approval_is_one_event(
    context: Context, sandboxes: Sandboxes
) -> None:
    workflow = poller(context, "lytho_workflow")
    assert (await poll(workflow)).done
    assert await stored_events(context) == []
    sandboxes.edit_workflow("proof", 7, status="approved")
    assert (await poll(workflow)).done
    assert (await poll(workflow)).done
    [event] = await stored_events(context)
    assert (event.type, event.source, event.subject) == (
        "lytho.proof.status_changed",
        "lytho_workflow",
        "7",
    )
    assert dict(event.changes) == {"status": {"from": "in_review", "to": "approved"}}
    assert event.data["name"] == "Hero visual v3"
    assert event.data["status"] == "approved"


async def test_workflow_quiet_cycles_ask_only_for_what_changed(
    context: Context, sandboxes: Sandboxes
) -> None:
    workflow = poller(context, "lytho_workflow")
    await poll(workflow)
    sandboxes.clear_requests("workflow")
    sandboxes.edit_workflow("task", 104, name="Copy review (legal)")
    sandboxes.edit_workflow("workrequest", 300, archived=True)
    await poll(workflow)
    searches = {
        r["path"]: r["query"]
        for r in sandboxes.requests("workflow")
        if r["path"].endswith("/search")
    }
    assert len(searches) == 5  # one request per kind
    for kind in ("proof", "task", "project", "campaign"):
        assert "modifiedSince=" in searches[f"/v1/{kind}/search"]
    # A work request carries no modification time (Lytho's reference): read whole.
    assert "modifiedSince" not in searches["/v1/workrequest/search"]
    events = {e.type: e for e in await stored_events(context)}
    # A work request has no status in Lytho's reference: what changes is `archived`.
    assert set(events) == {"lytho.task.updated", "lytho.workrequest.updated"}
    assert dict(events["lytho.task.updated"].changes) == {
        "name": {"from": "Copy review", "to": "Copy review (legal)"}
    }
    assert events["lytho.workrequest.updated"].changes["archived"]["to"] is True


async def test_a_failed_lytics_job_is_exactly_one_failed_event(
    context: Context, sandboxes: Sandboxes
) -> None:
    lytics = poller(context, "lytics")
    assert (await poll(lytics)).done
    assert await stored_events(context) == []
    running = next(j for j in sandboxes.lytics_jobs() if j["status"] == "running")
    pending = next(j for j in sandboxes.lytics_jobs() if j["status"] == "pending")
    sandboxes.set_job(running["id"], "failed", error="bigquery: permission denied")
    sandboxes.set_job(pending["id"], "running")
    await poll(lytics)
    await poll(lytics)
    events = {e.subject: e for e in await stored_events(context)}
    assert len(events) == 2
    failed, started = events[running["id"]], events[pending["id"]]
    assert failed.type == "lytics.job.failed"
    assert failed.data["error"] == "bigquery: permission denied"
    assert failed.changes["status"] == {"from": "running", "to": "failed"}
    assert started.type == "lytics.job.status_changed"
    assert started.changes["status"] == {"from": "pending", "to": "running"}


async def test_completed_jobs_and_segment_changes(context: Context, sandboxes: Sandboxes) -> None:
    lytics = poller(context, "lytics")
    await poll(lytics)
    running = next(j for j in sandboxes.lytics_jobs() if j["status"] == "running")
    sandboxes.set_job(running["id"], "complete")
    # The sandbox has no control for segment definitions: change its state directly.
    state = sandboxes.state("lytics")
    with state.core.lock:
        state.segments["high_value_users"]["filter_ql"] = "score_value > 60"
        state.segments["vip"] = {
            "id": "seg-vip",
            "slug_name": "vip",
            "name": "VIPs",
            "kind": "audience",
            "filter_ql": "score_value > 90",
            "created": "2026-11-01T00:00:00Z",
            "modified": "2026-11-01T00:00:00Z",
        }
    await poll(lytics)
    events = {e.type: e for e in await stored_events(context)}
    assert set(events) == {
        "lytics.job.completed",
        "lytics.segment.updated",
        "lytics.segment.created",
    }
    assert dict(events["lytics.segment.updated"].changes) == {
        "filter_ql": {"from": "score_value > 50", "to": "score_value > 60"}
    }
    assert events["lytics.segment.created"].data["slug_name"] == "vip"


async def test_every_emitted_type_is_declared(context: Context, sandboxes: Sandboxes) -> None:
    for name in ("lytho", "lytho_workflow", "lytics"):
        await poll(poller(context, name))
    sandboxes.set_tags(1001, "hero")
    sandboxes.edit_workflow("project", 10, status="on_hold")
    job = sandboxes.lytics_jobs()[1]
    sandboxes.set_job(job["id"], "cancelled")
    for name in ("lytho", "lytho_workflow", "lytics"):
        await poll(poller(context, name))
    declared = {t for types in poller_event_types().values() for t in types}
    emitted = {e.type for e in await stored_events(context)}
    assert emitted == {
        "lytho.asset.untagged",
        "lytho.project.status_changed",
        "lytics.job.status_changed",
    }
    assert emitted <= declared


async def test_a_job_first_seen_failed_is_created_and_failed(
    context: Context, sandboxes: Sandboxes
) -> None:
    import httpx

    from tests.pollers.support import LYTICS_TOKEN

    lytics = poller(context, "lytics")
    await poll(lytics)
    connection = sandboxes.lytics_jobs()[0]["connection_id"]
    created = httpx.post(
        f"{sandboxes.lytics}/api/job",
        json={"type": "import", "connection_id": connection},
        headers={"Authorization": LYTICS_TOKEN},
        timeout=5,
    ).json()["data"]
    sandboxes.set_job(created["id"], "failed", error="no such table")
    await poll(lytics)
    events = await stored_events(context)
    assert sorted(e.type for e in events) == ["lytics.job.created", "lytics.job.failed"]
    assert {e.subject for e in events} == {created["id"]}


async def test_campaigns_are_polled_a_status_change_and_a_new_one(
    context: Context, sandboxes: Sandboxes
) -> None:
    workflow = poller(context, "lytho_workflow")
    assert (await poll(workflow)).done
    assert await stored_events(context) == []
    sandboxes.edit_workflow("campaign", 1, status="completed")
    # The sandbox has no control to create a campaign: add one to its state directly.
    state = sandboxes.state("workflow")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with state.core.lock:
        state.objects["campaign"]["4"] = {
            "id": 4,
            "name": "Autumn 2026",
            "status": "planned",
            "startDate": "2026-09-01",
            "endDate": "2026-11-30",
            "createdAt": now,
            "modifiedAt": now,
        }
    assert (await poll(workflow)).done
    assert (await poll(workflow)).done
    events = {e.subject: e for e in await stored_events(context)}
    assert {s: e.type for s, e in events.items()} == {
        "1": "lytho.campaign.status_changed",
        "4": "lytho.campaign.created",
    }
    assert dict(events["1"].changes) == {"status": {"from": "active", "to": "completed"}}
    assert events["1"].data["name"] == "Spring 2026 launch"
    assert events["4"].data["name"] == "Autumn 2026" and not events["4"].changes
    searches = [r for r in sandboxes.requests("workflow") if r["path"] == "/v1/campaign/search"]
    assert "modifiedSince=" not in searches[0]["query"]  # the first cycle reads it all
    assert all("modifiedSince=" in r["query"] for r in searches[1:])
