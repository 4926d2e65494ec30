"""What a loaded rule is: Rule, Step, Dedupe, Throttle, Digest, the condition trace (decide)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from bridge.events import Event
from bridge.rules.param_types import check_rendered
from bridge.schema import ActionSchema

if TYPE_CHECKING:
    from bridge.rules.cron import Schedule
    from bridge.templates.environment import Templates


class _Missing:
    """The value of a path that does not resolve (distinct from a JSON null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()

# Trace values are clipped so one huge field cannot bloat a stored trace.
_CLIP_TEXT = 500
_CLIP_ITEMS = 50


def clip(value: Any, depth: int = 0) -> Any:
    """A JSON-able, size-bounded copy of a value for traces."""
    if isinstance(value, str):
        return value if len(value) <= _CLIP_TEXT else value[:_CLIP_TEXT] + "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth > 6:
        return "…"
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {str(k): clip(v, depth + 1) for k, v in items[:_CLIP_ITEMS]}
        if len(items) > _CLIP_ITEMS:
            out["…"] = f"{len(items) - _CLIP_ITEMS} more"
        return out
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        out_list = [clip(v, depth + 1) for v in seq[:_CLIP_ITEMS]]
        if len(seq) > _CLIP_ITEMS:
            out_list.append(f"… {len(seq) - _CLIP_ITEMS} more")
        return out_list
    return repr(value)


@dataclass(frozen=True)
class ConditionResult:
    """One node of a condition trace: what was checked, against what, and why it failed."""

    op: str
    result: bool
    path: str | None = None
    expected: Any = MISSING
    actual: Any = MISSING
    reason: str | None = None
    children: tuple[ConditionResult, ...] = ()
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The node as JSON-able data; absent fields are left out."""
        out: dict[str, Any] = {"op": self.op, "result": self.result}
        if self.path is not None:
            out["path"] = self.path
        if self.expected is not MISSING:
            out["expected"] = clip(self.expected)
        if self.actual is not MISSING:
            out["actual"] = clip(self.actual)
        if self.reason is not None:
            out["reason"] = self.reason
        if self.line is not None:
            out["line"] = self.line
        if self.children:
            out["children"] = [c.to_dict() for c in self.children]
        return out

    def failing_all(self) -> list[ConditionResult]:
        """Every leaf (or `not`) that helped make this node false."""
        if self.result:
            return []
        if self.op == "not" or not self.children:
            return [self]
        return [leaf for child in self.children for leaf in child.failing_all()]

    def failing(self) -> ConditionResult | None:
        """The first leaf that made this node false (None when the node holds)."""
        if self.result:
            return None
        if self.op == "not":
            return self
        for child in self.children:
            found = child.failing()
            if found is not None:
                return found
        return self


class Condition(Protocol):
    """A compiled condition: a fast boolean test, and an explanation for traces."""

    line: int
    test: Callable[[Scope], bool]

    def explain(self, scope: Scope) -> ConditionResult: ...


def _now() -> datetime:
    return datetime.now(UTC)


def event_context(
    event: Event, rule: Rule | None = None, steps: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The names templates and expressions see; never environment variables or secrets.

    `vars` are the rule's variables (its file's `vars:` over rules/vars.yaml).

    The CloudEvents attributes are there as `event.type` and, as in a condition's `path:`,
    as `type` (likewise `id`, `source`, `subject`, `time`): both spellings work everywhere.
    """
    if rule is not None and rule.schedule is not None:
        event = rule.schedule.complete(event, rule.id)  # a tick written by hand (rules/cron.py)
    attributes = {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "subject": event.subject,
        "time": event.time,
    }
    return {
        **attributes,
        "event": dict(attributes),
        "data": event.data,
        "changes": {k: dict(v) for k, v in event.changes.items()},
        "rule": {"id": rule.id, "description": rule.description} if rule else {},
        "steps": dict(steps or {}),
        "now": _now,
        "vars": rule.vars if rule else {},
    }


class Scope:
    """One event being matched; the template context is built only if an expression needs it."""

    __slots__ = ("_context", "_context_rule", "event", "rule", "templates")

    def __init__(self, event: Event, templates: Templates, rule: Rule | None = None) -> None:
        self.event = event
        self.templates = templates
        self.rule = rule
        self._context: dict[str, Any] | None = None
        self._context_rule: Rule | None = None

    def context(self) -> dict[str, Any]:
        """The template context for the event and the rule being matched (built once per rule)."""
        if self._context is None or self._context_rule is not self.rule:
            self._context = event_context(self.event, self.rule)
            self._context_rule = self.rule
        return self._context


@dataclass(frozen=True)
class Dedupe:
    """At most one run per rendered `key` while the key lives (`ttl_seconds`)."""

    key: str
    ttl_seconds: int


@dataclass(frozen=True)
class Throttle:
    """At most `limit` runs per rendered `key` in any window of `per_seconds`.

    With `rollup`, a suppressed match is counted (and kept, bounded) and the next run that
    passes sees them as `throttle.suppressed` and `throttle.events`.
    """

    key: str
    limit: int
    per_seconds: int
    rollup: bool = False


@dataclass(frozen=True)
class Digest:
    """Matches collected per rendered `key` into one run: the first opens a window that
    closes after `window_seconds`, or at once when `max` matches are in."""

    key: str
    window_seconds: float
    max: int


@dataclass(frozen=True)
class Wait:
    """`for:`: a match waits `seconds`, then the conditions are checked again against the
    object's current state, and the actions run only if they still hold (jobs/waits.py)."""

    seconds: float
    text: str


@dataclass(frozen=True, eq=False)
class Step:
    """One action of a rule; `with_` holds the parameters as written (templates unrendered)."""

    index: int
    uses: str
    with_: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None
    if_: str | None = None
    attempts: int = 5
    backoff_seconds: float = 2.0
    continue_on_error: bool = False
    line: int = 0
    # How the action wants inserted values escaped (its schema's `escape`, e.g. "slack").
    escape: str | None = None
    # Its action's parameters: a rendered value of the wrong type is refused (param_types).
    schema: ActionSchema | None = field(default=None, repr=False)
    # `for_each`: the list it runs its action over (a template, or a list as written), each
    # item named `as_` in its templates, at most `max_items` of them (rules/loops.py).
    for_each: Any = None
    as_: str = "item"
    max_items: int = 100
    # A `choose` step (uses "choose"): its branches in order, and `default:` (rules/choose.py).
    branches: tuple[Branch, ...] = ()
    default: tuple[Step, ...] | None = None
    # A step inside a branch without an id is keyed `<prefix>step<index>` (`decide.0.step1`).
    prefix: str = ""

    @property
    def key(self) -> str:
        """The name its result is stored under: its `id`, or `step<index>`."""
        return self.id if self.id is not None else f"{self.prefix}step{self.index}"

    def should_run(
        self, templates: Templates, context: Mapping[str, Any], *, deadline: float | None = None
    ) -> bool:
        """Whether its `if:` holds (True without one); TemplateError if it cannot be told."""
        if self.if_ is None:
            return True
        return bool(templates.evaluate(self.if_, context, deadline=deadline))

    def render(
        self,
        templates: Templates,
        context: Mapping[str, Any],
        *,
        deadline: float | None = None,
    ) -> RenderedStep:
        """The step as it runs in `context`; TemplateError when any part cannot render.

        Skipped when its `if:` is false; else its parameters rendered, inserted values
        escaped as its action wants (`escape`), and the output of the file its `template:`
        names. The worker, rule tests and `bridge fire --dry-run` all render a step here.
        Every render stops at `deadline` (a `time.monotonic()` instant), if given.
        """
        if not self.should_run(templates, context, deadline=deadline):
            return RenderedStep(self, {}, skipped=True)
        params = templates.render_value(
            dict(self.with_), context, escape=self.escape, deadline=deadline
        )
        item = self.as_ if "loop" in context else ""  # a loop item's run (rules/loops.py)
        check_rendered(self.schema, self.with_, params, context, item)
        output = None
        if "template" in params:
            output = templates.render_file(str(params["template"]), context, deadline=deadline)
        return RenderedStep(self, params, output=output)


@dataclass(frozen=True, eq=False)
class Branch:
    """One branch of a `choose` step: its `when` (as compiled, and as written) and steps."""

    when: Condition
    source: Any
    steps: tuple[Step, ...]
    line: int = 0


@dataclass(frozen=True)
class RenderedStep:
    """A step rendered for one event: what its action is given, or skipped by its `if:`."""

    step: Step
    params: dict[str, Any]
    skipped: bool = False
    # The output of its `template:` file (parsed JSON for `*.json.j2`), when it names one.
    output: Any = None


def _always(scope: Scope) -> bool:
    return True


@dataclass(frozen=True, eq=False)
class Rule:
    """A loaded, validated rule with its conditions compiled."""

    id: str
    on: tuple[str, ...]
    when: Condition
    actions: tuple[Step, ...] = ()
    description: str = ""
    enabled: bool = True
    priority: int = 0
    stop: bool = False
    dedupe: Dedupe | None = None
    throttle: Throttle | None = None
    digest: Digest | None = None
    wait: Wait | None = None  # `for:`
    # `on: {schedule: …}`: its ticks are `bridge.schedule` events for it alone (rules/cron.py).
    schedule: Schedule | None = None
    file: str = ""
    line: int = 0
    # `vars:` of its file over rules/vars.yaml, resolved at load; never secrets.
    vars: Mapping[str, Any] = field(default_factory=dict)
    # The compiled test of `when` bound once, so matching calls one function per rule.
    matches: Callable[[Scope], bool] = field(default=_always, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "matches", self.when.test)

    def __repr__(self) -> str:
        return f"Rule({self.id!r}, on={list(self.on)}, file={self.file!r}:{self.line})"
