"""GET /metrics: every process's counts, summed in Redis, in Prometheus text format."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.operate.context import Context
from bridge.operate.metrics import series
from bridge.operate.queries import pollers

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Family:
    """One metric family of the exposition: its name, type and help text."""

    name: str
    kind: str  # counter, histogram or gauge
    help: str


FAMILIES: tuple[Family, ...] = (
    Family(
        "lytbridge_webhook_requests_total",
        "counter",
        "Webhook requests answered, by source and HTTP status.",
    ),
    Family(
        "lytbridge_webhook_ack_seconds",
        "histogram",
        "Seconds from a webhook request to its 2xx acknowledgement (stored and queued).",
    ),
    Family(
        "lytbridge_webhook_events_total",
        "counter",
        "Events in acknowledged webhooks, by source and outcome (accepted or duplicate).",
    ),
    Family(
        "lytbridge_events_total",
        "counter",
        "Events matched against the rules by a worker, by source and type (replays excluded).",
    ),
    Family(
        "lytbridge_rule_matches_total",
        "counter",
        "Events a rule matched, by rule (including runs held back by dedupe or throttle).",
    ),
    Family(
        "lytbridge_steps_total",
        "counter",
        "Step attempts by rule, action and status (succeeded, failed, skipped, rate_limited).",
    ),
    Family(
        "lytbridge_step_retries_total",
        "counter",
        "Failed step attempts that were scheduled to be tried again, by rule and action.",
    ),
    Family(
        "lytbridge_step_duration_seconds",
        "histogram",
        "Seconds one step attempt took, by action.",
    ),
    Family(
        "lytbridge_runs_total",
        "counter",
        "Rule runs that ended, by rule and outcome (succeeded, succeeded_with_errors, "
        "dead_lettered).",
    ),
    Family(
        "lytbridge_dead_letters_total",
        "counter",
        "Rule runs that exhausted their tries and became dead letters, by rule.",
    ),
    Family(
        "lytbridge_rate_limiter_waits_total",
        "counter",
        "Outbound requests that waited for the shared rate limiter (or gave up), by API.",
    ),
    Family(
        "lytbridge_rate_limiter_wait_seconds_total",
        "counter",
        "Seconds spent waiting for the shared rate limiter, by API.",
    ),
    Family("lytbridge_dead_letters", "gauge", "Dead letters waiting to be retried or dropped."),
    Family("lytbridge_queue_jobs", "gauge", "Jobs in the queue (due now or deferred)."),
    Family(
        "lytbridge_worker_up",
        "gauge",
        "1 when a worker wrote its heartbeat in the last 11 s, else 0.",
    ),
    Family("lytbridge_rules", "gauge", "Rules of the rule set in force, by state."),
    Family(
        "lytbridge_rule_set_valid",
        "gauge",
        "1 when the rule files on disk are valid, 0 when the last good set is kept (or none).",
    ),
    Family(
        "lytbridge_poller_last_run_timestamp_seconds",
        "gauge",
        "When the poller's last run ended (Unix time), by poller.",
    ),
    Family(
        "lytbridge_poller_lag_seconds",
        "gauge",
        "Age of the poller's oldest observation: now minus the start of its last full pass.",
    ),
    Family("lytbridge_poller_runs_total", "counter", "Poll runs, by poller."),
    Family("lytbridge_poller_events_total", "counter", "Events the poller emitted, by poller."),
    Family(
        "lytbridge_poller_errors_total",
        "counter",
        "Poll runs that ended in an error, by poller.",
    ),
    Family(
        "lytbridge_poller_requests_total",
        "counter",
        "Requests the poller made to its API (booked against the pollers' budget), by poller.",
    ),
    Family(
        "lytbridge_poller_full_passes",
        "gauge",
        "1 when the poller reads a kind whole every cycle because its API has or honours no "
        "modified-since filter, by poller and kind.",
    ),
    Family(
        "lytbridge_poller_budget_used",
        "gauge",
        "Requests of the pollers' budget in use now (GCRA state), by API and limit.",
    ),
    Family(
        "lytbridge_poller_budget_limit",
        "gauge",
        "Requests the pollers' budget allows per period, by API and limit.",
    ),
)
_FAMILY = {f.name: f for f in FAMILIES}


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


async def gauges(bridge: Context) -> dict[str, float]:
    """What is read at scrape time: dead letters, queue, worker heartbeat, rules."""
    async with bridge.redis.pipeline(transaction=False) as pipe:
        pipe.zcard(bridge.keys.dead_letter_index)
        pipe.zcard(bridge.settings.queue_name)
        pipe.exists(bridge.keys.health_check(bridge.settings.queue_name))
        dead, queued, heartbeat = await pipe.execute()
    out = {
        "lytbridge_dead_letters": float(dead),
        "lytbridge_queue_jobs": float(queued),
        "lytbridge_worker_up": 1.0 if heartbeat else 0.0,
    }
    live = bridge.rules
    rules = live.current.rules if live.current is not None else ()
    enabled = sum(1 for rule in rules if rule.enabled)
    out[series("lytbridge_rules", {"state": "enabled"})] = float(enabled)
    out[series("lytbridge_rules", {"state": "disabled"})] = float(len(rules) - enabled)
    out["lytbridge_rule_set_valid"] = 1.0 if live.current is not None and not live.problems else 0.0
    out.update(await poller_gauges(bridge))
    return out


async def poller_gauges(bridge: Context) -> dict[str, float]:
    """The pollers' series, read from their status hashes and the budget's limiter state."""
    out: dict[str, float] = {}
    for status in await pollers(bridge):
        label = {"poller": status["name"]}
        run = status["last_run"]
        if run is not None:
            out[series("lytbridge_poller_last_run_timestamp_seconds", label)] = run["finished_at"]
        if status["lag_seconds"] is not None:
            out[series("lytbridge_poller_lag_seconds", label)] = status["lag_seconds"]
        for name in ("runs", "events", "errors", "requests"):
            out[series(f"lytbridge_poller_{name}_total", label)] = float(status[f"{name}_total"])
        for kind, full in status.get("full_passes", {}).items():
            labels = {"poller": status["name"], "kind": kind}
            out[series("lytbridge_poller_full_passes", labels)] = 1.0 if full else 0.0
        for limit in status["budget"]:
            labels = {"api": status["name"], "limit": limit["limit"]}
            out[series("lytbridge_poller_budget_used", labels)] = float(limit["used"])
            out[series("lytbridge_poller_budget_limit", labels)] = float(limit["count"])
    return out


def _family_of(field: str) -> tuple[str, str]:
    """(family name, the series' own name) of a stored series."""
    name = field.split("{", 1)[0]
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base in _FAMILY and _FAMILY[base].kind == "histogram":
            return base, name
    return name, name


def _sort_key(field: str) -> tuple[str, str, int, float]:
    """Series of one label set together; buckets in increasing `le`, then _sum, _count."""
    name, _, rest = field.partition("{")
    inner = rest[:-1]
    le = math.inf
    if name.endswith("_bucket"):
        head, sep, tail = inner.rpartition('le="')
        if sep:
            raw = tail[:-1]
            le = math.inf if raw == "+Inf" else float(raw)
            inner = head.rstrip(",")
    order = {"_bucket": 0, "_sum": 1, "_count": 2}
    suffix = next((s for s in order if name.endswith(s)), "")
    return inner, name.removesuffix(suffix) if suffix else name, order.get(suffix, 0), le


def exposition(values: Mapping[str, float]) -> str:
    """The Prometheus text exposition of stored series values."""
    grouped: defaultdict[str, list[str]] = defaultdict(list)
    for field in values:
        name, _ = _family_of(field)
        if name in _FAMILY:
            grouped[name].append(field)
    lines: list[str] = []
    for family in FAMILIES:
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for field in sorted(grouped.get(family.name, ()), key=_sort_key):
            lines.append(f"{field} {_number(values[field])}")
    return "\n".join(lines) + "\n"


async def render(bridge: Context) -> str:
    """Everything every process counted (this one's last increments included), and gauges."""
    await bridge.metrics.flush()
    raw = await bridge.redis.hgetall(bridge.metrics.counters_key)  # type: ignore[misc]
    values = {k.decode(): float(v) for k, v in raw.items()}
    values.update(await gauges(bridge))
    return exposition(values)


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: Prometheus text format; 503 when Redis cannot be read."""
    bridge: Context = request.app.state.bridge
    try:
        text = await render(bridge)
    except (RedisError, OSError):
        return JSONResponse(
            {"error": "store_unavailable", "message": "metrics cannot be read from Redis now"},
            status_code=503,
        )
    return Response(text, media_type=CONTENT_TYPE)
