"""The upload link's query (its signature) is never shown, whatever its encoding: messages
and log lines show the link as scheme://host/path (review R2, S1)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bridge.clients.base import RetryPolicy
from bridge.clients.lytho_upload import UploadLink, send_to_link
from bridge.clients.outbound import guarded_client
from bridge.errors import ClientError, PermanentError
from bridge.sandbox.server import ThreadedServer
from tests.helpers import running_bridge, wait_for

QUERIES = [
    "X-Amz-Signature=deadbeefSIG&X-Amz-Credential=AKIAEXAMPLE%2F20261206%2Fus-east-1",
    "sv=2024&sig=abc%2Bdef%3DSIG",
    "sig=SIG%7E1&se=2026-12-06T10:00:00Z",  # Azure SAS style: httpx re-encodes it
]


@pytest.fixture(scope="module")
def link_server() -> Iterator[str]:
    async def up(request: Request) -> PlainTextResponse:
        # A storage service that echoes the request's query in its error, as some do.
        status = 403 if request.url.path == "/refused" else 503
        return PlainTextResponse(f"rejected {request.url.query}", status_code=status)

    server = ThreadedServer(Starlette(routes=[Route("/{p:path}", up, methods=["PUT"])]))
    server.start()
    yield server.url
    server.stop()


async def send(url: str, attempts: int) -> ClientError:
    async with guarded_client(["127.0.0.1"]) as outbound:
        with pytest.raises(ClientError) as caught:
            await send_to_link(
                outbound,
                UploadLink(url, 1),
                "PUT",
                b"x",
                "image/jpeg",
                retry=RetryPolicy(attempts=attempts, backoff=0.0, max_backoff=0.0),
                request_timeout=httpx.Timeout(5),
            )
    return caught.value


@pytest.mark.asyncio
@pytest.mark.parametrize("query", QUERIES)
async def test_a_refused_link_is_named_without_its_query(link_server: str, query: str) -> None:
    error = await send(f"{link_server}/refused?{query}", attempts=1)
    assert isinstance(error, PermanentError)
    assert str(error) == (
        f"uploading to {link_server}/refused: PUT /refused → 403 Forbidden; the link refused "
        "the file (it may have expired); a replay asks for a new link"
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("query", QUERIES)
async def test_retries_and_echoed_errors_show_no_signature(
    link_server: str, query: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    error = await send(f"{link_server}/busy?{query}", attempts=2)
    message = str(error)
    assert message.startswith(f"uploading to {link_server}/busy: PUT /busy → 503 ")
    assert message.endswith("; the upload link failed 2 times")
    logged = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("PUT /busy → 503; retry 1 in ") for line in logged), logged
    for text in (message, *logged):
        assert "SIG" not in text and "sig=" not in text.lower() and "AKIA" not in text, text


UPLOAD_RULE = """
id: archive-file
on: shop.file.ready
actions:
  - id: upload
    uses: lytho.upload_asset
    with: {url: "{{ data.url }}", file_name: report.pdf}
"""


def test_the_trace_shows_the_download_url_without_its_query(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    # The step fails (no LYTHO_API_KEY here), and its trace entry still holds its params.
    signed = "https://files.example.com/r/report.pdf?X-Amz-Signature=deadbeefSIG&t=TOKEN"
    with running_bridge(redis_url, key_prefix, tmp_path) as bridge:
        bridge.write_rule("archive.yaml", UPLOAD_RULE)
        bridge.start_web()
        bridge.start_worker()
        event = {"id": "f-1", "type": "shop.file.ready", "data": {"url": signed}}
        assert bridge.post(event).status_code == 202
        step = wait_for(
            lambda: bridge.trace_has("f-1", "step", status="failed"), what="the failed step"
        )
    assert step["params"] == {
        "url": "https://files.example.com/r/report.pdf?…",
        "file_name": "report.pdf",
    }
    assert "SIG" not in json.dumps(step) and "TOKEN" not in json.dumps(step)
