"""Liveness and readiness: /healthz answers while serving; /readyz says what is not ready."""

from __future__ import annotations

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse

from bridge.context import Context
from bridge.worker import health_check_key


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """200 when Redis answers, a valid rule set is loaded and a worker beat recently."""
    bridge: Context = request.app.state.bridge
    problems: list[str] = []
    checks: dict[str, str] = {}
    try:
        await bridge.redis.ping()
        checks["redis"] = "ok"
        heartbeat = await bridge.redis.exists(health_check_key(bridge.settings))
        checks["worker"] = "ok" if heartbeat else "no heartbeat"
        if not heartbeat:
            problems.append("no worker heartbeat in the last 11 s; is `bridge worker` running?")
    except (RedisError, OSError) as exc:
        checks["redis"] = f"unreachable ({type(exc).__name__})"
        checks["worker"] = "unknown"
        problems.append("Redis is unreachable; check REDIS_URL")
    live = bridge.rules
    warnings: list[str] = []
    if live.current is None:
        checks["rules"] = "invalid"
        problems.append("no valid rule set is loaded")
    else:
        checks["rules"] = "ok" if not live.problems else "stale"
        if live.problems:
            # Still ready: events are accepted and run on the last good set.
            warnings.append("the rule files changed and are invalid; running the last good set")
    body = {
        "status": "ready" if not problems else "not ready",
        "checks": checks,
        "problems": problems,
        "warnings": warnings,
        "rule_errors": live.problems,
    }
    return JSONResponse(body, status_code=200 if not problems else 503)
