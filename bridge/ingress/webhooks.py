"""Verify, parse and enqueue inbound webhooks (ingress → events).

Order of checks, cheapest and least trusting first: unknown source (404), content type
(415), size (413, without reading an unbounded body), signature over the raw bytes (401),
JSON and event shape (400), durable storage (503). Nothing is stored unless every check
passed, and nothing is acknowledged unless it was stored.

The endpoint is handed what it uses, an `Ingress` (settings, store, metrics), by the
composition root (bridge/operate/context.py) through `app.state.ingress`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from bridge.errors import ConfigError, EventError, StoreUnavailable
from bridge.events import MAX_ID_LENGTH, Event
from bridge.ingress import normalize
from bridge.ingress.checks import FloatGuard, check_attribute, check_not_reserved, may_need_walk
from bridge.ingress.signatures import SignatureError, verify_github, verify_standard
from bridge.operate import metrics
from bridge.settings import Settings, is_valid_source

if TYPE_CHECKING:
    from bridge.operate.metrics import Metrics
    from bridge.queue.store import Store

logger = logging.getLogger(__name__)

SPECIAL_SOURCES = ("cloudevents", "lytics", "slack")


@dataclass(frozen=True)
class Ingress:
    """What the webhook endpoint uses: the settings, the event store and the metrics."""

    settings: Settings
    store: Store
    metrics: Metrics


class RefusalLog:
    """Warnings about refused webhooks, at most one per `interval` seconds: anyone can send
    unsigned requests, and a line for each would flood the log. The next line written
    says how many were left out."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._next = 0.0
        self._left_out = 0

    def warn(self, source: str, reason: str) -> None:
        now = time.monotonic()
        if now < self._next:
            self._left_out += 1
            return
        self._next = now + self.interval
        if self._left_out:
            logger.warning(
                "webhook to %s refused: %s (and %d more refused webhooks not logged)",
                source,
                reason,
                self._left_out,
            )
            self._left_out = 0
        else:
            logger.warning("webhook to %s refused: %s", source, reason)


refusals = RefusalLog()


def error(status: int, code: str, message: str) -> JSONResponse:
    """A JSON error body: a stable machine code and a message for the person who sent it."""
    return JSONResponse({"error": code, "message": message}, status_code=status)


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (without reading on) anything over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge
        except ValueError:
            raise BodyTooLarge from None
        if "transfer-encoding" not in request.headers:
            # The server ends the body at the declared length: it cannot pass the limit.
            return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def body_or_error(request: Request, limit: int) -> bytes | JSONResponse:
    """The raw body, or the error answer of one over `limit` bytes or cut short."""
    try:
        return await read_body(request, limit)
    except BodyTooLarge:
        return error(413, "body_too_large", f"the body is over the limit of {limit} bytes")
    except ClientDisconnect:
        return error(400, "client_disconnected", "the client disconnected before the body ended")


