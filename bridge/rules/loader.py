"""Load and validate rule files into a RuleSet, reporting every problem at once (rules → decide)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bridge.errors import Problem, RuleError
from bridge.rules.checker import DURATION_HINT, EventTypes, parse_duration, suggest
from bridge.rules.cron import EXAMPLE, SCHEDULE_EVENT, Schedule
from bridge.rules.engine import RuleSet, is_glob
from bridge.rules.files import display_name, rule_files, scan_rule_files
from bridge.rules.model import Dedupe, Digest, Rule, Throttle
from bridge.rules.source import Node, parse
from bridge.rules.steps import StepChecker
from bridge.rules.triggers import check_schedule, is_schedule
from bridge.rules.vars import project_vars, read_file_vars
from bridge.rules.waits import check_for
from bridge.rules.when import WhenChecker
from bridge.schema import ActionSchema, type_name
from bridge.templates.environment import Templates

__all__ = [
    "DURATION_HINT",
    "EventTypes",
    "FileChecker",
    "RuleCheck",
    "check_rules",
    "display_name",
    "load_rules",
    "parse_duration",
    "rule_files",
    "scan_rule_files",
    "suggest",
]

RULE_KEYS = (
    "id",
    "description",
    "enabled",
    "priority",
    "stop",
    "on",
    "when",
    "dedupe",
    "throttle",
    "digest",
    "for",
    "actions",
)
DEDUPE_KEYS = ("key", "ttl")
THROTTLE_KEYS = ("key", "limit", "per", "rollup")
DIGEST_KEYS = ("key", "window", "max")
# A window is a deferred job in the queue, where a job lives a day: a digest waits at most that.
DIGEST_WINDOW_MAX = 24 * 3600
DIGEST_MAX = 1000
_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class RuleCheck:
    """The outcome of checking a rules directory: the rule set when valid, every problem."""

    ruleset: RuleSet | None
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def load_rules(
    rules_dir: Path,
    *,
    templates: Templates,
    actions: Mapping[str, ActionSchema],
    event_types: EventTypes | None = None,
) -> RuleSet:
    """Every rule under `rules_dir`; RuleError listing every problem of every file otherwise.

    Warnings (such as an `on:` type that no source emits) do not stop loading; the rule
    set carries them in `warnings`.
    """
    checked = check_rules(rules_dir, templates=templates, actions=actions, event_types=event_types)
    if checked.ruleset is None:
        raise RuleError(checked.errors)
    return checked.ruleset


def check_rules(
    rules_dir: Path,
    *,
    templates: Templates,
    actions: Mapping[str, ActionSchema],
    event_types: EventTypes | None = None,
) -> RuleCheck:
    """Check every rule file: errors and warnings with their places, the RuleSet if valid."""
    if not rules_dir.is_dir():
        name = display_name(rules_dir)
        return RuleCheck(None, [Problem(name, 1, 1, f"rules directory {name!r} does not exist")])
    paths, problems = scan_rule_files(rules_dir)
    project = project_vars(rules_dir)  # rules/vars.yaml
    problems.extend(project.problems)
    warnings: list[Problem] = []
    rules: list[Rule] = []
    first_seen: dict[str, str] = {}  # rule id -> "file:line:column" of its first definition
    for path in paths:
        checker = FileChecker(
            display_name(path), templates=templates, actions=actions, event_types=event_types
        )
        checker.vars = project.values
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.reason if isinstance(exc, UnicodeDecodeError) else exc.strerror
            problems.append(Problem(checker.file, 1, 1, f"cannot read the file: {reason}"))
            continue
        rules.extend(checker.load(text))
        for rule_id, id_node in checker.ids:
            place = f"{checker.file}:{id_node.line}:{id_node.column}"
            if rule_id in first_seen:
                checker.error(
                    id_node,
                    f"duplicate rule id {rule_id!r}; also defined at {first_seen[rule_id]}; "
                    "expected ids unique across all rule files",
                )
            else:
                first_seen[rule_id] = place
        problems.extend(sorted(checker.problems, key=lambda p: (p.line, p.column)))
        warnings.extend(sorted(checker.warnings, key=lambda p: (p.line, p.column)))
    if problems:
        return RuleCheck(None, problems, warnings)
    ruleset = RuleSet(rules)
    ruleset.warnings = tuple(warnings)
    return RuleCheck(ruleset, [], warnings)


class FileChecker(WhenChecker, StepChecker):
    """Turns one file's Nodes into Rules, collecting every problem with its place."""

    def load(self, text: str) -> list[Rule]:
        """The valid rules of the file; `ids` gets every well-formed id, valid rule or not."""
        root, source_problems = parse(text)
        for sp in source_problems:
            self.problems.append(Problem(self.file, sp.line, sp.column, sp.message))
        if root is None:
            return []
        expected = "expected one rule (a mapping with id) or rules: [a list of rules]"
        if not root.is_mapping:
            self.error(
                root, f"a rule file holds a mapping, not {type_name(root.plain())}; {expected}"
            )
            return []
        root = read_file_vars(self, root)  # `vars:` beside `rules:` (bridge/rules/vars.py)
        if "rules" in root.value:
            extra = [k for k in root.value if k != "rules"]
            for key in extra:
                self.error(root.keys[key], f"unknown key {key!r} beside 'rules'; {expected}")
            items = root.value["rules"]
            if items.value is None and source_problems:
                return []  # every rule of the list was unreadable, each already reported
            if not items.is_sequence:
                self.error(items, f"'rules' must be a list of rules; {expected}")
                return []
            nodes = list(items.value)
        else:
            nodes = [root]
        loaded: list[Rule] = []
        for node in nodes:
            rule = self.rule(node)
            if rule is not None:
                loaded.append(rule)
        return loaded

    def rule(self, node: Node) -> Rule | None:
        self.rule_id = None
        self.on = ()
        if not node.is_mapping:
            self.error(
                node,
                f"a rule must be a mapping with id, on and actions, not {type_name(node.plain())}",
            )
            return None
        before = len(self.problems)
        m: dict[str, Node] = node.value
        rule_id = self.rule_identity(node)
        self.unknown_keys(node, RULE_KEYS, None)
        description = self.scalar(m.get("description"), str, "description", "")
        enabled = self.scalar(m.get("enabled"), bool, "enabled", True)
        stop = self.scalar(m.get("stop"), bool, "stop", False)
        priority = self.scalar(m.get("priority"), int, "priority", 0)
        on = self.on = self.event_types(node)
        when = self.when(m.get("when"), node)
        dedupe = self.dedupe(m.get("dedupe"))
        throttle = self.throttle(m.get("throttle"), rule_id or "")
        digest = self.digest(m.get("digest"), rule_id or "")
        if digest is not None and throttle is not None and throttle.rollup:
            self.error(
                m["digest"],
                f"digest and throttle.rollup{self.in_rule} both collect matches into one "
                "message; use one of them",
            )
        wait = check_for(self, node)  # `for:` (bridge/rules/waits.py)
        steps = self.steps(m.get("actions"))
        if len(self.problems) > before or rule_id is None:
            return None
        return Rule(
            id=rule_id,
            description=description,
            enabled=enabled,
            priority=priority,
            stop=stop,
            on=on,
            schedule=self.schedule,
            when=when,
            dedupe=dedupe,
            throttle=throttle,
            digest=digest,
            wait=wait,
            actions=steps,
            file=self.file,
            line=node.line,
            vars=self.vars,
        )

    def rule_identity(self, node: Node) -> str | None:
        id_node = node.value.get("id")
        if id_node is None:
            self.error(
                node, "rule has no 'id'; expected a unique id such as proof-approved-to-slack"
            )
            return None
        value = id_node.value
        if not isinstance(value, str) or not _RULE_ID.match(value):
            self.error(
                id_node,
                f"rule id {value!r} is not valid; expected letters, digits, '-', '_' and '.' "
                "(such as proof-approved-to-slack)",
            )
            return None
        self.rule_id = value
        self.ids.append((value, id_node))
        return value

    def event_types(self, rule: Node) -> tuple[str, ...]:
        node = rule.value.get("on")
        self.schedule: Schedule | None = None
        if node is not None and is_schedule(node):  # a time trigger (bridge/rules/cron.py)
            self.schedule = check_schedule(self, node)
            return (SCHEDULE_EVENT,)
        expected = "expected an event type, a glob such as lytho.proof.*, or a list of them"
        if node is None:
            self.error(
                rule,
                f"rule{' ' + repr(self.rule_id) if self.rule_id else ''} has no 'on'; {expected}",
            )
            return ()
        items = node.value if node.is_sequence else [node]
        if not items:
            self.error(node, f"'on'{self.in_rule} is empty; {expected}")
        types: list[str] = []
        for item in items:
            value = item.value
            if value is None and item.comment:
                bare = str(item.comment).lstrip("#").strip()
                self.error(
                    item,
                    f"'on'{self.in_rule} is empty: {item.comment!r} after 'on:' is a YAML "
                    f"comment, not the value; event types have no '#': write on: {bare}",
                )
            elif not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
                self.error(item, f"event type {value!r}{self.in_rule} is not valid; {expected}")
            elif value == SCHEDULE_EVENT:
                self.error(
                    item,
                    f"'on'{self.in_rule} names {value}: those events go only to the rule whose "
                    f"schedule made them; for a time trigger write {EXAMPLE}",
                )
            else:
                types.append(value)
                self.check_event_type(item, value)
        return tuple(dict.fromkeys(types))

    def check_event_type(self, node: Node, value: str) -> None:
        """Warn about an `on:` type that no documented source emits (a typo, most likely)."""
        known = self.catalogue
        if known is None or known.emits(value):
            return
        namespace = value.split(".", 1)[0]
        ours = namespace in known.namespaces
        if is_glob(value):
            if ours and not is_glob(namespace):
                self.warn(
                    node,
                    f"'on' pattern {value!r}{self.in_rule} matches no event type that "
                    f"{namespace} sources emit; the types are listed in docs/events.md",
                )
            return
        hint = suggest(value, sorted(known.types), cutoff=0.8)
        if not ours and not hint:
            return  # a generic source's own type (shop.order.paid): nothing to compare with
        self.warn(
            node,
            f"no source emits event type {value!r}{self.in_rule}; {hint}"
            + (
                "the types are listed in docs/events.md"
                if ours
                else "unless a generic source sends it, check the spelling against docs/events.md"
            ),
        )

    # -- conditions --

    def dedupe(self, node: Node | None) -> Dedupe | None:
        if node is None:
            return None
        if not node.is_mapping:
            self.error(node, f"'dedupe'{self.in_rule} must be a mapping {{key: …, ttl: …}}")
            return None
        self.unknown_keys(node, DEDUPE_KEYS, "dedupe")
        key = self.template_string(node.value.get("key"), "dedupe.key", node)
        ttl = self.duration(node.value.get("ttl"), "dedupe.ttl", node)
        if key is None or ttl is None:
            return None
        return Dedupe(key=key, ttl_seconds=max(1, round(ttl)))

    def throttle(self, node: Node | None, rule_id: str) -> Throttle | None:
        if node is None:
            return None
        if not node.is_mapping:
            self.error(
                node, f"'throttle'{self.in_rule} must be a mapping {{key: …, limit: …, per: …}}"
            )
            return None
        self.unknown_keys(node, THROTTLE_KEYS, "throttle")
        m = node.value
        key = self.template_string(m["key"], "throttle.key", node) if "key" in m else rule_id
        limit_node = m.get("limit")
        limit = None
        if limit_node is None:
            self.error(
                node, f"throttle.limit is required{self.in_rule}; expected a positive integer"
            )
        elif (
            isinstance(limit_node.value, bool)
            or not isinstance(limit_node.value, int)
            or limit_node.value < 1
        ):
            self.error(
                limit_node,
                f"throttle.limit{self.in_rule} must be a positive integer, "
                f"not {limit_node.value!r}",
            )
        else:
            limit = limit_node.value
        per = self.duration(m.get("per"), "throttle.per", node)
        rollup = self.scalar(m.get("rollup"), bool, "throttle.rollup", False)
        if key is None or limit is None or per is None:
            return None
        return Throttle(key=key, limit=limit, per_seconds=max(1, round(per)), rollup=rollup)

    def digest(self, node: Node | None, rule_id: str) -> Digest | None:
        if node is None:
            return None
        if not node.is_mapping:
            self.error(
                node, f"'digest'{self.in_rule} must be a mapping {{key: …, window: …, max: …}}"
            )
            return None
        self.unknown_keys(node, DIGEST_KEYS, "digest")
        m = node.value
        key = self.template_string(m["key"], "digest.key", node) if "key" in m else rule_id
        window = self.duration(m.get("window"), "digest.window", node)
        if window is not None and window > DIGEST_WINDOW_MAX:
            self.error(
                m["window"],
                f"digest.window{self.in_rule} is {m['window'].value!r}; "
                "expected at most 24h (a digest waits at most a day)",
            )
            window = None
        most = DIGEST_MAX
        max_node = m.get("max")
        if max_node is not None:
            value = max_node.value
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 1 <= value <= DIGEST_MAX
            ):
                self.error(
                    max_node,
                    f"digest.max{self.in_rule} must be an integer from 1 to {DIGEST_MAX}, "
                    f"not {value!r}",
                )
                return None
            most = value
        if key is None or window is None:
            return None
        return Digest(key=key, window_seconds=window, max=most)

    # -- steps --
