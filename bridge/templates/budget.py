"""The budget of one render: operations, time and bytes built, counted as it runs.

One render (one `Templates.render_value`, `render_file` or `evaluate` call) may spend at
most `MAX_OPERATIONS` operations (a loop pass, an attribute or item read, a call, a filter
or test, an operator, a literal; work on a big value counts in proportion to its size), may
run until its deadline (`MAX_SECONDS` after it began, unless the caller gives one), and may
build at most `MAX_BUILT` bytes in all (strings, lists and dicts it makes, and text
buffered in `{% set %}` blocks and macros), with no single value larger than that counting
every item of its lists, shared or not. The counting is cooperative: the sandbox's own
hooks (bridge.templates.sandbox) count and check, so nothing runs beyond one step between
two checks.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

# The budget of one render (see the module's docstring).
MAX_OPERATIONS = 1_000_000
MAX_SECONDS = 2.0  # when the caller gives no deadline
MAX_BUILT = 32 * 1024 * 1024  # bytes

CONTAINERS = (list, tuple, dict, set, frozenset)
# Operations between two looks at the clock: one operation is a few microseconds at most
# (work on big values counts in proportion), so a render stops within milliseconds of its
# deadline.
_CHECK_EVERY = 64
_ADVICE = "loop over less, or do less in each pass"


def _bytes(count: int) -> str:
    """`32 MiB`, `512 KiB`, `100 bytes`."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size and count % size == 0:
            return f"{count // size:,} {unit}"
    return f"{count:,} bytes"


class BudgetExceeded(Exception):
    """A render went over its budget; `kind` is "operations", "time" or "memory"."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class Budget:
    """What one render may still spend: operations, time and bytes built."""

    __slots__ = (
        "_sizes",
        "began",
        "built",
        "deadline",
        "max_built",
        "max_ops",
        "next_check",
        "ops",
    )

    def __init__(
        self,
        deadline: float,
        began: float,
        max_ops: int = MAX_OPERATIONS,
        max_built: int = MAX_BUILT,
        check_first: bool = True,
    ) -> None:
        # Positional and plain: one is made for every render.
        self.ops = 0
        # The first operation looks at the clock when the deadline may already be near.
        self.next_check = 1 if check_first or max_ops < _CHECK_EVERY else _CHECK_EVERY
        self.built = 0
        self.max_ops = max_ops
        self.max_built = max_built
        self.deadline = deadline
        self.began = began
        # Logical sizes of the containers met so far, by id (each kept alive while here).
        self._sizes: dict[int, tuple[Any, int]] = {}

    @property
    def seconds(self) -> float:
        """The time the render was given."""
        return max(0.0, self.deadline - self.began)

    def spend(self, ops: int = 1) -> None:
        self.ops += ops
        if self.ops >= self.next_check:
            self.check()

    def check(self) -> None:
        if self.ops > self.max_ops:
            raise BudgetExceeded(
                f"exceeded its budget of {self.max_ops:,} operations; {_ADVICE}", "operations"
            )
        if time.monotonic() > self.deadline:
            done = f"{self.ops:,} operation{'' if self.ops == 1 else 's'} done"
            raise BudgetExceeded(
                f"exceeded its budget of {self.seconds:.3g} s ({done}); {_ADVICE}", "time"
            )
        self.next_check = min(self.ops + _CHECK_EVERY, self.max_ops + 1)

    def _over_memory(self, what: str) -> BudgetExceeded:
        return BudgetExceeded(
            f"exceeded its budget of {_bytes(self.max_built)} {what}; "
            "build smaller strings and lists",
            "memory",
        )

    def charge(self, nbytes: int) -> None:
        """Count `nbytes` more built (text kept in a buffer, a new string or list)."""
        self.built += nbytes
        if self.built > self.max_built:
            raise self._over_memory("of values built (strings, lists, dicts)")

    def built_value(self, value: Any, logical: int | None = None) -> Any:
        """Count a value the render has just made; `logical` is its size if already known."""
        if isinstance(value, str):
            self.charge(sys.getsizeof(value))
        elif isinstance(value, list | tuple | dict | set | frozenset):
            self.charge(sys.getsizeof(value))
            if value:
                size = self.size_of(value) if logical is None else self._remember(value, logical)
                if size > self.max_built:
                    raise self._over_memory("in one value (every item of its lists counted)")
        elif isinstance(value, int) and value.bit_length() > 640:
            self.charge(sys.getsizeof(value))
        return value

    def _remember(self, value: Any, size: int) -> int:
        if size >= 1024:
            self._sizes[id(value)] = (value, size)
        return size

    def compareweight(self, value: Any) -> int:
        """Operations a comparison with `value` is worth beyond the first: by its size."""
        if not isinstance(value, CONTAINERS):
            return len(value) >> 12 if isinstance(value, str) else 0
        known = self._sizes.get(id(value))
        if known is not None and known[0] is value:
            return int(known[1]) >> 12
        # Not met before: event data (a tree, walked once here) or a small value built
        # here (under 1 KiB in all, else it would be known).
        return self.size_of(value) >> 12 if len(value) >= 64 else 0

    def size_of(self, value: Any) -> int:
        """Bytes of `value` with every item counted, however often it is shared.

        Walked without recursion (event data may nest deeply); containers met before are
        looked up, not walked again. The walk stops once past the budget: the answer is
        then "too big", whatever the rest.
        """
        if not isinstance(value, CONTAINERS):
            return sys.getsizeof(value) if isinstance(value, str | int | float) else 0
        known = self._sizes.get(id(value))
        if known is not None and known[0] is value:
            return int(known[1])
        total = 0
        pending: list[Any] = [value]
        while pending and total <= self.max_built:
            item = pending.pop()
            if isinstance(item, str | int | float):
                total += sys.getsizeof(item)
            elif isinstance(item, CONTAINERS):
                known = self._sizes.get(id(item)) if item is not value else None
                if known is not None and known[0] is item:
                    total += known[1]
                    continue
                total += sys.getsizeof(item)
                if isinstance(item, dict):
                    pending.extend(item.keys())
                    pending.extend(item.values())
                else:
                    pending.extend(item)
        return self._remember(value, total)


current_budget: ContextVar[Budget | None] = ContextVar("bridge_template_budget", default=None)


def start_budget(budget: Budget) -> Any:
    """Make `budget` the one the sandbox counts against; returns a token for `end_budget`."""
    return current_budget.set(budget)


def end_budget(token: Any) -> None:
    current_budget.reset(token)


def weight(value: Any) -> int:
    """Operations that work on `value` is worth, beyond the first: by its size."""
    if isinstance(value, str):
        return len(value) >> 8
    if isinstance(value, list | tuple | dict | set | frozenset):
        return len(value) >> 4
    return 0


# What a filter costs, by its name: two operations a call, and in proportion to the size
# of what it is given: a quarter of an operation an item, or two for those that call
# Python code for each item (a sort's key, a group's attribute).
_FILTER_BASE = 2
_CONSTANT_FILTERS = frozenset(
    {"abs", "attr", "bool", "count", "d", "default", "first", "float", "int", "length"}
    | {"random", "round", "safe", "string"}
)
_PER_ITEM_FILTERS = frozenset(
    {"batch", "dictsort", "groupby", "max", "min", "slice", "sort", "sum", "unique"}
)
# Filters that hand back a value they were given, or a part of it: nothing is built.
_PICKING_FILTERS = frozenset({"attr", "d", "default", "first", "last", "max", "min", "random"})


def _filter_weight(value: Any, per_item: bool) -> int:
    """Like `weight`, for a filter's argument: filters walk lists in Python, item by item."""
    if isinstance(value, str):
        return len(value) >> 8
    if isinstance(value, CONTAINERS):
        return len(value) << 1 if per_item else len(value) >> 2
    return 0


