"""The template directory: `*.j2` files, whose names never lead outside it (templates)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from jinja2 import BaseLoader, TemplateNotFound


class DirectoryLoader(BaseLoader):
    """Loads `*.j2` files from one directory; names never escape it (`..`, symlinks)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get_source(self, environment: Any, template: str) -> tuple[str, str, Callable[[], bool]]:
        path = self.resolve(template)
        if path is None or not path.is_file():
            raise TemplateNotFound(template)
        mtime = path.stat().st_mtime
        source = path.read_text(encoding="utf-8")
        return source, template, lambda: path.is_file() and path.stat().st_mtime == mtime

    def resolve(self, name: str) -> Path | None:
        if not name.endswith(".j2") or "\\" in name or name.startswith("/"):
            return None
        root = self.directory.resolve()
        path = (root / name).resolve()
        return path if path.is_relative_to(root) else None
