"""Logging: readable lines in development, JSON lines in production; secrets always redacted."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable

from bridge.settings import Settings

REDACTED = "**********"


class RedactingFormatter(logging.Formatter):
    """Formats a record, then replaces every configured secret by asterisks."""

    def __init__(self, secrets: Iterable[str], *, as_json: bool) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.as_json = as_json

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def format(self, record: logging.LogRecord) -> str:
        if not self.as_json:
            return self.redact(super().format(record))
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(entry))


def configure_logging(settings: Settings, *, level: int | None = None) -> None:
    """Send the bridge's logs to stderr through the redacting formatter."""
    if level is None:
        level = logging.getLevelName(settings.log_level.upper())
        assert isinstance(level, int)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter(settings.secrets(), as_json=settings.log_format == "json")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # arq logs two lines per job and the HTTP clients one per request: at INFO that costs
    # more CPU than the work itself (docs/performance.md). Our own lines carry the ids.
    quiet = logging.WARNING if level > logging.DEBUG else logging.DEBUG
    for noisy in ("httpx", "httpcore", "asyncio", "arq.worker", "arq.jobs", "arq.connections"):
        logging.getLogger(noisy).setLevel(quiet)
