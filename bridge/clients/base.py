"""The shared HTTP base of every API client: timeouts, retries, Retry-After, rate limits."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import httpx

from bridge.clients.ratelimit import Limiter
from bridge.errors import ClientError, PermanentError, RateLimited
from bridge.settings import Secret

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)

# Query parameters that may carry a credential: never shown in a message or a log.
_SECRET_PARAMS = frozenset({"key", "apikey", "api_key", "access_token", "token", "client_secret"})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one call tries before it gives the problem back to its caller."""

    attempts: int = 3  # tries in all for 5xx, timeouts and connection errors
    backoff: float = 0.5  # cap of the first jittered delay, doubled per try
    max_backoff: float = 4.0
    total: float = 30.0  # seconds one call may spend on retries, sleeps included
    rate_limit_wait: float = 5.0  # seconds one call may wait on 429s before RateLimited
    rate_limit_backoff: float = 2.0  # first wait on a 429 that carries no Retry-After


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def shown_path(url: httpx.URL) -> str:
    """The path and query of `url` as messages show it, without credential parameters."""
    params: list[tuple[str, str | int | float | bool | None]] = [
        (k, v) for k, v in url.params.multi_items() if k.lower() not in _SECRET_PARAMS
    ]
    query = str(httpx.QueryParams(params))
    return url.path + (f"?{query}" if query else "")


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() if response.text.lstrip()[:1] not in "<" else ""
    if isinstance(body, dict):
        for field in ("message", "error_description", "error", "detail"):
            value = body.get(field)
            if isinstance(value, str) and value:
                return value[:200]
    return ""


