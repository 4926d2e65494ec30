"""lytbridge: Lytho and Lytics changes become events; YAML rules match them; actions run.

The names users need are exported here and loaded on first use, so that importing one
module of the package (which imports this one first) loads only what that module uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.errors import (
        BridgeError,
        ClientError,
        ConfigError,
        PermanentError,
        RateLimited,
        RuleError,
        TemplateError,
    )
    from bridge.events import Event
    from bridge.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "BridgeError",
    "ClientError",
    "ConfigError",
    "Event",
    "PermanentError",
    "RateLimited",
    "RuleError",
    "Settings",
    "TemplateError",
    "__version__",
]

# The module each exported name lives in.
_HOMES = {
    "BridgeError": "bridge.errors",
    "ClientError": "bridge.errors",
    "ConfigError": "bridge.errors",
    "PermanentError": "bridge.errors",
    "RateLimited": "bridge.errors",
    "RuleError": "bridge.errors",
    "TemplateError": "bridge.errors",
    "Event": "bridge.events",
    "Settings": "bridge.settings",
}


def __getattr__(name: str) -> Any:
    """An exported name, imported from its module when first asked for."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'bridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
