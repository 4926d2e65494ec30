"""Unsigned noise cannot fill /metrics' source labels nor the log (issue 12, item 6)."""

from __future__ import annotations

import logging
import time
import uuid

import httpx
import pytest

from bridge.ingress import webhooks
from bridge.operate.context import build_context
from bridge.settings import Settings
from bridge.web import prometheus
from bridge.web.app import create_app
from tests.helpers import SECRET, signed_headers
from tests.test_metrics import parse

NOISE = 20_000


async def test_unsigned_requests_to_made_up_sources_leave_the_labels_intact(
    redis_url: str,
    key_prefix: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhooks, "refusals", webhooks.RefusalLog())
    settings = Settings.from_env(
        {
            "REDIS_URL": redis_url,
            "BRIDGE_KEY_PREFIX": key_prefix,
            "BRIDGE_WEBHOOK_SECRET": SECRET,  # any source name may be a sender's
            "BRIDGE_WEBHOOK_SECRET_SHOP": SECRET,
        }
    )
    context = await build_context(settings, load_rules=False)
    app = create_app(context=context)
    app.state.bridge = context  # in-process ASGI calls: no lifespan
    context.metrics.interval = 3600
    caplog.set_level(logging.WARNING, logger="bridge.ingress.webhooks")
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            began = time.monotonic()
            for _ in range(NOISE):
                noise = await client.post(
                    f"/hooks/src{uuid.uuid4().hex[:12]}",
                    content=b'{"type": "a.b"}',
                    headers={"content-type": "application/json"},
                )
                assert noise.status_code == 401
            elapsed = time.monotonic() - began
            # After the noise: the configured source, and a new source whose requests are
            # signed, are each counted under their own name.
            for source in ("shop", "newsrc", "other"):
                raw = f'{{"type": "a.b", "id": "{source}-1"}}'.encode()
                ok = await client.post(f"/hooks/{source}", content=raw, headers=signed_headers(raw))
                assert ok.status_code == 202
        samples = parse(await prometheus.render(context))
    finally:
        await context.metrics.stop()
        await context.close()

    requests = {k: v for k, v in samples.items() if k.startswith("lytbridge_webhook_requests")}
    assert requests == {
        'lytbridge_webhook_requests_total{source="(unknown)",status="401"}': NOISE,
        'lytbridge_webhook_requests_total{source="shop",status="202"}': 1,
        'lytbridge_webhook_requests_total{source="newsrc",status="202"}': 1,
        'lytbridge_webhook_requests_total{source="other",status="202"}': 1,
    }
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    # One line per 10 s of noise, each saying how many were left out since the last.
    assert 1 <= len(lines) <= 1 + elapsed / 10
    assert lines[0].startswith("webhook to src")
    assert lines[0].endswith(
        "refused: missing header webhook-id, webhook-timestamp, webhook-signature"
    )
    print(f"{NOISE} unsigned requests in {elapsed:.1f} s: {len(lines)} log lines")


async def test_the_next_refusal_line_counts_the_ones_left_out(
    redis_url: str,
    key_prefix: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhooks, "refusals", webhooks.RefusalLog(interval=0.2))
    settings = Settings.from_env(
        {"REDIS_URL": redis_url, "BRIDGE_KEY_PREFIX": key_prefix, "BRIDGE_WEBHOOK_SECRET": SECRET}
    )
    context = await build_context(settings, load_rules=False)
    app = create_app(context=context)
    app.state.bridge = context
    context.metrics.interval = 3600
    caplog.set_level(logging.WARNING, logger="bridge.ingress.webhooks")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]

    sent = 0
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            deadline = time.monotonic() + 30
            while len(lines()) < 2:
                assert time.monotonic() < deadline, "no second refusal line"
                await client.post(
                    "/hooks/shop", content=b"{}", headers={"content-type": "application/json"}
                )
                sent += 1
    finally:
        await context.metrics.stop()
        await context.close()
    first, second = lines()
    assert first == (
        "webhook to shop refused: missing header webhook-id, webhook-timestamp, webhook-signature"
    )
    left_out = sent - 2
    assert second == (
        "webhook to shop refused: missing header webhook-id, webhook-timestamp, "
        f"webhook-signature (and {left_out} more refused webhooks not logged)"
    )
