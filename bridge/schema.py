"""Parameter schemas that actions declare and `bridge validate` checks rules against."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# JSON type names a parameter may accept ("array" reads "list" in messages and docs);
# templated values are checked after rendering too (bridge/rules/param_types.py).
TYPE_NAMES = ("string", "number", "integer", "boolean", "object", "array", "any")


@dataclass(frozen=True)
class Param:
    """One parameter of an action."""

    name: str
    types: tuple[str, ...] = ("string",)
    required: bool = False
    description: str = ""
    choices: tuple[Any, ...] = ()
    # Bounds of a number (both included), checked on a literal value by `bridge validate`.
    minimum: int | None = None
    maximum: int | None = None

    def out_of_range(self, value: Any) -> bool:
        """Whether a number lies outside the parameter's bounds."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        low = self.minimum is not None and value < self.minimum
        return low or (self.maximum is not None and value > self.maximum)

    def bounds(self) -> str:
        """`from 1 to 1000`, `of at least 1` or `of at most 1000`."""
        if self.minimum is not None and self.maximum is not None:
            return f"from {self.minimum} to {self.maximum}"
        if self.minimum is not None:
            return f"of at least {self.minimum}"
        return f"of at most {self.maximum}"

    def __post_init__(self) -> None:
        unknown = [t for t in self.types if t not in TYPE_NAMES]
        if not self.types or unknown:
            raise ValueError(
                f"parameter {self.name!r} has types {self.types!r}; each must be one of "
                + ", ".join(TYPE_NAMES)
            )


@dataclass(frozen=True)
class ActionSchema:
    """What an action accepts: its parameters and the rules between them."""

    name: str
    description: str
    params: Mapping[str, Param] = field(default_factory=dict)
    # Groups of which at least one parameter must be given, e.g. (("text", "template", "blocks"),)
    one_of: tuple[tuple[str, ...], ...] = ()
    # Groups of parameters that do not go together, e.g. (("thread_key", "thread_ts"),)
    exclusive: tuple[tuple[str, ...], ...] = ()
    # How values inserted into the parameters are escaped: "slack" for mrkdwn, or None.
    escape: str | None = None
    # The JSON types of fields of the step's result (`steps.<id>.<field>`), where fixed:
    # `bridge validate` checks a later step's `{{ steps.find.assets }}` against them.
    results: Mapping[str, str] = field(default_factory=dict)

    def problems(self, given: Mapping[str, Any]) -> list[str]:
        """What is wrong with `given` before rendering: unknown, missing, or badly typed keys."""
        found: list[str] = []
        for key in given:
            if key not in self.params:
                found.append(
                    f"unknown parameter {key!r} for {self.name}; expected one of "
                    + ", ".join(sorted(self.params))
                )
        for param in self.params.values():
            if param.required and param.name not in given:
                found.append(f"{self.name} needs parameter {param.name!r}")
        for group in self.one_of:
            if not any(name in given for name in group):
                found.append(f"{self.name} needs one of " + ", ".join(repr(g) for g in group))
        for group in self.exclusive:
            both = [name for name in group if name in given]
            if len(both) > 1:
                found.append(f"{self.name} takes {' or '.join(map(repr, both))}, not both")
        return found


def type_name(value: Any) -> str:
    """The JSON type name of a value."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return "null" if value is None else type(value).__name__


def accepts(param: Param, value: Any) -> bool:
    """Whether a rendered value fits the parameter's types."""
    actual = type_name(value)
    if "any" in param.types or actual in param.types:
        return True
    return actual == "integer" and "number" in param.types
