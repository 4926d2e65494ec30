"""The one error tree of lytbridge, caught at the edges (web, worker, CLI).

    BridgeError
    ├── ConfigError            a setting is missing or malformed
    ├── RuleError              a rule file is invalid (carries every problem found)
    ├── TemplateError          a template or expression failed to compile or render
    ├── EventError             an inbound payload cannot become an event (HTTP 400)
    ├── StoreUnavailable       Redis cannot durably store an event (HTTP 503)
    └── ClientError            an outbound API call failed
        ├── RateLimited        429: wait `retry_after` seconds, no try spent
        └── PermanentError     retrying cannot help (4xx, channel_not_found, …)

Messages are for the person who has to fix the problem: what, where, and what was
expected. They never contain a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class BridgeError(Exception):
    """Base of every error lytbridge raises on purpose."""


class ConfigError(BridgeError):
    """A setting is missing or malformed."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a rule file, with its place."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class RuleError(BridgeError):
    """A rule set is invalid; `problems` lists every error found, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class TemplateError(BridgeError):
    """A template or expression failed to compile or render."""


class EventError(BridgeError):
    """An inbound payload cannot become an event."""


class StoreUnavailable(BridgeError):
    """Redis cannot durably store an event right now."""


class ClientError(BridgeError):
    """An outbound API call failed; retryable unless a PermanentError."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(ClientError):
    """The API answered 429; try again after `retry_after` seconds without spending a try."""

    def __init__(self, message: str, *, retry_after: float, status: int | None = 429) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class PermanentError(ClientError):
    """Retrying cannot help: the request itself is wrong (bad channel, 4xx, …)."""
