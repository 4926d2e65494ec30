"""Actions: what a rule's steps can do (→ clients). The registry maps `uses:` names to them.

An action is given what it uses as an `ActionDeps` (its clients, the shared rate limiter,
the guarded outbound client), built once per worker by the composition root
(bridge/operate/context.py), and the step to perform as a `StepCall`.
"""

from __future__ import annotations

from functools import cache

from bridge.actions.action import Action, ActionDeps, ActionRun, StepCall
from bridge.schema import ActionSchema


@cache
def registry() -> dict[str, Action]:
    """Every action by its `uses:` name."""
    from bridge.actions import http, lytho, lytics, slack

    actions = (slack.POST, http.POST, *lytics.ACTIONS, *lytho.ACTIONS)
    return {action.name: action for action in actions}


def action_schemas() -> dict[str, ActionSchema]:
    """The parameter schema of every action, for loading and validating rules."""
    return {name: action.schema for name, action in registry().items()}


__all__ = ["Action", "ActionDeps", "ActionRun", "StepCall", "action_schemas", "registry"]