def ticking(items: Iterator[Any], budget: Budget) -> Iterator[Any]:
    """The items, one operation each as they come (an iterable of unknown length)."""
    for item in items:
        budget.ops += 1
        if budget.ops >= budget.next_check:
            budget.check()
        yield item


def one_of(value: Any, args: tuple[Any, ...]) -> bool:
    """Whether `value` is one of `args` itself (handed back, not built)."""
    for arg in args:  # noqa: SIM110 - a plain loop: no generator on every call
        if value is arg:
            return True
    return False


def budgeted_filter(func: Callable[..., Any], name: str) -> Callable[..., Any]:
    """The filter `name`, each use of which counts against the render's budget, and what
    it builds (unless it hands back what it was given)."""
    constant = name in _CONSTANT_FILTERS
    picks = name in _PICKING_FILTERS
    per_item = name in _PER_ITEM_FILTERS

    def budgeted(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget.get()
        if budget is None:
            return func(*args, **kwargs)
        cost = _FILTER_BASE
        if not constant:
            for arg in args:
                cost += _filter_weight(arg, per_item)
        budget.spend(cost)
        result = func(*args, **kwargs)
        if not picks and not one_of(result, args):
            budget.spend(weight(result))
            budget.built_value(result)
        return result

    return functools.wraps(func)(budgeted)


def budgeted_test(func: Any) -> Any:
    """A test (`is odd`, `is defined` …) that counts one operation each time it runs."""

    def budgeted(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget.get()
        if budget is not None:
            budget.ops += 1
            if budget.ops >= budget.next_check:
                budget.check()
        return func(*args, **kwargs)

    return functools.wraps(func)(budgeted)
