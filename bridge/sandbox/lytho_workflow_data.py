"""The Lytho Workflow sandbox's seed: a campaign's work, its people and statuses (sandbox)."""

from __future__ import annotations

from typing import Any

KINDS = ("workrequest", "task", "proof", "project", "campaign")
# The statuses of each kind that has one (a work request has none).
STATUSES = {
    "task": {"todo", "in_progress", "blocked", "done"},
    "proof": {"in_review", "changes_requested", "approved", "rejected"},
    "project": {"planned", "in_progress", "on_hold", "completed"},
    "campaign": {"planned", "active", "completed"},
}


def seed(
    fields: dict[str, str],
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, dict[str, Any]]]:
    """Fresh objects by kind and id, with `id`, `modifiedAt` and `status` under the names
    `fields` gives them (the dialect's); and the users."""
    t0 = "2026-10-01T08:00:00Z"
    users = {
        "u1": {"id": 11, "firstName": "Dana", "lastName": "Reyes", "email": "dana@example.com"},
        "u2": {"id": 12, "firstName": "Sam", "lastName": "Okafor", "email": "sam@example.com"},
        "u3": {"id": 13, "firstName": "Lee", "lastName": "Chen", "email": "lee@example.com"},
    }
    objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
    # Campaigns, as "Search Campaigns" lists them; the last one has not moved for a year.
    old = "2025-12-31T18:00:00Z"
    for campaign_id, name, status, start, end, owner, modified in (
        (1, "Spring 2026 launch", "active", "2026-03-01", "2026-05-31", 11, t0),
        (2, "Summer 2026 teaser", "planned", "2026-06-01", "2026-08-31", 12, t0),
        (3, "Winter sale 2025", "completed", "2025-11-15", "2025-12-31", 13, old),
    ):
        objects["campaign"][str(campaign_id)] = {
            "id": campaign_id,
            "name": name,
            "status": status,
            "startDate": start,
            "endDate": end,
            "ownerId": owner,
            "projectIds": [10] if campaign_id == 1 else [],
            "createdAt": min(t0, modified),
            "modifiedAt": modified,
        }
    objects["project"]["10"] = {
        "id": 10,
        "name": "Spring hero visuals",
        "status": "in_progress",
        "campaignId": 1,
        "ownerId": 11,
        "dueDate": "2026-02-20",
        "priority": "high",
        "createdAt": t0,
        "modifiedAt": t0,
    }
    task_names = [
        "Brief the agency",
        "Shoot hero photo",
        "Retouch hero",
        "Social cut-downs",
        "Copy review",
        "Legal check",
        "Print files",
        "Translate copy",
        "Upload to DAM",
        "Schedule posts",
        "Brief store teams",
        "Wrap-up report",
    ]
    for n, name in enumerate(task_names):
        task_id = 100 + n
        objects["task"][str(task_id)] = {
            "id": task_id,
            "projectId": 10,
            "name": name,
            "status": "done" if n < 3 else ("in_progress" if n < 6 else "todo"),
            "assigneeId": 11 + n % 3,
            "dueDate": f"2026-02-{n + 1:02d}",
            "createdAt": t0,
            "modifiedAt": t0,
        }
    for n, (name, status) in enumerate(
        [
            ("Hero visual v3", "in_review"),
            ("Story video v1", "changes_requested"),
            ("Flyer A5 v2", "approved"),
            ("Banner set v1", "in_review"),
        ]
    ):
        proof_id = 7 + n
        objects["proof"][str(proof_id)] = {
            "id": proof_id,
            "projectId": 10,
            "taskId": 102 + n,
            "name": name,
            "status": status,
            "version": 1,
            "assetId": 1001 + n,
            "reviewerIds": [12, 13],
            "createdAt": t0,
            "modifiedAt": t0,
        }
    # A work request as Lytho's Workflow reference shows one: no status, no modification
    # time (so a search's modified-since filter cannot apply to it).
    for request_id, name, due in (
        (300, "Summer teaser visuals", "2026-05-15T17:00:00Z"),
        (301, "Spring hero visuals", "2026-02-01T17:00:00Z"),
    ):
        objects["workrequest"][str(request_id)] = {
            "accountId": 1,
            "id": request_id,
            "name": name,
            "archived": False,
            "dueDate": due,
            "completedDate": None,
        }
    names = {k: v for k, v in fields.items() if k != v}
    if names:
        for kind, found in objects.items():
            objects[kind] = {
                k: {names.get(f, f): v for f, v in o.items()} for k, o in found.items()
            }
    return objects, users


def role(obj: dict[str, Any], user_id: int) -> str:
    for key, role in (
        ("ownerId", "owner"),
        ("assigneeId", "assignee"),
        ("requesterId", "requester"),
    ):
        if obj.get(key) == user_id:
            return role
    return "reviewer"
