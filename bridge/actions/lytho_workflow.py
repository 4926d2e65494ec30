"""lytho_workflow.get: one Lytho Workflow object as a step, with the users involved in it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from bridge.actions.action import Action, ActionDeps, StepCall
from bridge.actions.lookups import one_id, prefixed
from bridge.clients.lytho_workflow import LythoWorkflowClient
from bridge.errors import ClientError, PermanentError
from bridge.schema import ActionSchema, Param

ID = ("string", "integer")
WORKFLOW_KINDS: Final = ("proof", "task", "workrequest", "project")

WORKFLOW_GET = ActionSchema(
    name="lytho_workflow.get",
    description="Read one Lytho Workflow proof, task, work request or project, with the "
    "users involved in it (so a message can name them).",
    params={
        "kind": Param("kind", ("string",), required=True, choices=WORKFLOW_KINDS),
        "id": Param("id", ID, required=True),
        "with_users": Param("with_users", ("boolean",), description="default true"),
    },
    results={"users": "array", "user_names": "array"},
)


def workflow_client(deps: ActionDeps) -> LythoWorkflowClient:
    found = deps.lytho_workflow
    if found is None:
        raise PermanentError(
            "lytho_workflow.get needs LYTHO_CLIENT_ID, LYTHO_CLIENT_SECRET and LYTHO_TOKEN_URL "
            "to be set"
        )
    return found


def user_name(user: Mapping[str, Any]) -> str:
    """A user as a message names them: first and last name, else the e-mail, else the id."""
    parts = [str(user.get(k) or "").strip() for k in ("firstName", "lastName")]
    return " ".join(p for p in parts if p) or str(user.get("email") or user.get("id") or "")


async def workflow_get(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
    action = "lytho_workflow.get"
    kind = call.params["kind"]
    if kind not in WORKFLOW_KINDS:
        raise PermanentError(
            f"{action} 'kind' is {kind!r}; expected one of {', '.join(WORKFLOW_KINDS)}"
        )
    item_id = one_id(call.params["id"], "id")
    with_users = call.params.get("with_users", True)
    if not isinstance(with_users, bool):
        raise PermanentError(f"{action} 'with_users' must be true or false")
    workflow = workflow_client(deps)
    try:
        found = await workflow.get(kind, item_id)
        if not with_users:
            return found
        users = await workflow.users(kind, item_id)
    except ClientError as exc:
        raise prefixed(action, exc) from None
    return {**found, "users": users, "user_names": [user_name(u) for u in users]}


GET = Action(WORKFLOW_GET, workflow_get)
