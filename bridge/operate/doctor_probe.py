"""`bridge doctor`: check what lytbridge assumes about the configured APIs, read-only (operate).

Each API is probed with a bounded number of GET and OPTIONS requests (and the one POST of
the Workflow token exchange), every one booked on the same shared rate limiter as the
clients, so a doctor run against production never writes and never outruns Lytho's
budget. Each assumption becomes one `Check`: ✓ held, ✗ did not (the line says what was
seen), ? cannot be told from reading, a dash: not configured. The checks of each API live in
doctor_lytho.py, doctor_workflow.py and doctor_lytics.py.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from bridge.clients.base import shown_path
from bridge.clients.ratelimit import Limit, Limiter

OK: Final = "ok"
FAIL: Final = "fail"
UNKNOWN: Final = "unknown"
SKIPPED: Final = "skipped"
SYMBOLS: Final = {OK: "✓", FAIL: "✗", UNKNOWN: "?", SKIPPED: "\u2013"}

DAM: Final = "Lytho DAM"
WORKFLOW: Final = "Lytho Workflow"
LYTICS: Final = "Lytics"

# Methods the doctor sends to an API; the token exchange is its only POST.
READS: Final = frozenset({"GET", "OPTIONS"})
_RATE_HEADER = re.compile(r"^(x-)?rate-?limit|^retry-after$", re.IGNORECASE)
# The longest the doctor waits for one slot of the shared limiter (Lytho's documented
# budget is 20 a minute; another process may hold some of the slots).
MAX_SLOT_WAIT: Final = 300.0


@dataclass(frozen=True)
class Check:
    """One assumption about an API and what the API showed about it."""

    api: str
    key: str  # what was checked, e.g. "dam.pages.first_page"
    title: str
    status: str
    saw: str
    expected: str = ""
    entries: tuple[str, ...] = ()  # the profile entries this line is about

    @property
    def confirmed(self) -> tuple[str, ...]:
        """The profile entries this line confirms (none unless it held)."""
        return self.entries if self.status == OK else ()

    def line(self) -> str:
        if self.status == SKIPPED:
            return f"{SYMBOLS[SKIPPED]} {self.api}: {self.title} ({self.saw})"
        text = f"{SYMBOLS[self.status]} {self.api}: {self.title}: {self.saw}"
        if self.expected and self.status in (FAIL, UNKNOWN):
            text += f"; expected {self.expected}"
        if self.entries:
            names = ", ".join(self.entries)
            text += f"  [confirms {names}]" if self.status == OK else f"  [{names}]"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "api": self.api,
            "key": self.key,
            "title": self.title,
            "status": self.status,
            "saw": self.saw,
            "expected": self.expected,
            "entries": list(self.entries),
            "confirmed": list(self.confirmed),
        }


class Halt(Exception):
    """Ends the checks of one API with a last line (refused credentials, no answer, 429)."""

    def __init__(self, check: Check) -> None:
        super().__init__(check.saw)
        self.check = check


@dataclass
class Answer:
    """What an API answered to one request of the doctor."""

    method: str
    where: str  # method and path as shown, without credentials
    status: int  # 0: no answer
    headers: httpx.Headers
    body: Any = None  # the decoded JSON, None if empty or not JSON
    text: str = ""  # a short reason when there is no usable answer

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def shown(self) -> str:
        """`GET /v1/assets?page=0&size=1 → 200`."""
        return f"{self.where} → {self.status or 'no answer'}"

    @property
    def is_json(self) -> bool:
        return self.body is not None

    def not_json(self, setting: str, what: str = "the API's base URL") -> str:
        """What a 2xx answer that is not JSON (a login page, a wrong URL's page) says."""
        kind = self.headers.get("content-type", "").split(";")[0].strip() or "no content type"
        return f"{self.where} answered {self.status} with {kind}, not JSON: is {setting} {what}?"

    def message(self) -> str:
        """The server's own message in an error body, if it gave one."""
        body = self.body
        if isinstance(body, dict):
            for name in ("message", "error_description", "error", "detail"):
                value = body.get(name)
                if isinstance(value, str) and value:
                    return value[:160]
        return self.text[:160]


@dataclass
class Tally:
    """Requests sent per API, and the most each API's checks may send."""

    planned: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    rate_headers: dict[str, dict[str, str]] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    @property
    def total_planned(self) -> int:
        return sum(self.planned.values())


class Probe:
    """Sends one API's doctor requests: counted, booked on the shared limiter, never writes."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        api: str,
        limiter: Limiter,
        limiter_key: str,
        tally: Tally,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        self._http = http
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.api = api
        self._limiter = limiter
        self._limiter_key = limiter_key
        self._tally = tally
        self.headers = dict(headers or {})
        self._timeout = timeout or httpx.Timeout(15.0, connect=5.0)

    async def get(self, path: str, params: Any = None) -> Answer:
        return await self._send("GET", path, params=params)

    async def options(self, path: str) -> Answer:
        return await self._send("OPTIONS", path)

    async def token(self, url: str, data: Mapping[str, str], headers: Mapping[str, str]) -> Answer:
        """The token exchange: the one POST, to the token URL, never to the API."""
        return await self._send("POST", url, data=data, headers=headers, authenticate=False)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        authenticate: bool = True,
    ) -> Answer:
        if method not in READS and not (method == "POST" and not authenticate):
            raise ValueError(f"bridge doctor never sends {method} to an API")
        sent = self._tally.sent.get(self.api, 0)
        if sent >= self._tally.planned.get(self.api, 0):
            raise RuntimeError(f"bridge doctor planned at most {sent} requests to {self.api}")
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        try:
            await self._limiter.acquire(self._limiter_key, max_wait=MAX_SLOT_WAIT)
        except Exception as exc:  # RateLimited, or the shared limiter's Redis went away
            raise Halt(
                Check(
                    self.api,
                    "rate_limit",
                    "rate limit",
                    UNKNOWN,
                    f"no request slot free within {MAX_SLOT_WAIT:g}s ({exc}); "
                    "stopped here to stay inside the budget; run bridge doctor again later",
                )
            ) from None
        self._tally.sent[self.api] = sent + 1
        all_headers = {**(self.headers if authenticate else {}), **(headers or {})}
        request = self._http.build_request(
            method, url, params=params, data=data, headers=all_headers, timeout=self._timeout
        )
        where = f"{method} {shown_path(request.url)}"
        try:
            response = await self._http.send(request)
        except httpx.HTTPError as exc:
            reason = "timed out" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
            return Answer(method, where, 0, httpx.Headers(), text=f"{reason}: {exc}"[:160])
        self._note_rate_headers(response.headers)
        try:
            body = response.json() if response.content else None
            text = ""
        except ValueError:
            body, text = None, response.text[:160].strip()
        answer = Answer(method, where, response.status_code, response.headers, body, text)
        if answer.status == 429:
            wait = response.headers.get("Retry-After", "")
            raise Halt(
                Check(
                    self.api,
                    "rate_limit",
                    "rate limit",
                    UNKNOWN,
                    f"{answer.shown()} (Retry-After: {wait or 'none'}) although the shared "
                    "limiter spaced the requests: another client may use the same budget; "
                    "stopped here, run bridge doctor again later",
                )
            )
        return answer

    def _note_rate_headers(self, headers: httpx.Headers) -> None:
        self._tally.answers[self.api] = self._tally.answers.get(self.api, 0) + 1
        seen = self._tally.rate_headers.setdefault(self.api, {})
        for name, value in headers.items():
            if _RATE_HEADER.match(name):
                seen[_title_case(name)] = value


def _title_case(name: str) -> str:
    return "-".join(part[:1].upper() + part[1:] for part in name.lower().split("-")).replace(
        "Ratelimit", "RateLimit"
    )


def unreachable(api: str, answer: Answer, setting: str) -> Halt:
    """A Halt for an API that did not answer at all."""
    return Halt(
        Check(
            api,
            "reachable",
            "reachable",
            FAIL,
            f"{answer.where}: no answer ({answer.text})",
            f"an answer; check {setting}",
        )
    )


def rate_header_check(api: str, tally: Tally) -> Check:
    """The rate-limit headers an API sent, if any.

    lytbridge assumes an API does not announce its limits and paces by its own (the
    profile's `*.rate_limits`, `BRIDGE_RATE_LIMIT_*`): no header is what it expects (✓);
    headers it could read differently are listed for a person to compare (`?`).
    """
    seen = tally.rate_headers.get(api) or {}
    answers = tally.answers.get(api, 0)
    if seen:
        listed = ", ".join(f"{name}: {value}" for name, value in sorted(seen.items()))
        saw = (
            f"{listed} (in {answers} answers); lytbridge paces by its own limits: compare "
            "them with the profile's rate_limits or BRIDGE_RATE_LIMIT_*"
        )
        return Check(api, "rate_limit_headers", "rate-limit headers", UNKNOWN, saw)
    saw = (
        f"none were sent in {answers} answers (looked for X-RateLimit-*, RateLimit-*, "
        "Retry-After), as assumed: lytbridge paces by its own limits"
    )
    return Check(api, "rate_limit_headers", "rate-limit headers", OK, saw)


def not_configured(api: str, missing: Sequence[str]) -> Check:
    return Check(
        api,
        "configured",
        "not configured",
        SKIPPED,
        f"{', '.join(missing)} not set",
    )


class LocalLimiter:
    """The shared limits kept in this process, for when Redis cannot be reached."""

    def __init__(
        self,
        limits: Mapping[str, Sequence[Limit]],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._limits = {api: tuple(found) for api, found in limits.items()}
        self._tat: dict[tuple[str, int], float] = {}
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()

    def limits(self, api: str) -> tuple[Limit, ...]:
        return self._limits.get(api, ())

    async def acquire(
        self,
        api: str,
        *,
        scope: str | None = None,
        max_wait: float | None = None,
        ticket: str | None = None,
    ) -> float:
        """Book the next slot that every limit of `api` allows (GCRA) and sleep until it."""
        limits = self._limits.get(api, ())
        if not limits:
            return 0.0
        async with self._lock:
            now = self._clock()
            tats = [max(self._tat.get((api, i), now), now) for i in range(len(limits))]
            wait = max(
                0.0, *(tat - limit.tolerance - now for tat, limit in zip(tats, limits, strict=True))
            )
            at = now + wait
            for i, (tat, limit) in enumerate(zip(tats, limits, strict=True)):
                self._tat[(api, i)] = max(tat, at) + limit.interval
        if wait > 0:
            await self._sleep(wait)
        return wait
