"""Liveness and readiness: /healthz answers while serving; /readyz says what is not ready.

Both are unauthenticated, so /readyz answers a status, short words and a count only: the
rule errors themselves (with their files and values) are behind the admin token, in
`GET /api/rules` and on the dashboard's rules page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from bridge.rules.live import LiveRules

READY, DEGRADED, NOT_READY = "ready", "degraded", "not ready"
_HEADERS = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class Readiness:
    """What /readyz checks: Redis, the key a live worker keeps refreshing, the rules."""

    redis: Redis
    heartbeat_key: str
    rules: LiveRules


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """`ready` (200): Redis answers, a worker beat recently, the rule set is valid.

    `degraded` (200): all that, but the rule files changed and are invalid, so the last
    good set runs; events are still accepted and run. `not ready` (503): Redis does not
    answer, no worker beat in the last 11 s, or no valid rule set is loaded at all.
    """
    ready: Readiness = request.app.state.readiness
    checks: dict[str, str] = {}
    try:
        await ready.redis.ping()
        checks["redis"] = "ok"
        heartbeat = await ready.redis.exists(ready.heartbeat_key)
        checks["worker"] = "ok" if heartbeat else "no heartbeat"
    except (RedisError, OSError):
        checks["redis"] = "unreachable"
        checks["worker"] = "unknown"
    live = ready.rules
    problems = len(live.problems)
    if live.current is None:
        checks["rules"] = "invalid"
    else:
        checks["rules"] = "stale" if problems else "ok"
    if checks["redis"] != "ok" or checks["worker"] != "ok" or checks["rules"] == "invalid":
        status = NOT_READY
    else:
        status = DEGRADED if checks["rules"] == "stale" else READY
    body = {"status": status, "checks": checks, "rule_problems": problems}
    return JSONResponse(body, status_code=503 if status == NOT_READY else 200, headers=_HEADERS)
