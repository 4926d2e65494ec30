"""Fixtures for the poller tests: the three API sandboxes over loopback, contexts on them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from bridge.operate.context import Context
from bridge.sandbox.lytho import create_lytho_app
from bridge.sandbox.lytho_workflow import create_lytho_workflow_app
from bridge.sandbox.lytics import create_lytics_app
from bridge.sandbox.server import serve_in_thread
from tests.pollers.support import Sandboxes, make_context

# One server per sandbox for the module, reset before each test: starting uvicorn for
# every test would cost more than the tests themselves.


@pytest.fixture(scope="module")
def running_sandboxes() -> Iterator[Sandboxes]:
    apps = {
        "lytho": create_lytho_app(rate_limit_per_minute=None, rate_limit_per_day=None),
        "workflow": create_lytho_workflow_app(),
        "lytics": create_lytics_app(),
    }
    with (
        serve_in_thread(apps["lytho"]) as lytho_server,
        serve_in_thread(apps["workflow"]) as workflow_server,
        serve_in_thread(apps["lytics"]) as lytics_server,
    ):
        yield Sandboxes(lytho_server.url, workflow_server.url, lytics_server.url, apps)


@pytest.fixture
def sandboxes(running_sandboxes: Sandboxes) -> Sandboxes:
    running_sandboxes.reset()
    return running_sandboxes


@pytest.fixture
async def context(sandboxes: Sandboxes, redis_url: str, key_prefix: str) -> AsyncIterator[Context]:
    ctx = await make_context(redis_url, key_prefix, sandboxes.env())
    try:
        yield ctx
    finally:
        await ctx.close()