def parse_json(body: bytes, guard: FloatGuard | None = None) -> Any:
    """Parse JSON from hostile bytes; EventError (400) for anything that is not plain JSON.

    `guard` learns whether a number overflowed to infinity (the walk then names it)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise EventError("the body is not valid UTF-8") from None
    if not text.strip():
        raise EventError("the body is empty; expected JSON")
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=guard)
    except json.JSONDecodeError as exc:
        raise EventError(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise EventError("the JSON is nested too deeply") from None
    except ValueError as exc:  # integers over 4,300 digits, NaN/Infinity
        raise EventError(f"the JSON cannot be accepted: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _source_known(settings: Settings, source: str) -> bool:
    return settings.allow_unsigned or settings.secret_for(source) is not None


def verify(settings: Settings, source: str, headers: Mapping[str, str], body: bytes) -> str | None:
    """Check the source's signature; the sender's delivery id. Raises SignatureError."""
    secret = settings.secret_for(source)
    if secret is None:
        # Only reachable with BRIDGE_ALLOW_UNSIGNED=1 (development).
        return headers.get("webhook-id")
    if settings.scheme_for(source) == "github":
        return verify_github(secret.get(), headers, body)
    return verify_standard(
        secret.get(), headers, body, tolerance=settings.webhook_tolerance_seconds
    )


DELIVERY_HEADERS = ("webhook-id", "x-github-delivery")


def check_delivery_id(headers: Mapping[str, str]) -> None:
    """The sender's delivery id names the events of a batch: bound it like an id.
    Raises EventError."""
    for name in DELIVERY_HEADERS:
        delivery = headers.get(name)
        if delivery is None:
            continue
        if len(delivery) > MAX_ID_LENGTH:
            raise EventError(f"the {name} header is longer than {MAX_ID_LENGTH} characters")
        check_attribute(delivery, name, None)


def stored_size(events: list[Event], limit: int) -> int:
    """The bytes the events take as stored JSON, counted until past `limit`."""
    size = 0
    for event in events:
        size += len(event.to_json())
        if size > limit:
            break
    return size


def to_events(
    source: str,
    headers: Mapping[str, str],
    payload: Any,
    delivery: str | None,
    content_type: str,
    *,
    deep: bool = True,
) -> list[Event]:
    """The events of a verified, parsed body (`deep`: walk `data` for what cannot be
    stored faithfully)."""
    if source == "lytics":
        return normalize.lytics_events(payload, delivery, deep=deep)
    if source == "cloudevents":
        media = content_type.split(";", 1)[0].strip().lower()
        if "ce-specversion" in headers and media not in (
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
        ):
            return normalize.cloudevents_binary(headers, payload, deep=deep)
        if media == "application/cloudevents-batch+json" and not isinstance(payload, list):
            raise EventError("a CloudEvents batch must be a JSON array")
        return normalize.cloudevents_structured(payload, deep=deep)
    return normalize.generic_events(source, payload, delivery, deep=deep)


async def receive(request: Request) -> JSONResponse:
    """POST /hooks/{source}."""
    ingress: Ingress = request.app.state.ingress
    settings = ingress.settings
    source = request.path_params["source"]
    if not is_valid_source(source) or not _source_known(settings, source):
        return error(
            404,
            "unknown_source",
            f"no webhook source {source!r} is configured; set "
            "BRIDGE_WEBHOOK_SECRET or BRIDGE_WEBHOOK_SECRET_<SOURCE>",
        )
    content_type = request.headers.get("content-type", "")
    if not _is_json(content_type):
        return error(
            415,
            "unsupported_media_type",
            f"content type {content_type or '(none)'!r} is not JSON; send application/json",
        )
    limit = settings.max_body_bytes
    body = await body_or_error(request, limit)
    if not isinstance(body, bytes):
        return body
    headers = request.headers
    try:
        check_delivery_id(headers)
    except EventError as exc:
        return error(400, "bad_event", str(exc))
    try:
        delivery = verify(settings, source, headers, body)
    except SignatureError as exc:
        refusals.warn(source, str(exc))
        return error(401, "bad_signature", str(exc))
    except ConfigError as exc:
        # The bridge's own secret cannot check this scheme (a default secret kept for
        # GitHub-signed sources, used by a standard one): the operator's to fix, said
        # once per request without a traceback; the sender retries later.
        logger.error("webhook for source %r cannot be verified: %s", source, exc)
        return error(
            500,
            "secret_misconfigured",
            f"the bridge's secret for source {source!r} cannot check this signature scheme",
        )
    request.scope[metrics.VERIFIED] = True
    try:
        guard = FloatGuard()
        payload = parse_json(body, guard)
        deep = guard.overflowed or may_need_walk(body)
        events = to_events(source, headers, payload, delivery, content_type, deep=deep)
        check_not_reserved([e.type for e in events], isinstance(payload, list))
    except EventError as exc:
        return error(400, "bad_event", str(exc))
    # One event is at most its share of the body; a batch may repeat what the body holds
    # once (a Lytics profile in each of its segment events), so its stored size is bounded.
    stored_limit = 2 * limit
    if len(events) > 1 and stored_size(events, stored_limit) > stored_limit:
        return error(
            413,
            "events_too_large",
            f"the {len(events)} events of this body would take over {stored_limit} bytes "
            "to store; send fewer per request",
        )
    try:
        admitted = await ingress.store.admit(events)
    except StoreUnavailable as exc:
        logger.error("webhook to %s not stored: %s", source, exc)
        return error(503, "store_unavailable", "events cannot be stored right now; retry later")
    accepted = [a.id for a in admitted if a.new]
    duplicates = [a.id for a in admitted if not a.new]
    metrics.webhook_events(ingress.metrics, source, len(accepted), len(duplicates))
    if accepted:
        logger.debug("webhook to %s accepted events %s", source, ", ".join(accepted))
    return JSONResponse(
        {"accepted": accepted, "duplicates": duplicates}, status_code=202 if accepted else 200
    )
