"""Shared by the reliability scenarios: where each one's figures are printed and kept."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FIGURES_FILE = ARTIFACTS / "reliability.json"
_lock = threading.Lock()

Figures = Callable[..., None]


def save_figures(scenario: str, figures: dict[str, Any]) -> None:
    """Merge one scenario's figures into test-artifacts/reliability.json."""
    with _lock:
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            everything = json.loads(FIGURES_FILE.read_text())
        except (OSError, ValueError):
            everything = {}
        everything[scenario] = figures
        partial = FIGURES_FILE.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")
        partial.replace(FIGURES_FILE)


@pytest.fixture(scope="session", autouse=True)
def fresh_figures_file() -> None:
    """Each run writes its own figures; none are left over from an earlier run."""
    FIGURES_FILE.unlink(missing_ok=True)


@pytest.fixture
def figures(
    request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
) -> Iterator[Figures]:
    """Call `figures(name=value, …)`: printed, attached to the test and saved as JSON."""
    collected: dict[str, Any] = {}

    def record(**values: Any) -> None:
        collected.update(values)
        for name, value in values.items():
            record_property(name, value)

    yield record
    if collected:
        scenario = request.node.name
        print(f"\n[reliability] {scenario}: {json.dumps(collected, sort_keys=True)}")
        save_figures(scenario, collected)
