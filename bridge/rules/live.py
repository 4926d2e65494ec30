"""The rule set in force: loaded at start, reloaded on change, the last good one kept."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path

from bridge.rules import RuleSet
from bridge.rules.checker import EventTypes
from bridge.rules.loader import check_rules
from bridge.schema import ActionSchema
from bridge.templates.environment import Templates

logger = logging.getLogger(__name__)

RELOAD_INTERVAL = 2.0


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

    def __init__(
        self,
        rules_dir: Path,
        templates_dir: Path,
        *,
        actions: Mapping[str, ActionSchema],
        event_types: EventTypes | None = None,
    ) -> None:
        self.rules_dir = rules_dir
        self.templates_dir = templates_dir
        # Given by the composition root, so that rules/ never imports actions or ingress.
        self.actions = actions
        self.event_types = event_types
        self.templates = Templates(templates_dir)
        self.current: RuleSet | None = None
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.loaded_at: float | None = None
        self._fingerprint: tuple[tuple[str, int, int], ...] | None = None

    def load(self) -> bool:
        """Load rules and templates; on errors keep the last good set. True when swapped."""
        try:
            self._fingerprint = _fingerprint(self.rules_dir, self.templates_dir)
            templates = Templates(self.templates_dir)
            checked = check_rules(
                self.rules_dir,
                templates=templates,
                actions=self.actions,
                event_types=self.event_types,
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
                "rule set in %s is invalid (%d problem(s)); %s:",
                self.rules_dir,
                len(self.problems),
                "keeping the last good set" if self.current else "no rules are active",
            )
            for problem in self.problems:  # one record each: a text log escapes line breaks
                logger.error("%s", problem)
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
