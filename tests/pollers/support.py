"""Helpers of the poller tests: sandbox controls, contexts, budgets, stored events."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from bridge.clients.ratelimit import Limit, RateLimiter
from bridge.events import Event
from bridge.ingress.pollers import Poller, PollResult
from bridge.operate.context import Context, build_context, create_redis
from bridge.settings import Settings
from tests.helpers import HANG_GUARD_SECONDS

T = TypeVar("T")

LYTHO_KEY = "sandbox-lytho-key"
WF_ID, WF_SECRET = "sandbox-client", "sandbox-secret"
LYTICS_TOKEN = "sandbox-lytics-token"


@dataclass
class Sandboxes:
    lytho: str
    workflow: str
    lytics: str
    apps: dict[str, Any] = field(default_factory=dict)

    def state(self, which: str) -> Any:
        """The sandbox object behind an app (lock it with `.core.lock` to change it)."""
        return self.apps[which].state.sandbox

    def env(self) -> dict[str, str]:
        return {
            "LYTHO_API_URL": f"{self.lytho}/v1/",
            "LYTHO_API_KEY": LYTHO_KEY,
            "LYTHO_WORKFLOW_API_URL": f"{self.workflow}/v1/",
            "LYTHO_TOKEN_URL": f"{self.workflow}/oauth/token",
            "LYTHO_CLIENT_ID": WF_ID,
            "LYTHO_CLIENT_SECRET": WF_SECRET,
            "LYTICS_API_URL": self.lytics,
            "LYTICS_API_TOKEN": LYTICS_TOKEN,
        }

    def reset(self) -> None:
        for url in (self.lytho, self.workflow, self.lytics):
            httpx.post(f"{url}/_sandbox/reset", timeout=5).raise_for_status()

    # Changes, as someone working in Lytho or Lytics would make them.

    def set_tags(self, asset_id: int, *names: str) -> None:
        tags = {t["name"]: t["id"] for t in self.lytho_state()["tags"].values()}
        body = {"tags": [{"id": tags[n], "name": n} for n in names]}
        self._ok(httpx.patch(f"{self.lytho}/_sandbox/assets/{asset_id}", json=body, timeout=5))

    def edit_asset(self, asset_id: int, **fields: Any) -> None:
        self._ok(httpx.patch(f"{self.lytho}/_sandbox/assets/{asset_id}", json=fields, timeout=5))

    def create_asset(self, **fields: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.lytho}/_sandbox/assets", json=fields, timeout=5)
        self._ok(response)
        created: dict[str, Any] = response.json()
        return created

    def delete_asset(self, asset_id: int) -> None:
        self._ok(httpx.delete(f"{self.lytho}/_sandbox/assets/{asset_id}", timeout=5))

    def lytho_state(self) -> dict[str, Any]:
        state: dict[str, Any] = httpx.get(f"{self.lytho}/_sandbox/state", timeout=5).json()
        return state

    def edit_workflow(self, kind: str, item_id: int, **fields: Any) -> None:
        url = f"{self.workflow}/_sandbox/{kind}/{item_id}"
        self._ok(httpx.patch(url, json=fields, timeout=5))

    def lytics_jobs(self) -> list[dict[str, Any]]:
        body = httpx.get(
            f"{self.lytics}/api/job", headers={"Authorization": LYTICS_TOKEN}, timeout=5
        ).json()
        jobs: list[dict[str, Any]] = body["data"]
        return jobs

    def set_job(self, job_id: str, status: str, error: str | None = None) -> None:
        body: dict[str, Any] = {"status": status}
        if error is not None:
            body["error"] = error
        self._ok(httpx.post(f"{self.lytics}/_sandbox/jobs/{job_id}", json=body, timeout=5))

    def requests(self, which: str) -> list[dict[str, Any]]:
        url = getattr(self, which)
        found: list[dict[str, Any]] = httpx.get(f"{url}/_sandbox/requests", timeout=5).json()[
            "requests"
        ]
        return found

    def clear_requests(self, which: str) -> None:
        httpx.delete(f"{getattr(self, which)}/_sandbox/requests", timeout=5).raise_for_status()

    @staticmethod
    def _ok(response: httpx.Response) -> None:
        if response.status_code >= 400:
            raise AssertionError(
                f"{response.request.url} → {response.status_code}: {response.text}"
            )


async def make_context(
    redis_url: str,
    key_prefix: str,
    env: Mapping[str, str],
    *,
    limits: Mapping[str, tuple[Limit, ...]] | None = None,
    load_rules: bool = False,
    max_wait: float = 30.0,
) -> Context:
    """A context on the sandboxes; its rate limits are `limits` (none by default)."""
    settings = Settings.from_env({"REDIS_URL": redis_url, "BRIDGE_KEY_PREFIX": key_prefix, **env})
    redis = create_redis(settings)
    limiter = RateLimiter(
        redis, dict(limits or {}), key_prefix=f"{key_prefix}ratelimit:", max_wait=max_wait
    )
    return await build_context(settings, redis=redis, limiter=limiter, load_rules=load_rules)


class Slots:
    """A budget of `n` requests (None: unlimited), each granted at once."""

    def __init__(self, n: int | None = None) -> None:
        self.left = n
        self.requests = 0

    async def slot(self) -> bool:
        if self.left is not None:
            if self.left <= 0:
                return False
            self.left -= 1
        self.requests += 1
        return True

    def time_left(self) -> float:
        return 10.0


async def poll(poller: Poller, slots: int | None = None) -> PollResult:
    return await poller.poll(Slots(slots))


def poller(context: Context, name: str) -> Poller:
    from bridge.ingress.pollers import configured_pollers

    [found] = [p for p in configured_pollers(context) if p.name == name]
    return found


async def stored_events(context: Context) -> list[Event]:
    """Every event stored under the context's prefix, oldest first."""
    ids = await context.redis.zrange(context.keys.events, 0, -1)
    out = []
    for raw_id in ids:
        raw = await context.redis.get(context.keys.event(raw_id.decode()))
        if raw is not None:
            out.append(Event.from_dict(json.loads(raw)))
    return out


async def async_wait_for(
    predicate: Callable[[], Awaitable[T]],
    timeout: float = HANG_GUARD_SECONDS,
    what: str = "condition",
) -> T:
    """Await `predicate` until it returns something truthy; fail (as hung) after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)  # ok-sleep: polling interval of a bounded wait on a condition
