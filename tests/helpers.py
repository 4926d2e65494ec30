"""Test helpers: wait on conditions, sign webhooks, run the bridge's processes for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis

from bridge.ingress.signatures import sign_standard
from bridge.sandbox.server import ThreadedServer
from bridge.sandbox.slack import DEFAULT_TOKEN, SlackSandbox, create_slack_app
from bridge.settings import Settings
from bridge.web.app import create_app

T = TypeVar("T")

SECRET = "whsec_dGVzdC1zZWNyZXQtZm9yLWx5dGJyaWRnZS10ZXN0cw=="


# How long a wait on a condition may take before the test fails as hung. Not a speed
# limit: a loaded machine may take many times the usual; only a wait that never ends
# should trip it. Below the 60 s pytest-timeout, so that the failure names what it awaited.
HANG_GUARD_SECONDS = 50.0


def wait_for(
    predicate: Callable[[], T], timeout: float = HANG_GUARD_SECONDS, what: str = "condition"
) -> T:
    """Poll `predicate` until it returns something truthy; fail (as hung) after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)  # ok-sleep: polling interval of a bounded wait on a condition


def signed_headers(
    body: bytes, msg_id: str | None = None, secret: str = SECRET, stamp: int | None = None
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = int(time.time()) if stamp is None else stamp
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign_standard(secret, msg_id, stamp, body),
    }


class Bridge:
    """A bridge under test: its environment, web server, Slack sandbox and worker processes."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env = env
        self.tmp = tmp
        self.rules_dir = Path(env["BRIDGE_RULES_DIR"])
        self.templates_dir = Path(env["BRIDGE_TEMPLATES_DIR"])
        self.settings = Settings.from_env(env)
        self.slack = SlackSandbox()
        self.workers: list[subprocess.Popen[bytes]] = []
        self._servers: list[ThreadedServer] = []
        self.web_url = ""
        self.slack_url = ""
        self.redis = redis.Redis.from_url(env["REDIS_URL"])

    def write_rule(self, name: str, text: str) -> None:
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        (self.rules_dir / name).write_text(text)
        self.settings = Settings.from_env(self.env)

    def write_template(self, name: str, text: str) -> None:
        self.templates_dir.mkdir(parents=True, exist_ok=True)
        (self.templates_dir / name).write_text(text)

    def start_slack(self) -> None:
        server = ThreadedServer(create_slack_app(self.slack))
        server.start()
        self._servers.append(server)
        self.slack_url = server.url
        self.env["SLACK_API_URL"] = f"{server.url}/api/"
        self.env.setdefault("SLACK_BOT_TOKEN", DEFAULT_TOKEN)
        self.settings = Settings.from_env(self.env)

    def start_web(self) -> str:
        server = ThreadedServer(create_app(Settings.from_env(self.env)))
        server.start()
        self._servers.append(server)
        self.web_url = server.url
        return self.web_url

    def start_worker(self, extra_env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (self.tmp / f"worker-{len(self.workers)}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "bridge.cli", "worker"],
                env={**os.environ, **self.env, **(extra_env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.workers.append(process)
        return process

    def worker_logs(self) -> str:
        return "".join(p.read_text() for p in sorted(self.tmp.glob("worker-*.log")))

    def post(
        self,
        body: Any,
        *,
        source: str = "demo",
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = signed_headers(raw, msg_id) if headers is None else dict(headers)
        return httpx.post(f"{self.web_url}/hooks/{source}", content=raw, headers=sent, timeout=10)

    def trace(self, event_id: str) -> list[dict[str, Any]]:
        key = f"{self.settings.key_prefix}trace:{event_id}"
        return [json.loads(raw) for raw in self.redis.lrange(key, 0, -1)]

    def trace_has(self, event_id: str, kind: str, **fields: Any) -> dict[str, Any] | None:
        for entry in self.trace(event_id):
            if entry["kind"] == kind and all(entry.get(k) == v for k, v in fields.items()):
                return entry
        return None

    def dead_letters(self) -> list[dict[str, Any]]:
        raw = self.redis.hgetall(f"{self.settings.key_prefix}dlq")
        return [json.loads(v) for v in raw.values()]

    def queued(self) -> int:
        return int(self.redis.zcard(self.settings.queue_name))

    def stored_events(self) -> int:
        return int(self.redis.zcard(f"{self.settings.key_prefix}events"))

    def stop(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(25)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for server in reversed(self._servers):
            server.stop()
        self.redis.close()


@contextmanager
def running_bridge(redis_url: str, key_prefix: str, tmp: Path, **env: str) -> Iterator[Bridge]:
    base = {
        "REDIS_URL": redis_url,
        "BRIDGE_KEY_PREFIX": key_prefix,
        "BRIDGE_RULES_DIR": str(tmp / "rules"),
        "BRIDGE_TEMPLATES_DIR": str(tmp / "templates"),
        "BRIDGE_WEBHOOK_SECRET": SECRET,
        "BRIDGE_WORKER_POLL_DELAY": "0.02",
    }
    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "templates").mkdir(exist_ok=True)
    bridge = Bridge({**base, **env}, tmp)
    try:
        yield bridge
    finally:
        bridge.stop()
