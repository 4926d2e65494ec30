"""lytbridge: Lytho and Lytics changes become events; YAML rules match them; actions run."""

from __future__ import annotations

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
