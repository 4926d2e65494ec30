"""The rule set in force: loaded at start, reloaded on change, the last good one kept."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from functools import cache
from pathlib import Path
from typing import Any

from bridge.actions import action_schemas
from bridge.rules import RuleSet
from bridge.rules.checker import EventTypes
from bridge.rules.loader import check_rules
from bridge.schema import type_name
from bridge.templates import Templates

logger = logging.getLogger(__name__)

RELOAD_INTERVAL = 2.0
# Types that are not a poller's: Lytics audience webhooks, and the open Slack families.
WEBHOOK_TYPES = ("lytics.segment.entered", "lytics.segment.exited")
OPEN_FAMILIES = ("slack.action.", "slack.command.")
EVENTS_DOC = Path(__file__).resolve().parents[1] / "docs" / "events.md"
_DOC_TYPE = re.compile(r"`([a-z_]+\.[a-z_]+\.[a-z_]+)`")


@cache
def event_catalogue() -> EventTypes:
    """The event types lytbridge's sources emit, with the documented type of their fields."""
    from bridge.ingress.pollers import poller_event_types

    types = {t for found in poller_event_types().values() for t in found} | set(WEBHOOK_TYPES)
    return EventTypes(frozenset(types), OPEN_FAMILIES, _documented_fields(EVENTS_DOC))


def _documented_fields(doc: Path) -> dict[str, dict[str, str]]:
    """Per event type: `data.<path>` → JSON type, from the examples in docs/events.md.

    Only what every example of a type agrees on; nothing when the file is not there
    (an installed package without its docs simply checks less).
    """
    try:
        text = doc.read_text(encoding="utf-8")
    except OSError:
        return {}
    seen: dict[str, dict[str, set[str]]] = {}
    for chunk in re.split(r"^### ", text, flags=re.MULTILINE)[1:]:
        for block in re.findall(r"```json\n(.*?)```", chunk, flags=re.DOTALL):
            try:
                example = json.loads(block)
            except ValueError:
                continue
            if not isinstance(example, dict) or not isinstance(example.get("type"), str):
                continue
            fields = seen.setdefault(example["type"], {})
            _walk("data", example.get("data"), fields, 0)
    return {
        event_type: {path: kinds.pop() for path, kinds in fields.items() if len(kinds) == 1}
        for event_type, fields in seen.items()
    }


def _walk(path: str, value: Any, fields: dict[str, set[str]], depth: int) -> None:
    kind = type_name(value)
    if kind == "null":
        return
    fields.setdefault(path, set()).add("number" if kind == "integer" else kind)
    if isinstance(value, dict) and depth < 4:
        for key, item in value.items():
            _walk(f"{path}.{key}", item, fields, depth + 1)


def _fingerprint(*folders: Path) -> tuple[tuple[str, int, int], ...]:
    """What a change of any rule or template file changes: names, sizes, mtimes."""
    found: list[tuple[str, int, int]] = []
    for folder in folders:
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                try:
                    if path.is_file():
                        stat = path.stat()
                        found.append((str(path), stat.st_size, stat.st_mtime_ns))
                except OSError:  # gone meanwhile, or a link that leads nowhere
                    found.append((str(path), -1, -1))
    return tuple(found)


class LiveRules:
    """Holds the current good RuleSet and Templates and the problems of the last load.

    `problems` is empty exactly when the last load succeeded: any failure of a load,
    whatever raised it, is recorded there (readiness, metrics and the dashboard read it).
    `warnings` are what `bridge validate` warns about in the rules in force or refused.
    """

    def __init__(self, rules_dir: Path, templates_dir: Path) -> None:
        self.rules_dir = rules_dir
        self.templates_dir = templates_dir
        self.templates = Templates(templates_dir if templates_dir.is_dir() else None)
        self.current: RuleSet | None = None
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.loaded_at: float | None = None
        self._fingerprint: tuple[tuple[str, int, int], ...] | None = None

    def load(self) -> bool:
        """Load rules and templates; on errors keep the last good set. True when swapped."""
        try:
            self._fingerprint = _fingerprint(self.rules_dir, self.templates_dir)
            templates = Templates(self.templates_dir if self.templates_dir.is_dir() else None)
            checked = check_rules(
                self.rules_dir,
                templates=templates,
                actions=action_schemas(),
                event_types=event_catalogue(),
            )
        except Exception as exc:  # never let a reload fail silently: say so, keep the last set
            logger.exception("loading the rules in %s failed", self.rules_dir)
            self.problems = [
                f"{self.rules_dir}: the rules could not be loaded ({type(exc).__name__}); "
                "the log has the details"
            ]
            return False
        self.warnings = [str(w) for w in checked.warnings]
        if checked.ruleset is None:
            self.problems = [str(p) for p in checked.errors]
            logger.error(
                "rule set in %s is invalid (%d problems); %s:\n%s",
                self.rules_dir,
                len(self.problems),
                "keeping the last good set" if self.current else "no rules are active",
                "\n".join(self.problems),
            )
            return False
        self.current, self.templates, self.problems = checked.ruleset, templates, []
        self.loaded_at = time.time()
        for warning in self.warnings:
            logger.warning("%s", warning)
        logger.info("loaded %d rules from %s", len(checked.ruleset.rules), self.rules_dir)
        return True

    def reload_if_changed(self) -> bool:
        """Reload when a rule or template file changed since the last load."""
        try:
            changed = _fingerprint(self.rules_dir, self.templates_dir) != self._fingerprint
        except OSError as exc:
            logger.error("cannot read %s: %s", self.rules_dir, exc)
            self.problems = [f"{self.rules_dir}: cannot read the rule files ({exc.strerror})"]
            return False
        return self.load() if changed else False

    async def watch(self, interval: float = RELOAD_INTERVAL) -> None:
        """Reload changed rules and templates every `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.reload_if_changed)
            except Exception as exc:
                logger.exception("reloading rules failed; keeping the current set")
                self.problems = [
                    f"{self.rules_dir}: reloading the rules failed ({type(exc).__name__})"
                ]
