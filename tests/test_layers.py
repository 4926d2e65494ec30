"""The arrows of the data flow point one way (STYLE.md, docs/architecture.md).

Each room is imported in a fresh interpreter and what got loaded is checked, so an import
made by an import counts too. An ast scan of every module (imports at module level and
inside functions) finds import circles. No module is over 400 lines.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bridge"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(PACKAGE.rglob("*.py"))
NAMES = {module_name(path): path for path in MODULES}

# The base layer every room may use.
BASE = (
    "bridge.errors",
    "bridge.events",
    "bridge.settings",
    "bridge.webhook_secrets",
    "bridge.schema",
    "bridge.redaction",
    "bridge.lua",
)
# What the rooms of the flow stand on: jobs/, operate/ and web/ may load all of it.
FLOW = (
    *BASE,
    "bridge.logs",
    "bridge.templates",
    "bridge.clients",
    "bridge.queue",
    "bridge.rules",
    "bridge.actions",
    "bridge.ingress",
)


@dataclass(frozen=True)
class Row:
    """What importing `target` (a module, or every module of a package) may load of ours.

    `may`: prefixes of bridge modules it may load besides itself and the package `bridge`;
    `never`: prefixes it must not load even where `may` allows their room.
    """

    target: str
    may: tuple[str, ...] = ()
    never: tuple[str, ...] = ()
    why: str = ""


ROWS = [
    Row("bridge", why="importing the package loads its exports only when they are used"),
    Row("bridge.errors", why="the one error tree imports nothing of ours"),
    Row("bridge.events", ("bridge.errors",), why="an Event is plain data"),
    Row("bridge.schema", ("bridge.errors",), why="action schemas are plain data"),
    Row(
        "bridge.settings",
        ("bridge.errors", "bridge.webhook_secrets"),
        why="Settings are read from the environment",
    ),
    Row("bridge.webhook_secrets", ("bridge.errors",), why="a webhook secret's key is plain code"),
    Row("bridge.redaction", why="masking and showing values faithfully is plain code"),
    Row("bridge.lua", why="the one way a Lua script runs in Redis"),
    Row("bridge.logs", BASE, why="logging is set up before any room is used"),
    Row("bridge.templates", BASE, why="the Jinja sandbox knows no rule, client or queue"),
    Row("bridge.clients", BASE, why="clients talk to the outside and know nothing of rules"),
    Row("bridge.queue", BASE, why="the queue carries jobs without knowing what they do"),
    Row(
        "bridge.rules",
        (*BASE, "bridge.templates"),
        why="rules decide; they know no client, action, queue or process",
    ),
    Row(
        "bridge.actions",
        (*BASE, "bridge.clients", "bridge.templates"),
        why="actions do; they get their clients and know no web, ingress or job",
    ),
    Row(
        "bridge.ingress",
        (*BASE, "bridge.clients", "bridge.queue", "bridge.operate.metrics"),
        why="things arrive and are stored; ingress never loads rules, jobs or actions",
    ),
    Row(
        "bridge.jobs",
        (*FLOW, "bridge.operate.metrics"),
        why="jobs join rules to actions; the processes and the web are above them",
    ),
    Row(
        "bridge.operate",
        (*FLOW, "bridge.jobs"),
        why="operate composes the rooms below it and knows no web page or command",
    ),
    Row(
        "bridge.web",
        (*FLOW, "bridge.jobs", "bridge.operate"),
        ("bridge.operate.worker", "bridge.queue.worker", "bridge.jobs.handlers"),
        why="the web process serves requests and never loads the worker",
    ),
    Row(
        "bridge.web.health",
        (*BASE, "bridge.web", "bridge.queue", "bridge.operate.metrics"),
        ("bridge.operate.worker", "bridge.queue.worker", "bridge.jobs"),
        why="health checks read Redis and the heartbeat, not the worker",
    ),
    Row(
        "bridge.ingress.webhooks",
        (*BASE, "bridge.ingress", "bridge.queue", "bridge.operate.metrics"),
        why="the webhook door gets settings, store and metrics only",
    ),
    Row("bridge.sandbox", why="the sandboxes stand in for the outside and know nothing of ours"),
    Row("bridge.cli", ("bridge.",), why="the command is the top: it may use every room"),
]

# The subprocess imports the targets with `import` watched, so that a module that should
# not be there can be traced back to the import that brought it.
PROBE = """
import builtins, importlib, json, sys
first = {}
real = builtins.__import__
def watched(name, globals=None, locals=None, fromlist=(), level=0):
    before = set(sys.modules)
    module = real(name, globals, locals, fromlist, level)
    importer = (globals or {}).get("__name__", "?")
    for new in set(sys.modules) - before:
        first.setdefault(new, importer)
    return module
builtins.__import__ = watched
for target in json.loads(sys.argv[1]):
    importlib.import_module(target)
print(json.dumps({m: first.get(m, "") for m in sys.modules if m.split(".")[0] == "bridge"}))
"""


def loaded_by(targets: Iterable[str]) -> dict[str, str]:
    """The bridge modules importing `targets` in a fresh interpreter loads, each with the
    module whose import first loaded it."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(sorted(targets))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, str] = json.loads(done.stdout)
    return found


