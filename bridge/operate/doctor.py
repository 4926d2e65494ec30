"""`bridge doctor`: every assumption about the configured APIs, checked read-only (operate).

`Doctor` plans a bounded number of requests per API (printed before they are sent), runs
the Lytho DAM, Lytho Workflow and Lytics checks side by side on the shared rate limiter,
and returns a `Report`: one `Check` per assumption, the requests sent, and which entries
of the Lytho API profile the APIs confirmed.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bridge.clients.lytho_profile import LythoProfile
from bridge.clients.ratelimit import Limiter
from bridge.operate.doctor_lytho import DamDoctor, dam_plan
from bridge.operate.doctor_lytics import Streams, check_lytics, lytics_plan, rule_streams
from bridge.operate.doctor_probe import (
    DAM,
    FAIL,
    LYTICS,
    WORKFLOW,
    Check,
    LocalLimiter,
    Probe,
    Tally,
    not_configured,
    rate_header_check,
)
from bridge.operate.doctor_workflow import WORKFLOW_PLAN, WorkflowDoctor
from bridge.operate.doctor_workflow_pages import PollerFilter
from bridge.settings import Settings

APIS = (DAM, WORKFLOW, LYTICS)
LIMITER_KEYS = {DAM: "lytho", WORKFLOW: "lytho_workflow", LYTICS: "lytics"}


@dataclass
class Report:
    """What a doctor run found."""

    checks: list[Check]
    tally: Tally
    profile: LythoProfile
    limiter: str  # how requests were paced

    @property
    def failed(self) -> bool:
        return any(check.status == FAIL for check in self.checks)

    @property
    def confirmed(self) -> list[str]:
        """Profile entries some line confirmed and no line contradicted."""
        held = {entry for check in self.checks for entry in check.confirmed}
        broken = {entry for c in self.checks if c.status == FAIL for entry in c.entries}
        return sorted(held - broken)

    def summary(self) -> list[str]:
        profile = self.profile
        overridden = len(profile.overridden)
        where = (
            f"{overridden} overridden by {profile.path}"
            if profile.path is not None
            else "none overridden (BRIDGE_LYTHO_PROFILE is not set)"
        )
        sent = ", ".join(
            f"{api} {n}" for api in self.tally.planned if (n := self.tally.sent.get(api))
        )
        return [
            f"{len(self.confirmed)} of {len(profile.entries)} profile entries confirmed; {where}",
            _requests(self.tally.total) + (f" ({sent})" if sent else ""),
        ]

    def to_json(self) -> dict[str, Any]:
        profile = self.profile
        return {
            "ok": not self.failed,
            "checks": [check.to_json() for check in self.checks],
            "requests": self.tally.total,
            "requests_per_api": {api: self.tally.sent.get(api, 0) for api in self.tally.planned},
            "planned_requests": self.tally.total_planned,
            "rate_limiter": self.limiter,
            "profile": {
                "entries": len(profile.entries),
                "confirmed": self.confirmed,
                "overridden": list(profile.overridden),
                "file": None if profile.path is None else str(profile.path),
            },
        }


def _requests(count: int) -> str:
    return f"{count} request{'' if count == 1 else 's'}"


class Doctor:
    """One run of the checks against the APIs the settings configure."""

    def __init__(
        self,
        settings: Settings,
        profile: LythoProfile,
        limiter: Limiter,
        *,
        limiter_note: str = "",
        http: httpx.AsyncClient | None = None,
        poller_filter: PollerFilter | None = None,
    ) -> None:
        self.settings = settings
        self.profile = profile
        self.limiter = limiter
        self.limiter_note = limiter_note
        self._http = http
        self.poller_filter = poller_filter
        s = settings
        self.missing: dict[str, list[str]] = {
            DAM: [] if s.lytho_api_key else ["LYTHO_API_KEY"],
            WORKFLOW: [
                name
                for name, value in (
                    ("LYTHO_CLIENT_ID", s.lytho_client_id),
                    ("LYTHO_CLIENT_SECRET", s.lytho_client_secret),
                    ("LYTHO_TOKEN_URL", s.lytho_token_url),
                )
                if not value
            ],
            LYTICS: [] if s.lytics_api_token else ["LYTICS_API_TOKEN"],
        }
        self.streams = rule_streams(settings) if self.configured(LYTICS) else Streams()
        plans = {DAM: dam_plan(profile), WORKFLOW: WORKFLOW_PLAN, LYTICS: lytics_plan(self.streams)}
        self.tally = Tally(planned={api: plans[api] for api in APIS if self.configured(api)})

    def configured(self, api: str) -> bool:
        return not self.missing[api]

    @property
    def anything(self) -> bool:
        """Whether any API is configured."""
        return any(self.configured(api) for api in APIS)

    def plan(self) -> str:
        """`at most 29 requests (Lytho DAM 16, …)`, said before any is sent."""
        planned = self.tally.planned
        each = ", ".join(f"{api} {n}" for api, n in planned.items())
        # The APIs are checked side by side: the slowest paced one sets the time.
        limits = getattr(self.limiter, "limits", None)
        seconds = 0.0
        for api, count in planned.items():
            found = limits(LIMITER_KEYS[api]) if callable(limits) else ()
            gap = max((limit.interval for limit in found if limit.burst == 1), default=0.0)
            seconds = max(seconds, (count - 1) * gap)
        took = f"; about {math.ceil(seconds)} s at the rate limits" if seconds >= 2 else ""
        return f"at most {_requests(self.tally.total_planned)} ({each}), all reads{took}"

    def _probe(self, http: httpx.AsyncClient, api: str, base_url: str, **headers: str) -> Probe:
        return Probe(
            http,
            base_url,
            api=api,
            limiter=self.limiter,
            limiter_key=LIMITER_KEYS[api],
            tally=self.tally,
            headers=headers,
        )

    async def run(self) -> Report:
        own = self._http is None
        http = self._http or httpx.AsyncClient(follow_redirects=False)
        try:
            results = await asyncio.gather(*(self._run(http, api) for api in APIS))
        finally:
            if own:
                await http.aclose()
        checks = [check for found in results for check in found]
        return Report(checks, self.tally, self.profile, self.limiter_note)

    async def _run(self, http: httpx.AsyncClient, api: str) -> list[Check]:
        if not self.configured(api):
            return [not_configured(api, self.missing[api])]
        s = self.settings
        checks: list[Check]
        if api == DAM:
            key = s.lytho_api_key.get() if s.lytho_api_key else ""
            scheme = str(self.profile.value("dam.auth.scheme"))
            header = str(self.profile.value("dam.auth.header"))
            probe = self._probe(http, api, s.lytho_api_url)
            probe.headers[header] = f"{scheme} {key}" if scheme else key
            checks = await DamDoctor(probe, self.profile).run()
        elif api == WORKFLOW:
            probe = self._probe(http, api, s.lytho_workflow_api_url)
            checks = await WorkflowDoctor(probe, self.profile, s, self.poller_filter).run()
        else:
            token = s.lytics_api_token.get() if s.lytics_api_token else ""
            probe = self._probe(http, api, s.lytics_api_url, Authorization=token)
            checks = await check_lytics(probe, self.streams)
        if self.tally.answers.get(api):
            checks.append(rate_header_check(api, self.tally))
        return checks


async def doctor_limiter(
    settings: Settings, profile: LythoProfile
) -> tuple[Limiter, str, Callable[[], Awaitable[None]], PollerFilter | None]:
    """The shared limiter through Redis, or one in this process when Redis cannot be reached.

    Returns the limiter, a line saying which, a function closing its Redis, and what the
    running Workflow poller does about the modified-since filter (None without Redis).
    """
    import redis

    from bridge.operate.context import create_redis, rate_limiter
    from bridge.queue.store import Keys

    client = create_redis(settings)
    shared = rate_limiter(client, Keys(settings.key_prefix), settings)
    where = re.sub(r"//[^@/]*@", "//", settings.redis_url)

    async def close() -> None:
        await client.aclose(close_connection_pool=True)

    try:
        await asyncio.wait_for(client.ping(), timeout=5)
    except (redis.RedisError, OSError, TimeoutError) as exc:
        local = LocalLimiter({api: shared.limits(api) for api in LIMITER_KEYS.values()})
        note = (
            f"Redis at {where} cannot be reached ({type(exc).__name__}): requests are spaced "
            "by a limiter in this process, at the same rates (other processes' requests "
            "are not counted)"
        )
        return local, note, close, None
    note = f"requests are booked on the shared rate limits in Redis at {where}"

    async def poller_filter() -> dict[str, str] | None:
        from bridge.ingress.pollers.lytho_workflow import filter_status

        return await filter_status(client, settings.key_prefix, profile)

    return shared, note, close, poller_filter
