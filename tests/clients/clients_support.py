"""Helpers shared by the client tests: credentials, a fake sleep, sandbox controls."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from bridge.sandbox.server import ThreadedServer

LYTHO_KEY = "lytho-key-s3cr3t-0001"
LYTICS_TOKEN = "lytics-token-s3cr3t-0002"
WF_ID = "wf-client"
WF_SECRET = "wf-secret-s3cr3t-0003"


class FakeSleep:
    """An injectable sleep that records the delays and only yields to the loop."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)  # ok-sleep: a fake sleep only yields to the loop


class Control:
    """The `/_sandbox/` endpoints of one running sandbox."""

    def __init__(self, server: ThreadedServer, app: Any) -> None:
        self.url = server.url
        self.state = app.state.sandbox

    def post(self, path: str, body: Any = None) -> httpx.Response:
        response = httpx.post(f"{self.url}/_sandbox/{path}", json=body)
        response.raise_for_status()
        return response

    def patch(self, path: str, body: Any) -> httpx.Response:
        response = httpx.patch(f"{self.url}/_sandbox/{path}", json=body)
        response.raise_for_status()
        return response

    def fail(self, status: int | None, **spec: Any) -> None:
        self.post("fail", {"status": status, **spec})

    def requests(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/_sandbox/requests")
        response.raise_for_status()
        found: list[dict[str, Any]] = response.json()["requests"]
        return found
