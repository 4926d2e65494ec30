"""The arrows of the data flow point one way (STYLE.md): an ast scan of every import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bridge"

# module prefix → prefixes of bridge modules it must never import
FORBIDDEN = {
    "bridge.events": ["bridge."],
    "bridge.errors": ["bridge."],
    "bridge.clients": [
        "bridge.rules",
        "bridge.actions",
        "bridge.jobs.handlers",
        "bridge.web",
        "bridge.ingress",
        "bridge.operate.context",
    ],
    "bridge.rules": [
        "bridge.clients",
        "bridge.actions",
        "bridge.jobs.handlers",
        "bridge.web",
        "bridge.ingress",
        "bridge.operate.context",
        "bridge.queue.store",
    ],
    "bridge.templates.environment": [
        "bridge.clients",
        "bridge.actions",
        "bridge.jobs.handlers",
        "bridge.web",
    ],
    "bridge.ingress": ["bridge.rules", "bridge.actions", "bridge.jobs.handlers"],
    # Sandboxes may share the clients' path tables (one definition of our own Lytho paths).
    "bridge.sandbox": [
        "bridge.rules",
        "bridge.actions",
        "bridge.jobs.handlers",
        "bridge.operate.context",
        "bridge.ingress",
    ],
}


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_follow_the_flow(path: Path) -> None:
    name = module_name(path)
    banned = [b for prefix, bans in FORBIDDEN.items() if name.startswith(prefix) for b in bans]
    wrong = sorted(
        imported for imported in imports_of(path) if any(imported.startswith(b) for b in banned)
    )
    assert wrong == [], f"{name} imports {wrong}, against the flow"


def test_only_settings_reads_the_environment() -> None:
    readers = sorted(
        module_name(path)
        for path in MODULES
        if ("os.environ" in path.read_text() or "getenv" in path.read_text())
        and module_name(path) != "bridge.settings"
    )
    assert readers == [], "only bridge.settings reads the environment"
