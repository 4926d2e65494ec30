"""Jinja's immutable sandbox, bounded in size and work: the hooks that count and check.

The generated code of every template calls back here for loops, comparisons, literals,
`~` and block text; the sandbox's own hooks (operators, calls, attribute and item reads)
check sizes (bridge.templates.bounds) and spend the render's budget
(bridge.templates.budget).
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable, Iterable
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bridge.templates.bounds import (
    MAX_INT_BITS,
    MAX_OUTPUT,
    MAX_RANGE,
    check_format_string,
    check_size,
    checked_concat,
    is_int,
    too_big,
)
from bridge.templates.budget import Budget, current_budget, one_of, ticking, weight
from bridge.templates.unknown import Unknown, combined

_SIZED = (list, tuple, dict, set, frozenset, range, str)

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
        text = checked_concat(parts)
        budget = current_budget.get()
        if budget is not None:
            budget.spend(1 + weight(text))
            budget.built_value(text)
        return text

    @staticmethod
    def counted(iterable: Any) -> Any:
        """A loop's iterable: each pass one operation, paid up front when its length is known
        (a loop runs to its end), else as each item comes."""
        budget = current_budget.get()
        if budget is None:
            return iterable
        if isinstance(iterable, _SIZED):
            budget.spend(1 + len(iterable))
            return iterable
        return ticking(iter(iterable), budget)

    @staticmethod
    def output_buffer() -> list[str]:
        return _OutputBuffer(current_budget.get())

    @staticmethod
    def compare(left: Any, op: str, right: Any) -> Any:
        budget = current_budget.get()
        if budget is not None:
            # Comparing lists compares every item, and `in` looks through all of them.
            cost = 1 + budget.compareweight(right)
            if op != "in" and op != "notin":
                cost += budget.compareweight(left)
            budget.spend(cost)
        unknown = combined(left, op, right)  # a dry run's placeholder: no error, a placeholder
        if unknown is not None:
            return unknown
        return _COMPARE[op](left, right)

    @staticmethod
    def literal(value: Any) -> Any:
        budget = current_budget.get()
        if budget is not None:
            budget.ops += 1
            if budget.ops >= budget.next_check:
                budget.check()
            budget.built_value(value)
        return value

    # -- the sandbox's own hooks --

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        unknown = combined(left, operator, right)
        if unknown is not None:
            return unknown
        logical = None
        budget = current_budget.get()
        if operator == "**" and is_int(left) and is_int(right):
            if right > 0 and abs(left) > 1 and right * abs(left).bit_length() > MAX_INT_BITS:
                raise SecurityError("the number would exceed 4,000 digits")
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and is_int(times):
                    limit = MAX_OUTPUT if isinstance(seq, str) else MAX_RANGE
                    if len(seq) * times > limit:
                        raise too_big("the repetition")
                    if budget is not None and isinstance(seq, list | tuple) and times > 0:
                        logical = (budget.size_of(seq) - sys.getsizeof(seq)) * times
        elif operator == "%":
            check_format_string(left)
        elif (
            operator == "+"
            and budget is not None
            and isinstance(left, list | tuple)
            and isinstance(right, list | tuple)
        ):
            logical = budget.size_of(left) + budget.size_of(right)
            logical -= sys.getsizeof(left) + sys.getsizeof(right)
        if budget is not None:
            budget.spend(1 + weight(left) + weight(right))
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
            if name in _PADDING and any(is_int(a) and a > MAX_OUTPUT for a in args):
                raise too_big(f"str.{name}()")
            if name == "replace" and len(args) >= 2:
                old, new = str(args[0]), str(args[1])
                grows = (len(owner) + 1) * len(new) if not old else owner.count(old) * len(new)
                if grows > MAX_OUTPUT:
                    raise too_big("str.replace()")
        budget = current_budget.get()
        if budget is None:
            return check_size(super().call(__context, __obj, *args, **kwargs))
        cost = _CALL_BASE + weight(owner)
        for arg in args:
            cost += weight(arg)
        budget.spend(cost)
        if isinstance(__obj, LoopContext) and args:  # `loop(children)` in a recursive loop
            args = (__self.counted(args[0]), *args[1:])
        result = check_size(super().call(__context, __obj, *args, **kwargs))
        if isinstance(owner, list | tuple | dict) and name in _READERS:
            return result
        if result is not owner and not one_of(result, args):
            budget.built_value(result)
        return result

    def getattr(self, obj: Any, attribute: str) -> Any:
        budget = current_budget.get()
        if budget is not None:
            budget.ops += 1
            if budget.ops >= budget.next_check:
                budget.check()
        # Event data is JSON: `data.items` means the key "items", not dict.items().
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        if isinstance(obj, Unknown):  # `steps.find.count` in a dry run, not str.count
            return obj.read(attribute)
        if isinstance(obj, str) and attribute in ("format", "format_map"):
            return self.unsafe_undefined(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        budget = current_budget.get()
        if budget is not None:
            budget.ops += 1
            if budget.ops >= budget.next_check:
                budget.check()
        if isinstance(obj, Unknown):
            return obj.read(argument)
        return super().getitem(obj, argument)
