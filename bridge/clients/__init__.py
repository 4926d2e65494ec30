"""Clients of the outside APIs: auth, pagination, shared rate limits, retries (clients)."""

from __future__ import annotations

from bridge.clients.base import ApiClient, RetryPolicy, parse_retry_after
from bridge.clients.lytho import LythoClient
from bridge.clients.lytho_upload import UploadLink
from bridge.clients.lytho_workflow import LythoWorkflowClient
from bridge.clients.lytics import COLLECT_PATH, LyticsClient
from bridge.clients.ratelimit import DEFAULT_LIMITS, LYTHO_LIMITS, Limit, Limiter, RateLimiter

__all__ = [
    "COLLECT_PATH",
    "DEFAULT_LIMITS",
    "LYTHO_LIMITS",
    "ApiClient",
    "Limit",
    "Limiter",
    "LythoClient",
    "LythoWorkflowClient",
    "LyticsClient",
    "RateLimiter",
    "RetryPolicy",
    "UploadLink",
    "parse_retry_after",
]
