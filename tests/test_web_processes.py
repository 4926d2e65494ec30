"""`bridge web` with WEB_CONCURRENCY: several processes behind one port, all storing events."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from tests.helpers import signed_headers, wait_for

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_two_web_processes_share_the_port_and_stop_on_sigterm(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "BRIDGE_KEY_PREFIX": key_prefix,
        "BRIDGE_WEBHOOK_SECRET": "whsec_dGVzdC1zZWNyZXQtZm9yLWxieXRicmlkZ2U=",
        "BRIDGE_RULES_DIR": str(tmp_path / "rules"),
        "BRIDGE_TEMPLATES_DIR": str(tmp_path / "templates"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "BRIDGE_WEB_READ_TIMEOUT": "1.5",
    }
    (tmp_path / "rules").mkdir()
    (tmp_path / "templates").mkdir()
    log = (tmp_path / "web.log").open("wb")
    web = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "web"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis.from_url(redis_url)
    try:
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=30, what="bridge web on its port")
        # uvicorn's supervisor runs two server processes (and a resource tracker).
        servers = wait_for(
            lambda: [c for c in _children(web.pid) if b"spawn_main" in _cmdline(c)] or None,
            what="the server processes",
        )
        assert len(servers) == 2
        ids = [f"wc-{i}" for i in range(40)]
        for event_id in ids:
            raw = json.dumps({"id": event_id, "type": "lytho.asset.updated", "data": {}}).encode()
            with httpx.Client() as fresh:  # a new connection each time: spread over processes
                answer = fresh.post(
                    f"{base}/hooks/demo",
                    content=raw,
                    headers=signed_headers(raw, secret=env["BRIDGE_WEBHOOK_SECRET"]),
                    timeout=10,
                )
            assert answer.status_code == 202, answer.text
            assert answer.json() == {"accepted": [event_id], "duplicates": []}
        assert client.zcard(f"{key_prefix}events") == len(ids)
        assert client.zcard(f"{key_prefix}queue") == len(ids)
        # Each server process took its read timeout from the environment.
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", port)) as silent:
                silent.settimeout(60)  # a safety net: the server closes it first
                answer = b""
                while chunk := silent.recv(4096):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
            assert answer.endswith(b"the request did not arrive in full within 1.5 s")

        web.send_signal(signal.SIGTERM)
        assert web.wait(30) == 0
        text = (tmp_path / "web.log").read_text()
        assert text.count("Application startup complete.") == 2
        assert text.count("Application shutdown complete.") == 2
    finally:
        if web.poll() is None:
            web.kill()
            web.wait(10)
        log.close()
        client.close()
