"""The rule set in force: loaded at start, reloaded on change, the last good one kept."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from bridge.actions import action_schemas
from bridge.errors import RuleError
from bridge.rules import RuleSet, load_rules
from bridge.templates import Templates

logger = logging.getLogger(__name__)

RELOAD_INTERVAL = 2.0


def _fingerprint(*folders: Path) -> tuple[tuple[str, int, int], ...]:
    """What a change of any rule or template file changes: names, sizes, mtimes."""
    found: list[tuple[str, int, int]] = []
    for folder in folders:
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    stat = path.stat()
                    found.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(found)


class LiveRules:
    """Holds the current good RuleSet and Templates and the problems of the last load."""

    def __init__(self, rules_dir: Path, templates_dir: Path) -> None:
        self.rules_dir = rules_dir
        self.templates_dir = templates_dir
        self.templates = Templates(templates_dir if templates_dir.is_dir() else None)
        self.current: RuleSet | None = None
        self.problems: list[str] = []
        self.loaded_at: float | None = None
        self._fingerprint: tuple[tuple[str, int, int], ...] | None = None

    def load(self) -> bool:
        """Load rules and templates; on errors keep the last good set. True when swapped."""
        self._fingerprint = _fingerprint(self.rules_dir, self.templates_dir)
        templates = Templates(self.templates_dir if self.templates_dir.is_dir() else None)
        try:
            rules = load_rules(self.rules_dir, templates=templates, actions=action_schemas())
        except RuleError as exc:
            self.problems = [str(p) for p in exc.problems]
            logger.error(
                "rule set in %s is invalid (%d problems); %s:\n%s",
                self.rules_dir,
                len(self.problems),
                "keeping the last good set" if self.current else "no rules are active",
                "\n".join(self.problems),
            )
            return False
        self.current, self.templates, self.problems = rules, templates, []
        self.loaded_at = time.time()
        logger.info("loaded %d rules from %s", len(rules.rules), self.rules_dir)
        return True

    def reload_if_changed(self) -> bool:
        """Reload when a rule or template file changed since the last load."""
        if _fingerprint(self.rules_dir, self.templates_dir) == self._fingerprint:
            return False
        return self.load()

    async def watch(self, interval: float = RELOAD_INTERVAL) -> None:
        """Reload changed rules and templates every `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.reload_if_changed)
            except Exception:
                logger.exception("reloading rules failed; keeping the current set")