def modules_of(target: str) -> list[str]:
    """`target` and, for a package, every module in it (`bridge`: the package itself)."""
    if target == "bridge":
        return ["bridge"]
    return sorted(
        name
        for name, path in NAMES.items()
        if (name == target or name.startswith(target + ".")) and path.name != "__main__.py"
    )


def within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p if p.endswith(".") else p + ".") for p in prefixes)


def chain(module: str, first: dict[str, str], targets: set[str]) -> str:
    """`a → b → module`: how an import of the targets came to load `module`."""
    steps = [module]
    while steps[-1] not in targets and first.get(steps[-1]) and len(steps) < 30:
        steps.append(first[steps[-1]])
    return " → ".join(reversed(steps))


def test_every_room_has_a_row() -> None:
    rooms = {".".join(name.split(".")[:2]) for name in NAMES}
    assert sorted(rooms - {row.target for row in ROWS}) == []


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.target)
def test_a_room_loads_only_what_it_may(row: Row) -> None:
    targets = modules_of(row.target)
    assert targets, f"no module {row.target}"
    first = loaded_by(targets)

    # The row of the package `bridge` is about its own __init__ only.
    own = [] if row.target == "bridge" else [row.target]

    def allowed(name: str) -> bool:
        if within(name, row.never):
            return False
        # A package is loaded before any module in it.
        parent = any(other.startswith(name + ".") for other in (*own, *row.may))
        return name == "bridge" or parent or within(name, [*own, *row.may])

    wrong = sorted(name for name in first if not allowed(name))
    # Each import that crosses the line, traced back to the target; what it loads in turn
    # is only counted.
    crossings = [name for name in wrong if allowed(first[name]) or first[name] in targets]
    shown = "\n  ".join(chain(name, first, set(targets)) for name in crossings)
    if len(wrong) > len(crossings):
        shown += f"\n  (and {len(wrong) - len(crossings)} more modules these load)"
    assert wrong == [], f"importing {row.target} loads, against the flow ({row.why}):\n  {shown}"


# --- circles and sizes (an ast scan of the source) ----------------------------------------


def _under_type_checking(tree: ast.AST) -> set[int]:
    """Ids of the nodes inside `if TYPE_CHECKING:` blocks: imports that never run."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.body:
                skipped.update(id(inner) for inner in ast.walk(statement))
    return skipped


def _module_of(name: str) -> str | None:
    """The bridge module `name` (a module, or a name inside one) is found in."""
    while name and name not in NAMES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(path: Path) -> set[str]:
    """The bridge modules a module imports when it runs (at module level or in a function)."""
    name = module_name(path)
    tree = ast.parse(path.read_text())
    skipped = _under_type_checking(tree)
    found: set[str | None] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(_module_of(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                whole = f"{base}.{alias.name}"
                found.add(whole if whole in NAMES else _module_of(base))
    return {module for module in found if module and module != name}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
    return sorted(groups)


def test_the_circle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    graph = {module_name(path): imports_of(path) for path in MODULES}
    found = circles(graph)
    shown = "\n".join(
        "  " + ", ".join(f"{m} → {sorted(graph[m] & set(group))}" for m in group) for group in found
    )
    assert found == [], f"modules that import each other (directly or round a circle):\n{shown}"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_no_module_over_400_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, (
        f"{module_name(path)} has {lines} lines; past {MAX_LINES}, look for the second concept "
        "hiding inside (STYLE.md)"
    )


# --- direct imports ---------------------------------------------------------------------


def test_web_reaches_jobs_only_through_operate() -> None:
    wrong = sorted(
        f"{module_name(path)} imports {sorted(found)}"
        for path in MODULES
        if module_name(path).startswith("bridge.web")
        for found in [{m for m in imports_of(path) if within(m, ["bridge.jobs"])}]
        if found
    )
    assert wrong == [], "web/ uses bridge.operate for what jobs/ knows"


def test_only_the_queue_imports_arq() -> None:
    def arq_imports(path: Path) -> bool:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            if any(name.split(".")[0] == "arq" for name in names):
                return True
        return False

    wrong = sorted(
        module_name(path)
        for path in MODULES
        if not module_name(path).startswith("bridge.queue") and arq_imports(path)
    )
    assert wrong == [], "only bridge.queue imports arq"


def test_the_package_exports_its_names_when_used() -> None:
    import bridge
    from bridge.errors import RuleError
    from bridge.events import Event

    assert (bridge.Event, bridge.RuleError) == (Event, RuleError)
    everything: dict[str, object] = {}
    exec("from bridge import *", everything)
    assert sorted(set(everything) - {"__builtins__"}) == sorted(bridge.__all__)
    with pytest.raises(AttributeError, match="module 'bridge' has no attribute 'Evnt'"):
        _ = bridge.Evnt  # type: ignore[attr-defined]


def test_only_settings_reads_the_environment() -> None:
    readers = sorted(
        module_name(path)
        for path in MODULES
        if ("os.environ" in path.read_text() or "getenv" in path.read_text())
        and module_name(path) != "bridge.settings"
    )
    assert readers == [], "only bridge.settings reads the environment"
