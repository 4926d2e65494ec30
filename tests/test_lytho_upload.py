"""lytho.upload_asset over loopback: a file from a URL or from content → getUploadLink → the
bytes to the link (guarded, no API key) → finalizeUpload; failures, and retries that never
make a second asset."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from bridge.actions import ActionDeps, StepCall, registry
from bridge.actions import lytho as lytho_actions
from bridge.actions.action import StepMemo
from bridge.clients.base import RetryPolicy
from bridge.clients.lytho import LythoClient
from bridge.clients.outbound import guarded_client
from bridge.clients.ratelimit import RateLimiter
from bridge.errors import ClientError, PermanentError
from bridge.sandbox.lytho import create_lytho_app
from bridge.sandbox.server import ThreadedServer, serve_in_thread
from bridge.settings import Secret

KEY = "lytho-upload-key-s3cr3t"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


class Recorder(httpx.AsyncBaseTransport):
    """The guarded client's inner transport: records what went out through it."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _files_app() -> Starlette:
    async def png(request: Request) -> Response:
        return Response(PNG, media_type="image/png")

    async def missing(request: Request) -> Response:
        return Response("no such file", status_code=404)

    async def endless(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(2 * 64):
                yield b"x" * 16 * 1024  # 2 MiB, with no Content-Length

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    return Starlette(
        routes=[
            Route("/files/hero.png", png),
            Route("/files/missing.png", missing),
            Route("/files/endless.bin", endless),
        ]
    )


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ThreadedServer, ThreadedServer, Any]]:
    app = create_lytho_app(KEY, rate_limit_per_minute=None, rate_limit_per_day=None)
    with serve_in_thread(app) as dam, serve_in_thread(_files_app()) as files:
        yield dam, files, app.state.sandbox


@dataclass
class World:
    dam: str
    files: str
    sandbox: Any
    deps: ActionDeps
    recorder: Recorder
    calls: list[StepCall] = field(default_factory=list)

    def requests(self) -> list[tuple[str, str, int]]:
        log = httpx.get(f"{self.dam}/_sandbox/requests", timeout=5).json()["requests"]
        return [(r["method"], r["path"], r["status"]) for r in log]

    def fail(self, status: int, path: str, message: str = "injected failure") -> None:
        spec = {"status": status, "path": path, "message": message}
        httpx.post(f"{self.dam}/_sandbox/fail", json=spec, timeout=5).raise_for_status()

    def assets(self) -> dict[str, Any]:
        return dict(self.sandbox.assets)


@pytest.fixture
async def world(servers: Any, redis_url: str, key_prefix: str) -> AsyncIterator[World]:
    dam, files, sandbox = servers
    httpx.post(f"{dam.url}/_sandbox/reset", timeout=5).raise_for_status()
    client = redis.asyncio.Redis.from_url(redis_url)
    recorder = Recorder()
    async with (
        httpx.AsyncClient() as http,
        guarded_client(["127.0.0.1"], inner=recorder) as outbound,
    ):
        lytho = LythoClient(http, f"{dam.url}/v1/", Secret(KEY), retry=RetryPolicy(attempts=1))
        deps = ActionDeps(
            RateLimiter(client, key_prefix=f"{key_prefix}ratelimit:"),
            outbound,
            RetryPolicy(attempts=1),
            httpx.Timeout(5.0),
            lytho=lytho,
            memo=StepMemo(client, f"{key_prefix}memo:", 600),
        )
        yield World(dam.url, files.url, sandbox, deps, recorder)
    await client.aclose()


def call(step: str = "upload", **params: Any) -> StepCall:
    return StepCall(params, {}, "evt-1", "rule-1", step)


async def upload(world: World, step: StepCall) -> dict[str, Any]:
    result: dict[str, Any] = await registry()["lytho.upload_asset"].run(world.deps, step)
    return result


