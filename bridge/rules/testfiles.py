"""Find and read rule test files (`*.test.yaml`) into cases (rules → decide)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from bridge.errors import Problem
from bridge.events import Event
from bridge.rules.checker import suggest
from bridge.rules.source import Node

CASE_KEYS = ("name", "event", "event_file", "events", "expect", "steps")
EXPECT_KEYS = (
    "matched",
    "actions",
    "not_matched_because",
    "not_matched",
    "suppressed",
    "digests",
)
EXPECTED_ACTION_KEYS = ("uses", "with", "step", "rule", "skipped", "rendered")
EVENT_KEYS = ("id", "type", "source", "subject", "time", "data", "changes")


def find_test_files(path: Path) -> list[Path]:
    """`path` itself if a file; else `*.test.yaml`/`*.test.yml` and YAML under `tests/` folders."""
    if path.is_file():
        return [path]
    found = []
    for candidate in sorted(path.rglob("*")):
        if not candidate.is_file() or candidate.suffix not in (".yaml", ".yml"):
            continue
        parts = candidate.relative_to(path).parts
        if any(part.startswith(".") for part in parts):
            continue
        if candidate.name.endswith((".test.yaml", ".test.yml")) or "tests" in parts[:-1]:
            found.append(candidate)
    return found


class CaseReader:
    """Reads cases from Nodes, recording problems with their place."""

    def __init__(self, file: str, base: Path) -> None:
        self.file = file
        self.base = base
        self.problems: list[Problem] = []

    def error(self, node: Node, message: str) -> None:
        self.problems.append(Problem(self.file, node.line, node.column, message))

    def unknown_keys(self, node: Node, allowed: tuple[str, ...], where: str) -> None:
        for key, key_node in node.keys.items():
            if key not in allowed:
                self.error(
                    key_node,
                    f"unknown key {key!r} in {where}; {suggest(key, allowed)}"
                    f"expected one of {', '.join(allowed)}",
                )

    def cases(self, root: Node) -> list[Node]:
        if not root.is_mapping or "cases" not in root.value or not root.value["cases"].is_sequence:
            self.error(root, "a rule test file holds cases: [a list of cases]")
            return []
        self.unknown_keys(root, ("cases",), "the test file")
        return list(root.value["cases"].value)

    def case(self, node: Node) -> tuple[str, list[Event], Mapping[str, Node]] | None:
        """A case's name, its events in order (the expectations are about the last), expect."""
        if not node.is_mapping:
            self.error(
                node, "a case must be a mapping with name, event (or event_file, events) and expect"
            )
            return None
        before = len(self.problems)
        m: dict[str, Node] = node.value
        self.unknown_keys(node, CASE_KEYS, "a case")
        name = m["name"].value if "name" in m else f"case at line {node.line}"
        if not isinstance(name, str):
            self.error(m["name"], "a case name must be a string")
        events = self.events(node, m)
        expect = m.get("expect")
        if expect is None:
            self.error(node, f"case {name!r} has no 'expect'; expected {{matched: [...]}}")
        elif not expect.is_mapping:
            self.error(expect, f"'expect' of case {name!r} must be a mapping")
        else:
            self.unknown_keys(expect, EXPECT_KEYS, "expect")
            self.expectations(expect.value, name)
        if len(self.problems) > before or events is None or expect is None:
            return None
        return str(name), events, expect.value

    def events(self, node: Node, m: dict[str, Node]) -> list[Event] | None:
        given = [key for key in ("event", "event_file", "events") if key in m]
        if len(given) != 1:
            self.error(node, "a case needs exactly one of event (inline), event_file or events")
            return None
        if given[0] != "events":
            event = self.event(node, m)
            return [event] if event is not None else None
        items = m["events"]
        if not items.is_sequence or not items.value:
            self.error(
                items,
                "events is a list of events, in the order they arrive "
                "(each inline, or {event_file: …}); the expectations are about the last",
            )
            return None
        found = []
        for item in items.value:
            if item.is_mapping and set(item.value) == {"event_file"}:
                event = self.event(item, item.value)
            else:
                event = self.event(item, {"event": item})
            if event is None:
                return None
            found.append(event)
        return found

    def event(self, node: Node, m: dict[str, Node]) -> Event | None:
        if "event" in m:
            raw, where = m["event"].plain(), m["event"]
        else:
            where = m["event_file"]
            relative = where.value
            try:
                raw = json.loads((self.base / str(relative)).read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as exc:
                self.error(where, f"cannot read event_file {relative!r}: {exc}")
                return None
        if not isinstance(raw, Mapping) or not isinstance(raw.get("type"), str):
            self.error(where, "an event is a mapping with at least a type (and data, changes, …)")
            return None
        unknown = [k for k in raw if k not in EVENT_KEYS and k != "specversion"]
        if unknown:
            self.error(
                where, f"unknown event field {unknown[0]!r}; expected {', '.join(EVENT_KEYS)}"
            )
            return None
        changes = raw.get("changes") or {}
        if not isinstance(changes, Mapping) or not all(
            isinstance(v, Mapping) for v in changes.values()
        ):
            self.error(where, "changes must map each field to {from: …, to: …}")
            return None
        return Event(
            id=str(raw.get("id", f"test-{where.line}")),
            source=str(raw.get("source", "test")),
            type=raw["type"],
            data=raw.get("data"),
            subject=raw.get("subject"),
            time=str(raw.get("time", "2026-01-01T00:00:00.000Z")),
            changes=changes,
        )

    def expectations(self, m: dict[str, Node], name: str) -> None:
        if "matched" in m:
            matched = m["matched"].plain()
            if not isinstance(matched, list) or not all(isinstance(i, str) for i in matched):
                self.error(
                    m["matched"], f"expect.matched of case {name!r} must be a list of rule ids"
                )
        if "actions" in m:
            actions = m["actions"]
            if not actions.is_sequence:
                self.error(actions, f"expect.actions of case {name!r} must be a list")
            else:
                for item in actions.value:
                    self.expected_action(item)
        if "not_matched_because" in m:
            because = m["not_matched_because"]
            if not because.is_mapping or not all(
                isinstance(v, str) for v in because.plain().values()
            ):
                self.error(
                    because,
                    "not_matched_because maps a rule id to text found in its failing condition",
                )
        if "not_matched" in m:
            not_matched = m["not_matched"].plain()
            ids = isinstance(not_matched, list) and all(isinstance(i, str) for i in not_matched)
            reasons = isinstance(not_matched, Mapping) and all(
                isinstance(v, str) for v in not_matched.values()
            )
            if not ids and not reasons:
                self.error(
                    m["not_matched"],
                    "not_matched is a list of rule ids, or maps a rule id to text found in "
                    "why it did not match (such as 'not for this event type')",
                )
        if "suppressed" in m:
            suppressed = m["suppressed"]
            if not suppressed.is_mapping or not all(
                isinstance(v, str) for v in suppressed.plain().values()
            ):
                self.error(
                    suppressed,
                    "suppressed maps a rule id to dedupe, throttle, or text found in the reason",
                )

        if "digests" in m:
            digests = m["digests"].plain()
            if not isinstance(digests, Mapping) or not all(
                _count(v) or (isinstance(v, list) and v and all(_count(i) for i in v))
                for v in digests.values()
            ):
                self.error(
                    m["digests"],
                    "digests maps a rule id to the number of events its digest run holds, "
                    "or a list of them, one per run (such as {failed-jobs-digest: [3]})",
                )

    def expected_action(self, item: Node) -> None:
        if not item.is_mapping or "uses" not in item.value:
            self.error(item, "an expected action is a mapping {uses: …, with: {…}}")
            return
        self.unknown_keys(item, EXPECTED_ACTION_KEYS, "an expected action")
        skipped = item.value.get("skipped")
        if skipped is not None and not isinstance(skipped.value, bool):
            self.error(skipped, "skipped is true (the step's if: is false) or false")
        rendered = item.value.get("rendered")
        if rendered is not None and rendered.value is None:
            self.error(
                rendered,
                "rendered is text found in the rendered template file, or a subset of its "
                "JSON (such as {blocks: [...]})",
            )


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
