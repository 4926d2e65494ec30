"""Bounds on what a template may build and do: Jinja's immutable sandbox, limited.

Sizes: a small template must not build a huge value. ``*``, ``**``, ``%``, ``+``, ``~``,
padding, ``replace``, ``range`` and ``namespace`` are checked on the way, and every result
is held to 64 KiB (strings) or 10,000 items (lists).

Budget: one render (one `Templates.render_value`, `render_file` or `evaluate` call) may
spend at most `MAX_OPERATIONS` operations (a loop pass, an attribute or item read, a call,
a filter or test, an operator, a literal; work on a big value counts in proportion to its
size), may run until its deadline (`MAX_SECONDS` after it began, unless the caller gives
one), and may build at most `MAX_BUILT` bytes in all (strings, lists and dicts it makes,
and text buffered in `{% set %}` blocks and macros), with no single value larger than that
counting every item of its lists, shared or not. The counting is cooperative: the
sandbox's own hooks count and check, so nothing runs beyond one step between two checks.
Used by bridge.templates.environment.
"""

from __future__ import annotations

import functools
import operator
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

MAX_OUTPUT = 64 * 1024  # bytes of rendered output; characters of any string built on the way
MAX_RANGE = 10_000  # items of range(); Jinja's own sandbox allows 100,000
# Python refuses to print an integer of more than 4,300 digits (about 14,280 bits).
MAX_INT_BITS = 14_000

# The budget of one render (see the module's docstring).
MAX_OPERATIONS = 1_000_000
MAX_SECONDS = 2.0  # when the caller gives no deadline
MAX_BUILT = 32 * 1024 * 1024  # bytes

_CONTAINERS = (list, tuple, dict, set, frozenset)
_SIZED = (list, tuple, dict, set, frozenset, range, str)
# A %-format width or precision of a million or more, or taken from the arguments (`*`).
_WIDTH = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(?:\*|\d{6,}|\d*\.(?:\*|\d{6,}))")
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

    def compare_weight(self, value: Any) -> int:
        """Operations a comparison with `value` is worth beyond the first: by its size."""
        if not isinstance(value, _CONTAINERS):
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
        if not isinstance(value, _CONTAINERS):
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
            elif isinstance(item, _CONTAINERS):
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


_active: ContextVar[Budget | None] = ContextVar("bridge_template_budget", default=None)


def start_budget(budget: Budget) -> Any:
    """Make `budget` the one the sandbox counts against; returns a token for `end_budget`."""
    return _active.set(budget)


def end_budget(token: Any) -> None:
    _active.reset(token)


def _weight(value: Any) -> int:
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
    """Like `_weight`, for a filter's argument: filters walk lists in Python, item by item."""
    if isinstance(value, str):
        return len(value) >> 8
    if isinstance(value, _CONTAINERS):
        return len(value) << 1 if per_item else len(value) >> 2
    return 0


def _ticking(items: Iterator[Any], budget: Budget) -> Iterator[Any]:
    for item in items:
        budget.ops += 1
        if budget.ops >= budget.next_check:
            budget.check()
        yield item


def bounded_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise OverflowError(f"range of {len(rng)} items; the sandbox allows {MAX_RANGE}")
    return rng


def _too_big(what: str) -> SecurityError:
    return SecurityError(f"{what} would exceed the {MAX_OUTPUT // 1024} KiB limit")


def check_size(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise SecurityError("the number would exceed 4,000 digits")
    if isinstance(value, str) and len(value) > MAX_OUTPUT:
        raise _too_big("the string")
    if isinstance(value, list | tuple) and len(value) > MAX_RANGE:
        raise _too_big("the list")
    return value


def _check_format(fmt: Any) -> None:
    if isinstance(fmt, str) and _WIDTH.search(fmt):
        raise SecurityError("format widths of a million or more (or *) are not allowed")


def _checked_concat(parts: tuple[Any, ...]) -> str:
    text = "".join(str(p) for p in parts)
    return str(check_size(text))


class BoundedNamespace(Namespace):
    """`namespace()` whose attributes cannot hold oversized strings."""

    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(name, check_size(value))


_COUNTED = "counted"  # BoundedSandbox.counted, the wrapper of every loop's iterable


def _is_counted(node: nodes.Node) -> bool:
    return (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.EnvironmentAttribute)
        and node.node.name == _COUNTED
    )


