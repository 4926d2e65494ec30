"""Actions: what a rule's steps can do (→ clients). The registry maps `uses:` names to them.

An action is given what it uses as an `ActionDeps` (its clients, the shared rate limiter,
the guarded outbound client), built once per worker by the composition root
(bridge/operate/context.py), and the step to perform as a `StepCall`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from bridge.actions.action import Action, ActionDeps, ActionRun, StepCall
from bridge.actions.reads import RunReads, with_reads
from bridge.schema import ActionSchema


@cache
def registry() -> dict[str, Action]:
    """Every action by its `uses:` name."""
    from bridge.actions import http, http_request, lookups, lytho, lytho_workflow, lytics, slack

    actions = (
        slack.POST,
        http.POST,
        http_request.REQUEST,
        *lytics.ACTIONS,
        *lytho.ACTIONS,
        *lookups.ACTIONS,
        lytho_workflow.GET,
    )
    # Look-ups answer from their run's reads; writes to their services forget them.
    return {action.name: with_reads(action) for action in actions}


def traced_params(uses: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters as a step's trace shows them: the query of lytho.upload_asset's `url`
    hidden (a signed download link's signature or token is not for the dashboard)."""
    from bridge.actions.lytho import traced_url

    url = params.get("url") if uses == "lytho.upload_asset" else None
    return {**params, "url": traced_url(url)} if isinstance(url, str) else params


def action_schemas() -> dict[str, ActionSchema]:
    """The parameter schema of every action, for loading and validating rules."""
    return {name: action.schema for name, action in registry().items()}


__all__ = [
    "Action",
    "ActionDeps",
    "ActionRun",
    "RunReads",
    "StepCall",
    "action_schemas",
    "registry",
    "traced_params",
]