async def test_a_file_from_a_url_becomes_an_asset_in_a_collection(world: World) -> None:
    before = world.assets()
    url = f"{world.files}/files/hero.png?token=abc"
    step = call(url=url, file_name="hero.png", name="Hero", collection_id=502)

    result = await upload(world, step)

    asset = result["asset"]
    assert (result["asset_id"], result["name"]) == (asset["id"], "Hero")
    assert set(world.assets()) - set(before) == {str(asset["id"])}
    assert (asset["fileName"], asset["fileType"], asset["fileSize"]) == (
        "hero.png",
        "image/png",
        len(PNG),
    )
    assert {"id": asset["id"]} in world.sandbox.collections["502"]["assets"]
    [sent] = [r for r in world.recorder.sent if "/upload/" in r.url.path]
    upload_id = sent.url.path.rsplit("/", 1)[1]
    stored = httpx.get(f"{world.dam}/_sandbox/uploads/{upload_id}", timeout=5)
    assert stored.content == PNG
    # The bytes went by the profile's method, without the API key, through the guard.
    assert sent.method == "PUT"
    assert sent.headers["content-type"] == "image/png"
    assert all(KEY not in value for r in world.recorder.sent for value in r.headers.values())
    assert [(m, p) for m, p, _ in world.requests()] == [
        ("POST", "/v1/assets/getUploadLink"),
        ("PUT", f"/upload/{upload_id}"),
        ("POST", "/v1/assets/finalizeUpload"),
    ]


async def test_content_as_text_or_base64_with_the_type_guessed_from_the_name(
    world: World,
) -> None:
    text = await upload(world, call("notes", content="Hello Lytho\n", file_name="notes.txt"))
    png = await upload(
        world,
        call("png", content=base64.b64encode(PNG).decode(), encoding="base64", file_name="a.png"),
    )

    assert (text["name"], text["asset"]["fileType"], text["asset"]["fileSize"]) == (
        "notes.txt",
        "text/plain",
        12,
    )
    assert (png["asset"]["fileType"], png["asset"]["fileSize"]) == ("image/png", len(PNG))


async def test_a_retry_after_finalize_returns_the_same_asset_and_sends_nothing(
    world: World,
) -> None:
    step = call(content="once", file_name="once.txt")
    first = await upload(world, step)
    seen = len(world.requests())

    again = await upload(world, step)  # as the worker would after a crash before it stored

    assert again == first
    assert len(world.requests()) == seen
    assert [a["fileName"] for a in world.assets().values()].count("once.txt") == 1


async def test_a_replay_is_a_new_run_that_uploads_again(world: World) -> None:
    first = await upload(world, call(content="once", file_name="replayed.txt"))
    replay = StepCall(
        {"content": "once", "file_name": "replayed.txt"},
        {},
        "evt-1",
        "rule-1",
        "upload",
        run="replay-1",
    )

    again = await upload(world, replay)  # `bridge replay`: the rule runs again, on purpose

    assert again["asset_id"] != first["asset_id"]
    assert [a["fileName"] for a in world.assets().values()].count("replayed.txt") == 2


async def test_a_retry_after_the_upload_only_finalizes(world: World) -> None:
    world.fail(503, "/v1/assets/finalizeUpload", "finalize is down")
    step = call(content="twice", file_name="twice.txt")
    with pytest.raises(ClientError) as caught:
        await upload(world, step)
    assert not isinstance(caught.value, PermanentError)
    assert str(caught.value) == (
        "lytho.upload_asset: finalizeUpload failed: POST /v1/assets/finalizeUpload → 503 "
        "Service Unavailable: finalize is down; Lytho failed 1 times"
    )

    result = await upload(world, step)

    names = [(m, p) for m, p, _ in world.requests()]
    assert names.count(("POST", "/v1/assets/getUploadLink")) == 1
    assert names.count(("POST", "/v1/assets/finalizeUpload")) == 2
    assert result["asset"]["fileName"] == "twice.txt"
    assert [a["fileName"] for a in world.assets().values()].count("twice.txt") == 1


async def test_a_finalize_whose_answer_was_lost_is_refused_not_repeated(world: World) -> None:
    world.fail(503, "/v1/assets/finalizeUpload")
    step = call(content="lost", file_name="lost.txt")
    with pytest.raises(ClientError):
        await upload(world, step)
    # The lost answer: Lytho finalized the upload, the step never heard.
    upload_id = (await world.deps.memo.get(step))["upload_id"]  # type: ignore[union-attr]
    done = httpx.post(
        f"{world.dam}/v1/assets/finalizeUpload",
        json={"uploadId": upload_id, "fileName": "lost.txt", "name": "lost.txt"},
        headers={"x-api-key": KEY},
        timeout=5,
    ).json()

    with pytest.raises(PermanentError) as caught:
        await upload(world, step)

    assert f"409 Conflict: Upload {upload_id} was already finalized as asset {done['id']}" in str(
        caught.value
    )
    assert [a["fileName"] for a in world.assets().values()].count("lost.txt") == 1


