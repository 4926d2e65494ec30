"""Fixtures for the client tests: sandboxes over loopback, clients that never really sleep."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from clients_support import LYTHO_KEY, LYTICS_TOKEN, WF_ID, WF_SECRET, Control, FakeSleep

from bridge.clients import LythoClient, LythoWorkflowClient, LyticsClient, RetryPolicy
from bridge.sandbox.lytho import create_lytho_app
from bridge.sandbox.lytho_workflow import create_lytho_workflow_app
from bridge.sandbox.lytics import create_lytics_app
from bridge.sandbox.server import serve_in_thread
from bridge.settings import Secret


@pytest.fixture
def fake_sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def retry() -> RetryPolicy:
    return RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05, total=5, rate_limit_wait=10)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


# One server per sandbox for the session, reset through `/_sandbox/reset` before each test:
# starting uvicorn for every test would cost more than all the tests themselves.


@pytest.fixture(scope="session")
def lytho_running() -> Iterator[Control]:
    app = create_lytho_app(LYTHO_KEY, rate_limit_per_minute=None, rate_limit_per_day=None)
    with serve_in_thread(app) as server:
        yield Control(server, app)


@pytest.fixture
def lytho_server(lytho_running: Control) -> Control:
    lytho_running.post("reset")
    return lytho_running


@pytest.fixture
def lytho(
    lytho_server: Control, http: httpx.AsyncClient, retry: RetryPolicy, fake_sleep: FakeSleep
) -> LythoClient:
    return LythoClient(
        http, f"{lytho_server.url}/v1/", Secret(LYTHO_KEY), retry=retry, sleep=fake_sleep
    )


@pytest.fixture(scope="session")
def workflow_running() -> Iterator[Control]:
    app = create_lytho_workflow_app(WF_ID, WF_SECRET)
    with serve_in_thread(app) as server:
        yield Control(server, app)


@pytest.fixture
def workflow_server(workflow_running: Control) -> Control:
    workflow_running.post("reset")
    return workflow_running


@pytest.fixture
def workflow(
    workflow_server: Control, http: httpx.AsyncClient, retry: RetryPolicy, fake_sleep: FakeSleep
) -> LythoWorkflowClient:
    return LythoWorkflowClient(
        http,
        f"{workflow_server.url}/v1/",
        f"{workflow_server.url}/oauth/token",
        WF_ID,
        Secret(WF_SECRET),
        retry=retry,
        sleep=fake_sleep,
    )


@pytest.fixture(scope="session")
def lytics_running() -> Iterator[Control]:
    app = create_lytics_app(LYTICS_TOKEN)
    with serve_in_thread(app) as server:
        yield Control(server, app)


@pytest.fixture
def lytics_server(lytics_running: Control) -> Control:
    lytics_running.post("reset")
    return lytics_running


@pytest.fixture
def lytics(
    lytics_server: Control, http: httpx.AsyncClient, retry: RetryPolicy, fake_sleep: FakeSleep
) -> LyticsClient:
    return LyticsClient(
        http, lytics_server.url, Secret(LYTICS_TOKEN), retry=retry, sleep=fake_sleep
    )
