"""Find the rule files in the rules directory; name them as a person types them (rules → decide).

Links that lead outside the directory are refused, and the message never shows where
they lead.
"""

from __future__ import annotations

import os
from pathlib import Path

from bridge.errors import Problem

# The project's variables (bridge/rules/vars.py), at the top of the rules directory: not a
# rule file. `vars.yml` there is left out too, and reported as misnamed.
PROJECT_VARS = "vars.yaml"


def rule_files(rules_dir: Path) -> list[Path]:
    """Rule files under the directory: `*.yaml`/`*.yml`, not tests, not hidden, not the
    project's `vars.yaml`, sorted.

    Links that lead outside the directory are left out (`scan_rule_files` reports them).
    """
    return scan_rule_files(rules_dir)[0]


def scan_rule_files(rules_dir: Path) -> tuple[list[Path], list[Problem]]:
    """The rule files, and a problem for each file or folder that is a link leading outside.

    A link inside the directory to a place inside it is read at its real place only (a
    linked folder is not walked twice). The message never shows where a refused link
    leads, so neither its path nor its content reaches an error, log or status page.
    """
    root = rules_dir.resolve()
    found: list[Path] = []
    refused: list[Problem] = []
    for folder, dirs, files in os.walk(rules_dir, followlinks=False):
        here = Path(folder)
        relative_folder = here.relative_to(rules_dir)
        if any(part == "tests" or part.startswith(".") for part in relative_folder.parts):
            dirs[:] = []
            continue
        for name in sorted(dirs):
            path = here / name
            hidden = name.startswith(".") or name == "tests"
            if not hidden and path.is_symlink() and not _inside(path, root):
                refused.append(_outside(path, "folder"))
        for name in files:
            path = here / name
            if path.suffix not in (".yaml", ".yml") or name.startswith("."):
                continue
            if name.endswith((".test.yaml", ".test.yml")):
                continue
            if here == rules_dir and name in (PROJECT_VARS, "vars.yml"):
                continue
            if path.is_symlink():
                if not _inside(path, root):
                    refused.append(_outside(path, "file"))
                continue  # a second name for a file inside: read at its own place only
            if path.is_file():
                found.append(path)
    found.sort(key=lambda p: p.relative_to(rules_dir).as_posix())
    refused.sort(key=lambda p: p.file)
    return found, refused


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a link loop
        return False


def _outside(path: Path, kind: str) -> Problem:
    name = display_name(path)
    return Problem(
        name,
        1,
        1,
        f"refused: this {kind} is a link that leads outside the rules directory; put the "
        f"{'rule files themselves' if kind == 'folder' else 'rule file itself'} inside it",
    )


def display_name(path: Path) -> str:
    """The path as a person would type it: relative to the working directory when inside it."""
    try:
        return (
            Path(os.path.relpath(path)).as_posix()
            if path.is_absolute() and _inside_cwd(path)
            else path.as_posix()
        )
    except ValueError:  # another drive on Windows
        return path.as_posix()


def _inside_cwd(path: Path) -> bool:
    return path.resolve().is_relative_to(Path.cwd().resolve())