async def test_a_missing_file_is_refused_before_lytho_is_asked(world: World) -> None:
    url = f"{world.files}/files/missing.png?token=s3cr3t"
    with pytest.raises(PermanentError) as caught:
        await upload(world, call(url=url, file_name="missing.png"))

    assert str(caught.value) == (
        f"lytho.upload_asset: GET {world.files}/files/missing.png → 404 Not Found: no file "
        "there; check the url"
    )
    assert world.requests() == []


async def test_too_large_a_file_or_content_is_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lytho_actions, "MAX_UPLOAD_BYTES", 1024 * 1024)
    url = f"{world.files}/files/endless.bin"
    with pytest.raises(PermanentError) as streamed:
        await upload(world, call(url=url, file_name="endless.bin"))
    monkeypatch.setattr(lytho_actions, "MAX_UPLOAD_BYTES", 100)
    with pytest.raises(PermanentError) as declared:
        await upload(world, call(url=f"{world.files}/files/hero.png", file_name="hero.png"))
    with pytest.raises(PermanentError) as content:
        await upload(world, call(content="x" * 101, file_name="big.txt"))

    assert str(streamed.value) == (
        f"lytho.upload_asset: the file at {url} is larger than 1 MiB, the most one step "
        "uploads; upload it in Lytho itself"
    )
    assert str(declared.value).startswith(
        f"lytho.upload_asset: the file at {world.files}/files/hero.png is larger than 100 bytes"
    )
    assert str(content.value).startswith("lytho.upload_asset: content is larger than 100 bytes")
    assert world.requests() == []


@pytest.mark.parametrize(
    ("path", "status", "phase"),
    [
        ("/v1/assets/getUploadLink", 400, "getUploadLink failed: POST /v1/assets/getUploadLink"),
        ("/upload/", 403, "uploading to "),
        ("/v1/assets/finalizeUpload", 400, "finalizeUpload failed: POST /v1/assets/finalizeUp"),
    ],
)
async def test_a_4xx_on_each_call_is_a_clear_permanent_error(
    world: World, path: str, status: int, phase: str
) -> None:
    world.fail(status, path, "refused on purpose")
    step = call(content="four", file_name="four.txt")

    with pytest.raises(PermanentError) as caught:
        await upload(world, step)

    message = str(caught.value)
    assert message.startswith(f"lytho.upload_asset: {phase}"), message
    assert f"→ {status} " in message
    assert message.endswith(
        "the link refused the file (it may have expired); a replay asks for a new link"
        if status == 403
        else "refused on purpose; the request was refused; fix it before retrying"
    )
    assert not any(a["fileName"] == "four.txt" for a in world.assets().values())
    # A replay of the dead letter starts again from a new link and makes one asset.
    result = await upload(world, step)
    assert result["asset"]["fileName"] == "four.txt"
    assert [a["fileName"] for a in world.assets().values()].count("four.txt") == 1


async def test_the_link_goes_through_the_address_guard(world: World) -> None:
    async with guarded_client([]) as strict:
        deps = ActionDeps(
            world.deps.limiter, strict, world.deps.retry, world.deps.timeout, lytho=world.deps.lytho
        )
        with pytest.raises(PermanentError) as caught:
            await registry()["lytho.upload_asset"].run(
                deps, call(content="guarded", file_name="g.txt")
            )

    assert str(caught.value).startswith("lytho.upload_asset: uploading to http://127.0.0.1:")
    assert str(caught.value).endswith(
        "refused 127.0.0.1: a private, loopback, link-local or metadata address; list it in "
        "BRIDGE_HTTP_ALLOW to allow it"
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"content": "a", "url": "https://example.com/a", "file_name": "a.txt"},
            "lytho.upload_asset takes either url or content, not both",
        ),
        (
            {"content": "%%%", "encoding": "base64", "file_name": "a.bin"},
            "lytho.upload_asset: content is not valid base64 (encoding: base64)",
        ),
        (
            {"content": "a", "encoding": "hex", "file_name": "a.bin"},
            "lytho.upload_asset: encoding must be text or base64, not 'hex'",
        ),
        (
            {"content": "", "file_name": "a.txt"},
            "lytho.upload_asset: the file is empty; there is nothing to upload",
        ),
        ({"content": "a", "file_name": " "}, "lytho.upload_asset: file_name must not be empty"),
        (
            {"url": "ftp://example.com/a", "file_name": "a"},
            "lytho.upload_asset: url must be an http(s) URL, not 'ftp://example.com/a'",
        ),
    ],
)
async def test_bad_parameters_are_refused_with_what_to_fix(
    world: World, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        await upload(world, StepCall(params, {}, "evt-1", "rule-1", "bad"))

    assert str(caught.value) == message
    assert world.requests() == []