class _OutputBuffer(list[str]):
    """The text of a `{% set %}` block, a macro or a `{% filter %}` block, counted as built."""

    __slots__ = ("budget",)

    def __init__(self, budget: Budget | None) -> None:
        super().__init__()
        self.budget = budget

    def append(self, text: str) -> None:
        if self.budget is not None:
            self.budget.charge(len(text))
        super().append(text)

    def extend(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.append(text)


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with the sandbox's bounds and budget written in.

    `~` goes through a size check, loops count their passes, literals (`[…]`, `(…)`,
    `{…}`) count what they build, and block text is buffered in a counting list.
    """

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat_checked((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_Call(self, node: nodes.Call, frame: Frame, forward_caller: bool = False) -> None:
        if _is_counted(node):  # written by BoundedSandbox._parse around a loop's iterable
            self.write(f"environment.{_COUNTED}(")
            self.visit(node.args[0], frame)
            self.write(")")
            return
        super().visit_Call(node, frame, forward_caller=forward_caller)

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.output_buffer()")

    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:
        # `a < b < c` becomes `compare(a, "lt", b) and compare(b, "lt", c)`: the same
        # result; only `b` may be read twice.
        self.write("(")
        left: nodes.Expr = node.expr
        for index, operand in enumerate(node.ops):
            if index:
                self.write(" and ")
            self.write("environment.compare(")
            self.visit(left, frame)
            self.write(f", {operand.op!r}, ")
            self.visit(operand.expr, frame)
            self.write(")")
            left = operand.expr
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self.write("environment.literal(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self.write("environment.literal(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # an assignment target: `{% for a, b in … %}`
            super().visit_Tuple(node, frame)
            return
        self.write("environment.literal(")
        super().visit_Tuple(node, frame)
        self.write(")")


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gteq": operator.ge,
    "lt": operator.lt,
    "lteq": operator.le,
    "in": lambda left, right: left in right,
    "notin": lambda left, right: left not in right,
}
_CALL_BASE = 2  # a call costs more than a read: a macro or method runs
_PADDING = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs"})
# Methods of the event's own lists and dicts that hand back what is already there.
_READERS = frozenset({"get", "items", "keys", "values", "index", "count"})


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, bounded in size and work, reading dict keys before methods."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _CodeGenerator

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            if not _is_counted(loop.iter):
                counter = nodes.EnvironmentAttribute(_COUNTED, lineno=loop.iter.lineno)
                loop.iter = nodes.Call(counter, [loop.iter], [], None, None, lineno=counter.lineno)
        return tree

    # -- hooks the generated code calls --

    @staticmethod
    def concat_checked(parts: tuple[Any, ...]) -> str:
        text = _checked_concat(parts)
        budget = _active.get()
        if budget is not None:
            budget.spend(1 + _weight(text))
            budget.built_value(text)
        return text

    @staticmethod
    def counted(iterable: Any) -> Any:
        """A loop's iterable: each pass one operation, paid up front when its length is known
        (a loop runs to its end), else as each item comes."""
        budget = _active.get()
        if budget is None:
            return iterable
        if isinstance(iterable, _SIZED):
            budget.spend(1 + len(iterable))
            return iterable
        return _ticking(iter(iterable), budget)

    @staticmethod
    def output_buffer() -> list[str]:
        return _OutputBuffer(_active.get())

    @staticmethod
    def compare(left: Any, op: str, right: Any) -> Any:
        budget = _active.get()
        if budget is not None:
            # Comparing lists compares every item, and `in` looks through all of them.
            cost = 1 + budget.compare_weight(right)
            if op != "in" and op != "notin":
                cost += budget.compare_weight(left)
            budget.spend(cost)
        return _COMPARE[op](left, right)

    @staticmethod
    def literal(value: Any) -> Any:
        budget = _active.get()
        if budget is not None:
            budget.ops += 1
            if budget.ops >= budget.next_check:
                budget.check()
            budget.built_value(value)
        return value

    # -- the sandbox's own hooks --

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        logical = None
        budget = _active.get()
        if operator == "**" and _is_int(left) and _is_int(right):
            if right > 0 and abs(left) > 1 and right * abs(left).bit_length() > MAX_INT_BITS:
                raise SecurityError("the number would exceed 4,000 digits")
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and _is_int(times):
                    limit = MAX_OUTPUT if isinstance(seq, str) else MAX_RANGE
                    if len(seq) * times > limit:
                        raise _too_big("the repetition")
                    if budget is not None and isinstance(seq, list | tuple) and times > 0:
                        logical = (budget.size_of(seq) - sys.getsizeof(seq)) * times
        elif operator == "%":
            _check_format(left)
        elif (
            operator == "+"
            and budget is not None
            and isinstance(left, list | tuple)
            and isinstance(right, list | tuple)
        ):
            logical = budget.size_of(left) + budget.size_of(right)
            logical -= sys.getsizeof(left) + sys.getsizeof(right)
        if budget is not None:
            budget.spend(1 + _weight(left) + _weight(right))
        result = check_size(super().call_binop(context, operator, left, right))
        if budget is not None and result is not left and result is not right:
            if logical is not None:
                logical += sys.getsizeof(result)
            budget.built_value(result, logical)
        return result

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            if name in _PADDING and any(_is_int(a) and a > MAX_OUTPUT for a in args):
                raise _too_big(f"str.{name}()")
            if name == "replace" and len(args) >= 2:
                old, new = str(args[0]), str(args[1])
                grows = (len(owner) + 1) * len(new) if not old else owner.count(old) * len(new)
                if grows > MAX_OUTPUT:
                    raise _too_big("str.replace()")
        budget = _active.get()
        if budget is None:
            return check_size(super().call(__context, __obj, *args, **kwargs))
        cost = _CALL_BASE + _weight(owner)
        for arg in args:
            cost += _weight(arg)
        budget.spend(cost)
        if isinstance(__obj, LoopContext) and args:  # `loop(children)` in a recursive loop
            args = (__self.counted(args[0]), *args[1:])
        result = check_size(super().call(__context, __obj, *args, **kwargs))
        if isinstance(owner, list | tuple | dict) and name in _READERS:
            return result
        if result is not owner and not _one_of(result, args):
            budget.built_value(result)
        return result

    def getattr(self, obj: Any, attribute: str) -> Any:
        budget = _active.get()
        if budget is not None:
            budget.ops += 1
            if budget.ops >= budget.next_check:
                budget.check()
        # Event data is JSON: `data.items` means the key "items", not dict.items().
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        if isinstance(obj, str) and attribute in ("format", "format_map"):
            return self.unsafe_undefined(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        budget = _active.get()
        if budget is not None:
            budget.ops += 1
            if budget.ops >= budget.next_check:
                budget.check()
        return super().getitem(obj, argument)


def _one_of(value: Any, args: tuple[Any, ...]) -> bool:
    """Whether `value` is one of `args` itself (handed back, not built)."""
    for arg in args:  # noqa: SIM110 - a plain loop: no generator on every call
        if value is arg:
            return True
    return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_WIDTH_FILTERS = frozenset({"do_center", "do_indent", "do_truncate", "do_wordwrap"})


def bounded_filter(func: Callable[..., Any], *, check_format: bool = False) -> Callable[..., Any]:
    # functools.wraps also copies Jinja's pass_context/pass_environment marker.
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if check_format and args:
            _check_format(args[0])
        widths = args[1:]
        if func.__name__ in _WIDTH_FILTERS and any(_is_int(a) and a > MAX_OUTPUT for a in widths):
            raise _too_big(f"the {func.__name__[3:]} filter")
        if func.__name__ == "do_replace" and len(args) >= 4:
            source, old, new = str(args[1]), str(args[2]), str(args[3])
            if (source.count(old) if old else len(source) + 1) * len(new) > MAX_OUTPUT:
                raise _too_big("the replace filter")
        return check_size(func(*args, **kwargs))

    return functools.wraps(func)(bounded)


def budgeted_filter(func: Callable[..., Any], name: str) -> Callable[..., Any]:
    """The filter `name`, each use of which counts against the render's budget, and what
    it builds (unless it hands back what it was given)."""
    constant = name in _CONSTANT_FILTERS
    picks = name in _PICKING_FILTERS
    per_item = name in _PER_ITEM_FILTERS

    def budgeted(*args: Any, **kwargs: Any) -> Any:
        budget = _active.get()
        if budget is None:
            return func(*args, **kwargs)
        cost = _FILTER_BASE
        if not constant:
            for arg in args:
                cost += _filter_weight(arg, per_item)
        budget.spend(cost)
        result = func(*args, **kwargs)
        if not picks and not _one_of(result, args):
            budget.spend(_weight(result))
            budget.built_value(result)
        return result

    return functools.wraps(func)(budgeted)


def budgeted_test(func: Any) -> Any:
    """A test (`is odd`, `is defined` …) that counts one operation each time it runs."""

    def budgeted(*args: Any, **kwargs: Any) -> Any:
        budget = _active.get()
        if budget is not None:
            budget.ops += 1
            if budget.ops >= budget.next_check:
                budget.check()
        return func(*args, **kwargs)

    return functools.wraps(func)(budgeted)
