"""Logging: readable lines in development, JSON lines in production; secrets always redacted.

One record is one line: in the text format, control characters that a message carries (an
event id with a newline, say) are written as escapes, and the lines of a traceback are
indented, so no value can forge a log line of its own.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable

from bridge.redaction import MASK, printable
from bridge.settings import Settings

REDACTED = MASK


class RedactingFormatter(logging.Formatter):
    """Formats a record as one line (or one JSON object), every configured secret masked."""

    def __init__(self, secrets: Iterable[str], *, as_json: bool) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        # Also as JSON and repr() write them: a secret with a quote or a backslash.
        self.secrets = sorted(
            {form for s in secrets if s for form in (s, json.dumps(s)[1:-1], repr(s)[1:-1])},
            key=len,
            reverse=True,
        )
        self.as_json = as_json

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def format(self, record: logging.LogRecord) -> str:
        # Masked before encoding: a secret with a quote or a backslash is written escaped.
        message = self.redact(record.getMessage())
        details = ""
        if record.exc_info:
            details = self.formatException(record.exc_info)
        if record.stack_info:
            details = (details + "\n" if details else "") + self.formatStack(record.stack_info)
        details = self.redact(details)
        if self.as_json:
            entry = {
                "time": self.formatTime(record),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": message,
            }
            if details:
                entry["exception"] = details
            return self.redact(json.dumps(entry))
        line = (
            f"{self.formatTime(record)} {record.levelname:<7} {printable(record.name)}: "
            f"{printable(message)}"
        )
        for detail in details.split("\n") if details else ():
            line += "\n    " + printable(detail)
        return self.redact(line)


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