class ApiClient:
    """Base of the API clients: one place for HTTP on an injected `httpx.AsyncClient`.

    Every call gets explicit timeouts, waits for the shared rate limiter, retries 5xx,
    timeouts and connection errors a few times with full jitter, waits out short 429s
    (`Retry-After` in seconds or as an HTTP date, else its own backoff) and raises
    `RateLimited` for long ones, `PermanentError` for other 4xx. Messages name the
    method, path and status and hint at the fix; they never carry a secret.
    """

    api = "API"  # the service's name in messages
    limiter_key = ""  # the limiter's name of this API; empty for none
    credential_hint = "check the credentials"

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        limiter: Limiter | None = None,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self._http = http
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._limiter = limiter
        self.retry = retry or RetryPolicy()
        self.timeout = timeout or DEFAULT_TIMEOUT
        self._sleep: Sleep = sleep or asyncio.sleep

    # Hooks for subclasses.

    async def _auth_headers(self) -> dict[str, str]:
        return {}

    def _shown(self, url: httpx.URL) -> str:
        """How messages and logs show a request's path (the upload link shows no query)."""
        return shown_path(url)

    async def _refresh_auth(self) -> bool:
        """Called once on a 401; return True to retry the call with fresh credentials."""
        return False

    def _secrets(self) -> Iterable[str]:
        """Values to redact from any text a server sends back into a message."""
        return ()

    # The call.

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url + path.lstrip("/")

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        authenticate: bool = True,
        limited: bool = True,
    ) -> httpx.Response:
        """Send one request with retries; return the 2xx response or raise ClientError."""
        started = time.monotonic()
        failures = 0
        limited_waits = 0
        waited_429 = 0.0
        refreshed = False
        while True:
            if limited and self._limiter is not None and self.limiter_key:
                await self._limiter.acquire(self.limiter_key)
            all_headers = dict(headers or {})
            if authenticate:
                all_headers.update(await self._auth_headers())
            request = self._http.build_request(
                method,
                self.url(path),
                params=params,
                json=json,
                content=content,
                data=data,
                headers=all_headers,
                timeout=self.timeout,
            )
            where = f"{method} {self._shown(request.url)}"
            try:
                response = await self._http.send(request)
            except httpx.UnsupportedProtocol:
                raise PermanentError(
                    f"{where} cannot be sent: {self.base_url} is not an http(s) URL"
                ) from None
            except httpx.TransportError as exc:
                failures += 1
                problem = (
                    "timed out"
                    if isinstance(exc, httpx.TimeoutException)
                    else f"failed ({type(exc).__name__})"
                )
                delay = self._backoff(failures)
                if failures >= self.retry.attempts or self._out_of_time(started, delay):
                    raise ClientError(
                        f"{where} {problem} after {failures} requests; "
                        f"is {self.api} reachable at {self.base_url}?"
                    ) from None
                logger.warning("%s %s; retry %s in %.2fs", where, problem, failures, delay)
                await self._sleep(delay)
                continue

            status = response.status_code
            if status < 400:
                return response
            await response.aread()
            if status == 401 and authenticate and not refreshed and await self._refresh_auth():
                refreshed = True
                continue
            if status == 429:
                limited_waits += 1
                header = parse_retry_after(response.headers.get("Retry-After"))
                wait = header if header is not None else self._rate_limit_backoff(limited_waits)
                if waited_429 + wait > self.retry.rate_limit_wait:
                    raise RateLimited(
                        self._message(where, response, f"retry after {wait:.1f}s"),
                        retry_after=wait,
                    )
                logger.warning("%s → 429; waiting %.2fs", where, wait)
                waited_429 += wait
                await self._sleep(wait)
                continue
            if status >= 500 or status == 408:
                failures += 1
                delay = self._backoff(failures)
                if failures >= self.retry.attempts or self._out_of_time(started, delay):
                    raise ClientError(
                        self._message(where, response, f"{self.api} failed {failures} times"),
                        status=status,
                    )
                logger.warning("%s → %s; retry %s in %.2fs", where, status, failures, delay)
                await self._sleep(delay)
                continue
            raise PermanentError(self._message(where, response, self._hint(status)), status=status)

    async def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """`request`, then the decoded JSON body (None for an empty body)."""
        response = await self.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            where = f"{method} {self._shown(response.request.url)}"
            raise ClientError(
                f"{where} → {response.status_code} but the body is not JSON; "
                f"is {self.base_url} the {self.api} API?",
                status=response.status_code,
            ) from None

    # Helpers.

    def _backoff(self, failures: int) -> float:
        """Full jitter: a random delay up to a cap that doubles with each failure."""
        cap = min(self.retry.max_backoff, self.retry.backoff * 2.0 ** (failures - 1))
        return random.uniform(0, cap)

    def _rate_limit_backoff(self, waits: int) -> float:
        """A 429 without Retry-After: doubling waits, half of each jittered."""
        base = min(60.0, self.retry.rate_limit_backoff * 2.0 ** (waits - 1))
        return base / 2 + random.uniform(0, base / 2)

    def _out_of_time(self, started: float, delay: float) -> bool:
        return time.monotonic() - started + delay > self.retry.total

    def _hint(self, status: int) -> str:
        if status == 401:
            return self.credential_hint
        if status == 403:
            return f"the credentials lack permission for this; {self.credential_hint}"
        if status == 404:
            return "no such resource; check the id or the path"
        if status == 409:
            return "conflict with the current state; read it again before writing"
        return "the request was refused; fix it before retrying"

    def _message(self, where: str, response: httpx.Response, hint: str) -> str:
        status = response.status_code
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = response.reason_phrase
        text = f"{where} → {status} {reason}"
        detail = _server_message(response)
        # Auth failures say nothing useful beyond the status; other errors explain themselves.
        if (
            detail
            and status >= 400
            and status not in (401, 403)
            and detail.lower() != reason.lower()
        ):
            text += f": {self._redact(detail)}"
        return f"{text}; {hint}"

    def _redact(self, text: str) -> str:
        for secret in self._secrets():
            if secret:
                text = text.replace(secret, "**********")
        return text

    def _error(self, response: httpx.Response, hint: str, *, permanent: bool = True) -> ClientError:
        """An error about a 2xx answer whose content is a failure (such as partial rejects)."""
        where = f"{response.request.method} {self._shown(response.request.url)}"
        cls = PermanentError if permanent else ClientError
        return cls(self._message(where, response, hint), status=response.status_code)


class KeyedClient(ApiClient):
    """An API client that sends one secret credential in one header (Lytho, Lytics)."""

    credential_header = "Authorization"

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        credential: Secret,
        limiter: Limiter | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        super().__init__(http, base_url, limiter=limiter, retry=retry, timeout=timeout, sleep=sleep)
        self._credential = credential

    async def _auth_headers(self) -> dict[str, str]:
        return {self.credential_header: self._credential.get()}

    def _secrets(self) -> Iterable[str]:
        return (self._credential.get(),)
