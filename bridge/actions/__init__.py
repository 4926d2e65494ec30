"""Actions: what a rule's steps can do (→ clients). The registry maps `uses:` names to them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from bridge.schema import ActionSchema

if TYPE_CHECKING:
    from bridge.operate.context import Context


@dataclass(frozen=True)
class StepCall:
    """One step to perform: rendered parameters, and the template context they came from."""

    params: Mapping[str, Any]
    context: Mapping[str, Any]
    event_id: str
    rule_id: str
    step_key: str


ActionRun = Callable[["Context", StepCall], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Action:
    """An action: its declared parameters and the coroutine that performs it."""

    schema: ActionSchema
    run: ActionRun

    @property
    def name(self) -> str:
        return self.schema.name


@cache
def registry() -> dict[str, Action]:
    """Every action by its `uses:` name."""
    from bridge.actions import http, lytho, lytics, slack

    actions = (slack.POST, http.POST, *lytics.ACTIONS, *lytho.ACTIONS)
    return {action.name: action for action in actions}


def action_schemas() -> dict[str, ActionSchema]:
    """The parameter schema of every action, for loading and validating rules."""
    return {name: action.schema for name, action in registry().items()}
