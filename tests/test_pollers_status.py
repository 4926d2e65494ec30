"""The pollers' status: what each run did, lag and budget, in /api/pollers, /metrics, /pollers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.clients.ratelimit import Limit, RateLimiter
from bridge.ingress.pollers import PollResult
from bridge.jobs.schedule import poller_status, run_poller, tick
from bridge.operate.context import Context
from bridge.sandbox.lytho import create_lytho_app
from bridge.sandbox.lytho_workflow import create_lytho_workflow_app
from bridge.sandbox.lytics import create_lytics_app
from bridge.sandbox.server import serve_in_thread
from tests.helpers import Bridge, running_bridge
from tests.pollers.support import LYTICS_TOKEN, Sandboxes, make_context
from tests.test_dashboard import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.test_metrics import parse

TOKEN = "pollers-admin-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}
POLLERS = ("lytho", "lytho_workflow", "lytics")
# The documented Lytho limits without the spacing of the minute limit, so that a test's
# runs are not held 3 s per request: the pollers' budget keys (10per63s,
# 15000per86400s) are the ones the web process reads with the real limits.
LIMITS = {api: (Limit(20, 63), Limit(30_000, 86_400)) for api in ("lytho", "lytho_workflow")}


async def poll_context(redis_url: str, key_prefix: str, sandboxes: Sandboxes, **kw: Any) -> Context:
    return await make_context(redis_url, key_prefix, sandboxes.env(), **{"limits": LIMITS, **kw})


async def make_due(context: Context, names: Sequence[str] = POLLERS) -> None:
    prefix = context.settings.key_prefix
    await context.redis.delete(*(f"{prefix}poll:{name}:due" for name in names))


def by_name(statuses: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {status["name"]: status for status in statuses}


# The sandboxes as tests/pollers/conftest.py serves them: one server each, reset per test.
@pytest.fixture(scope="module", name="running_sandboxes")
def running_sandboxes_fixture() -> Iterator[Sandboxes]:
    apps = {
        "lytho": create_lytho_app(rate_limit_per_minute=None, rate_limit_per_day=None),
        "workflow": create_lytho_workflow_app(),
        "lytics": create_lytics_app(),
    }
    with (
        serve_in_thread(apps["lytho"]) as lytho,
        serve_in_thread(apps["workflow"]) as workflow,
        serve_in_thread(apps["lytics"]) as lytics,
    ):
        yield Sandboxes(lytho.url, workflow.url, lytics.url, apps)


@pytest.fixture(name="sandboxes")
def sandboxes_fixture(running_sandboxes: Sandboxes) -> Sandboxes:
    running_sandboxes.reset()
    return running_sandboxes


@pytest.fixture
def bridge(
    redis_url: str, key_prefix: str, tmp_path: Path, sandboxes: Sandboxes
) -> Iterator[Bridge]:
    env = {**sandboxes.env(), "BRIDGE_ADMIN_TOKEN": TOKEN, "BRIDGE_POLL_INTERVAL_LYTICS": "30"}
    with running_bridge(redis_url, key_prefix, tmp_path, **env) as b:
        b.start_web()
        yield b


# --- the status a run writes ------------------------------------------------------------


async def test_a_run_records_its_outcome_events_requests_and_a_full_pass(
    sandboxes: Sandboxes, redis_url: str, key_prefix: str
) -> None:
    context = await poll_context(redis_url, key_prefix, sandboxes)
    try:
        assert [s["last_run"] for s in await poller_status(context)] == [None, None, None]
        begun = time.time()
        assert set((await tick(context)).values()) == {"done"}
        sandboxes.set_tags(1001, "hero")
        await make_due(context)
        second = time.time()
        await tick(context)
        status = by_name(await poller_status(context))
    finally:
        await context.close()

    assert list(status) == list(POLLERS)
    lytho = status["lytho"]
    run = lytho["last_run"]
    assert run["outcome"] == "done" and run["full_pass"] is True and run["error"] is None
    assert run["events"] == 1 and lytho["events_total"] == 1
    assert second <= run["started_at"] <= run["finished_at"] <= time.time()
    assert lytho["last_full_pass"]["started_at"] == run["started_at"]
    assert 0 <= lytho["lag_seconds"] <= time.time() - second + 0.01
    assert lytho["runs_total"] == 2 and lytho["errors_total"] == 0
    for name in POLLERS:
        assert status[name]["requests_total"] >= 2 * status[name]["last_run"]["requests"] > 0
        assert status[name]["last_run"]["started_at"] >= begun
    # Both runs of each Lytho poller were booked against the pollers' budget (half the API's).
    for name in ("lytho", "lytho_workflow"):
        minute, day = status[name]["budget"]
        assert minute == {
            "limit": "10per63s",
            "count": 10,
            "period": 63,
            "used": status[name]["requests_total"],
        }
        assert day["limit"] == "15000per86400s" and day["used"] >= 1
    assert status["lytics"]["budget"] == []  # Lytics documents no limits: none are imposed
    assert status["lytics"]["interval_seconds"] == 60


async def test_a_pass_over_several_runs_is_as_old_as_its_first_run(
    sandboxes: Sandboxes, redis_url: str, key_prefix: str
) -> None:
    # A pollers' budget of one request a minute: the workflow poller needs five for a pass.
    tight = {"lytho_workflow": (Limit(2, 63),)}
    context = await poll_context(redis_url, key_prefix, sandboxes, limits=tight)
    try:
        assert (await tick(context))["lytho_workflow"] == "partial"
        [first] = [s for s in await poller_status(context) if s["name"] == "lytho_workflow"]
        assert first["last_run"]["full_pass"] is False and first["last_full_pass"] is None
        began = first["last_run"]["started_at"]
        assert (await tick(context))["lytho_workflow"] == "partial"  # the budget is spent

        # The budget opens up: the pass finishes, and it began with the first run.
        context.limiter = RateLimiter(context.redis, LIMITS, key_prefix=f"{key_prefix}ratelimit:")
        context.poll_budget = None
        assert (await tick(context))["lytho_workflow"] == "done"
        [done] = [s for s in await poller_status(context) if s["name"] == "lytho_workflow"]
    finally:
        await context.close()
    assert done["last_full_pass"]["started_at"] == began
    # The status rounds the lag to the millisecond: compare it with the span rounded alike
    # (rounding keeps the order; unrounded, a 21.01 ms pass failed against a 0.021 s lag).
    assert done["lag_seconds"] >= round(done["last_run"]["finished_at"] - began, 3) > 0
    assert done["runs_total"] == 3 and done["last_run"]["full_pass"] is True


class Failing:
    """A poller that fails with a message holding a secret."""

    name = "lytics"
    event_types: Sequence[str] = ()

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def poll(self, budget: Any) -> PollResult:
        raise self.exc

    async def backfill(self, budget: Any, progress: Any) -> int:
        return 0


async def test_an_error_is_recorded_with_its_secrets_masked(
    sandboxes: Sandboxes, redis_url: str, key_prefix: str
) -> None:
    context = await poll_context(redis_url, key_prefix, sandboxes)
    try:
        boom = RuntimeError(f"refused token {LYTICS_TOKEN}")
        assert await run_poller(context, Failing(boom)) == "failed"
        [lytics] = [s for s in await poller_status(context) if s["name"] == "lytics"]
    finally:
        await context.close()
    assert lytics["last_run"]["outcome"] == "failed"
    assert lytics["last_run"]["error"] == "RuntimeError: refused token **********"
    assert lytics["errors_total"] == 1 and lytics["runs_total"] == 1
    assert lytics["last_full_pass"] is None
    assert lytics["lag_seconds"] is not None  # counted from the first run


# --- the admin API and /metrics over HTTP -----------------------------------------------


async def test_the_api_and_metrics_show_a_real_poll_run(
    bridge: Bridge, sandboxes: Sandboxes, redis_url: str, key_prefix: str
) -> None:
    started = time.time()
    assert httpx.get(f"{bridge.web_url}/api/pollers").status_code == 401
    before = httpx.get(f"{bridge.web_url}/api/pollers", headers=AUTH).json()["pollers"]
    assert [p["name"] for p in before] == list(POLLERS)
    assert all(p["last_run"] is None and p["lag_seconds"] is None for p in before)

    context = await poll_context(redis_url, key_prefix, sandboxes)
    try:
        await tick(context)
        sandboxes.set_tags(1001, "hero")
        await make_due(context)
        await tick(context)
        await make_due(context, ["lytics"])
        await run_poller(context, Failing(RuntimeError(f"token {LYTICS_TOKEN}")))
    finally:
        await context.close()

    response = httpx.get(f"{bridge.web_url}/api/pollers", headers=AUTH)
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    assert LYTICS_TOKEN not in response.text
    pollers = by_name(response.json()["pollers"])
    assert pollers["lytho"]["events_total"] == 1
    assert pollers["lytics"]["interval_seconds"] == 30
    assert pollers["lytics"]["last_run"]["error"] == "RuntimeError: token **********"

    text = httpx.get(f"{bridge.web_url}/metrics", timeout=10).text
    # Every pass began during this test: no lag is older than the test.
    oldest_possible = time.time() - started + 0.001
    assert LYTICS_TOKEN not in text
    samples = parse(text)
    for name in POLLERS:
        label = f'{{poller="{name}"}}'
        status = pollers[name]
        ended = samples[f"lytbridge_poller_last_run_timestamp_seconds{label}"]
        assert ended == pytest.approx(status["last_run"]["finished_at"])
        assert 0 <= samples[f"lytbridge_poller_lag_seconds{label}"] <= oldest_possible
        assert samples[f"lytbridge_poller_events_total{label}"] == status["events_total"]
        assert samples[f"lytbridge_poller_requests_total{label}"] == status["requests_total"]
        assert samples[f"lytbridge_poller_runs_total{label}"] == status["runs_total"]
    assert samples['lytbridge_poller_events_total{poller="lytho"}'] == 1
    assert samples['lytbridge_poller_errors_total{poller="lytics"}'] == 1
    assert samples['lytbridge_poller_errors_total{poller="lytho"}'] == 0
    minute = '{api="lytho_workflow",limit="10per63s"}'
    assert samples[f"lytbridge_poller_budget_limit{minute}"] == 10
    assert (
        samples[f"lytbridge_poller_budget_used{minute}"]
        == (pollers["lytho_workflow"]["requests_total"])
    )
    assert not any(key.startswith('lytbridge_poller_budget_used{api="lytics"') for key in samples)


# --- the dashboard page, in a real browser -----------------------------------------------


def test_the_pollers_page_needs_a_login(bridge: Bridge) -> None:
    response = httpx.get(f"{bridge.web_url}/pollers")
    assert response.status_code == 303 and response.headers["location"] == "/login?next=/pollers"
    page = httpx.get(f"{bridge.web_url}/pollers", headers=AUTH)
    assert page.status_code == 200
    assert page.text.count("not run yet") == 3


@pytest.mark.browser
def test_browser_pollers_page(
    bridge: Bridge, sandboxes: Sandboxes, redis_url: str, key_prefix: str
) -> None:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    async def poll() -> None:
        context = await poll_context(redis_url, key_prefix, sandboxes)
        try:
            await tick(context)
            sandboxes.set_tags(1001, "hero")
            await make_due(context, ["lytho"])
            await tick(context)
            await make_due(context, ["lytics"])
            await run_poller(context, Failing(RuntimeError(f"token {LYTICS_TOKEN} refused")))
        finally:
            await context.close()

    asyncio.run(poll())
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(
                base_url=bridge.web_url, viewport={"width": 1280, "height": 900}
            )
            page.set_default_timeout(15_000)
            page.goto("/")
            page.fill("#token", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url("**/")
            page.click("nav >> text=Pollers")
            page.wait_for_url("**/pollers")
            assert page.locator("h1").inner_text() == "Pollers"
            assert page.locator("nav [aria-current=page]").inner_text() == "Pollers"
            lytho = page.locator("tr[data-poller=lytho]").inner_text()
            assert "done" in lytho and "1 min" in lytho
            assert "1 / 1" in lytho  # one event in the last run, one in all
            assert (
                "2 / 10 per 1\xa0min\xa03\xa0s" in lytho
            )  # two requests of the pollers' minute budget
            lytics = page.locator("tr[data-poller=lytics]").inner_text()
            assert "failed" in lytics and "RuntimeError: token ********** refused" in lytics
            assert "30 s" in lytics and "no limit" in lytics
            assert page.locator("table.pollers tbody tr").count() == 3
            assert LYTICS_TOKEN not in page.content() and TOKEN not in page.content()
            page.screenshot(path=str(ARTIFACTS / "dashboard-pollers.png"), full_page=True)
        finally:
            browser.close()
