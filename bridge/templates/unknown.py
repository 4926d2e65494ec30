"""Values a dry run cannot know, such as an earlier step's result (templates).

A dry run (bridge/rules/dryrun.py) shows such a value as a placeholder: a string subclass
that also derives from `Unknown`. The sandbox (bridge/templates/sandbox.py) reads every
attribute and item of it as another placeholder (`steps.find.count`, even where `count`
is a method of `str`), and a comparison or arithmetic with it gives a placeholder, not an
error. Each such use is noted while `unknown_reads()` is open, so a dry run can tell that
a condition read something it cannot know.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_reads: ContextVar[list[str] | None] = ContextVar("bridge_unknown_reads", default=None)

_SYMBOLS = {
    "eq": "==",
    "ne": "!=",
    "gt": ">",
    "gteq": ">=",
    "lt": "<",
    "lteq": "<=",
    "in": "in",
    "notin": "not in",
}


class Unknown:
    """A value not known until the rule runs; `unknown_path` names it (`steps.find.count`).

    A subclass is built from a path alone (`cls(path)`), so a value derived from it (an
    attribute, an item, a comparison) is one of its own kind.
    """

    __slots__ = ()
    unknown_path: str  # set by the subclass

    def derive(self, path: str) -> Unknown:
        """The placeholder of a value computed from this one (noted as read)."""
        noted(self)
        made: Unknown = type(self)(path)  # type: ignore[call-arg]
        return made

    def read(self, name: object) -> Unknown:
        """Its attribute or item `name`: another placeholder."""
        return self.derive(f"{self.unknown_path}.{name}")

    def each(self) -> Unknown:
        """The placeholder of each of its items (`steps.proof.user_names[*]`), as a loop
        over it or a `join` of it shows them."""
        return self.derive(f"{self.unknown_path}[*]")

    def __bool__(self) -> bool:
        noted(self)
        return True

    def __neg__(self) -> Unknown:
        return self.derive(f"-{self.unknown_path}")

    def __sub__(self, other: object) -> Unknown:
        return self.derive(f"{self.unknown_path} - {_shown(other)}")

    def __rsub__(self, other: object) -> Unknown:
        return self.derive(f"{_shown(other)} - {self.unknown_path}")

    def __truediv__(self, other: object) -> Unknown:
        return self.derive(f"{self.unknown_path} / {_shown(other)}")

    def __rtruediv__(self, other: object) -> Unknown:
        return self.derive(f"{_shown(other)} / {self.unknown_path}")

    def __floordiv__(self, other: object) -> Unknown:
        return self.derive(f"{self.unknown_path} // {_shown(other)}")

    def __rfloordiv__(self, other: object) -> Unknown:
        return self.derive(f"{_shown(other)} // {self.unknown_path}")


def _shown(value: object) -> str:
    return value.unknown_path if isinstance(value, Unknown) else repr(value)


def noted(value: Unknown) -> None:
    """Note that `value` was used (while `unknown_reads()` is open)."""
    reads = _reads.get()
    if reads is not None:
        reads.append(value.unknown_path)


def combined(left: Any, op: str, right: Any) -> Unknown | None:
    """`left op right` as a placeholder when either side is unknown, else None.

    `op` is a comparison as Jinja names it (`gt`, `in`, …) or an arithmetic symbol.
    """
    unknown = left if isinstance(left, Unknown) else right
    if not isinstance(unknown, Unknown):
        return None
    noted(unknown)
    return unknown.derive(f"{_shown(left)} {_SYMBOLS.get(op, op)} {_shown(right)}")


@contextmanager
def unknown_reads() -> Iterator[list[str]]:
    """The paths of the unknown values used inside the block, in order."""
    reads: list[str] = []
    token = _reads.set(reads)
    try:
        yield reads
    finally:
        _reads.reset(token)
