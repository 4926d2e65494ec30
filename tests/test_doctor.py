"""`bridge doctor`: every assumption checked read-only against the sandboxes, over loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bridge.cli.dev import (
    DEV_CLIENT_ID,
    DEV_CLIENT_SECRET,
    DEV_LYTHO_KEY,
    DEV_LYTICS_TOKEN,
    sandbox_env,
)
from bridge.cli.dev_state import DevState, single_instance, state_env, write_state
from bridge.cli.main import main
from bridge.clients.ratelimit import Limit
from bridge.operate.doctor_probe import LocalLimiter
from bridge.sandbox.lytho import create_lytho_app
from bridge.sandbox.lytho_dialect import LythoDialect
from bridge.sandbox.lytho_workflow import create_lytho_workflow_app
from bridge.sandbox.lytics import create_lytics_app
from bridge.sandbox.server import ThreadedServer
from bridge.settings import Settings

KEY, CLIENT, SECRET, TOKEN = "dam-key-7f3a", "client-7f3a", "secret-7f3a", "lytics-7f3a"
DIALECT = {
    "dam": {
        "pages": {"first_page": 1, "items": "data"},
        "operations": {"add_tags": {"method": "PUT", "path": "assets/{asset_id}/tag-ids"}},
    }
}
# The override that says what that sandbox speaks (and that its search ignores the filter).
OVERRIDE = """\
dam:
  pages:
    first_page: 1
    items: data
  operations:
    add_tags: {method: PUT, path: "assets/{asset_id}/tag-ids"}
workflow.search.modified_since: ""
"""
RULE = """\
id: proof-to-lytics
on: lytho.proof.status_changed
actions:
  - uses: lytics.collect
    with: {stream: default, data: {event: proof, id: "{{ data.id }}"}}
"""
WRITES = ("POST", "PUT", "PATCH", "DELETE")
DASH = "\u2013"  # the mark of an API that is not configured


@dataclass
class Sandboxes:
    dam: str
    workflow: str
    lytics: str
    env: dict[str, str] = field(default_factory=dict)

    def requests(self, url: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = httpx.get(f"{url}/_sandbox/requests").json()["requests"]
        return found

    def dam_state(self) -> Any:
        return httpx.get(f"{self.dam}/_sandbox/state").json()


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def start(
    stack: ExitStack,
    *,
    dialect: dict[str, Any] | None = None,
    ignores_modified_since: bool = False,
    keys: tuple[str, str, str, str] = (KEY, CLIENT, SECRET, TOKEN),
) -> Sandboxes:
    key, client, secret, token = keys
    spoken = LythoDialect.from_mapping(dialect) if dialect else None
    apps = [
        create_lytho_app(key, rate_limit_per_minute=None, dialect=spoken),
        create_lytho_workflow_app(
            client, secret, dialect=spoken, ignores_modified_since=ignores_modified_since
        ),
        create_lytics_app(token),
    ]
    urls = []
    for app in apps:
        server = ThreadedServer(app)
        server.start()
        stack.callback(server.stop)
        urls.append(server.url)
    return Sandboxes(*urls)


@pytest.fixture
def env(
    redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The bridge's environment, without API credentials; the test folder as working dir."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "proof.yaml").write_text(RULE)
    values = {
        "REDIS_URL": redis_url,
        "BRIDGE_KEY_PREFIX": key_prefix,
        "BRIDGE_RULES_DIR": str(rules),
        "BRIDGE_TEMPLATES_DIR": str(tmp_path / "templates"),
        # The sandboxes here have no limits; the shared limiter still books every request.
        "BRIDGE_RATE_LIMIT_LYTHO": "100000/1s",
        "BRIDGE_RATE_LIMIT_LYTHO_WORKFLOW": "100000/1s",
    }
    for name in (
        "LYTHO_API_KEY",
        "LYTHO_API_URL",
        "LYTHO_CLIENT_ID",
        "LYTHO_CLIENT_SECRET",
        "LYTHO_TOKEN_URL",
        "LYTHO_WORKFLOW_API_URL",
        "LYTICS_API_TOKEN",
        "LYTICS_API_URL",
        "BRIDGE_LYTHO_PROFILE",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return values


def configure(
    monkeypatch: pytest.MonkeyPatch,
    boxes: Sandboxes,
    keys: tuple[str, str, str, str] = (KEY, CLIENT, SECRET, TOKEN),
) -> None:
    key, client, secret, token = keys
    for name, value in {
        "LYTHO_API_KEY": key,
        "LYTHO_API_URL": f"{boxes.dam}/v1/",
        "LYTHO_CLIENT_ID": client,
        "LYTHO_CLIENT_SECRET": secret,
        "LYTHO_TOKEN_URL": f"{boxes.workflow}/oauth/token",
        "LYTHO_WORKFLOW_API_URL": f"{boxes.workflow}/v1/",
        "LYTICS_API_TOKEN": token,
        "LYTICS_API_URL": boxes.lytics,
    }.items():
        monkeypatch.setenv(name, value)


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["doctor", *args])
    out, err = capsys.readouterr()
    return code, out, err


def check_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line[:2] in ("✓ ", "✗ ", "? ", f"{DASH} ")]


def report(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code, out, err = doctor(capsys, "--json")
    assert err == ""
    found: dict[str, Any] = json.loads(out)
    return code, found


def test_the_default_sandboxes_hold_every_assumption_and_nothing_is_written(
    env: dict[str, str],
    stack: ExitStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    boxes = start(stack)
    configure(monkeypatch, boxes)
    before = boxes.dam_state()

    code, out, err = doctor(capsys)

    assert (code, err) == (0, ""), out
    lines = check_lines(out)
    assert lines, out
    assert all(line.startswith("✓ ") for line in lines), "\n".join(lines)
    # One line per API for the rate-limit headers, saying none were sent, as assumed.
    assert sum("✓" in line and "rate-limit headers: none were sent" in line for line in lines) == 3
    for expected in (
        "✓ Lytho DAM: authentication: the key in header x-api-key was accepted",
        "✓ Lytho DAM: first page: page 0 holds asset",
        "✓ Lytho DAM: page shape: items under 'content'",
        "✓ Lytho DAM: operation add_tags: OPTIONS /v1/assets/",
        "✓ Lytho Workflow: authentication: a token from LYTHO_TOKEN_URL",
        "✓ Lytho Workflow: campaign pages:",
        "✓ Lytho Workflow: modified-since filter:",
        "✓ Lytics: account: ACME Corp (aid 12345)",
        "✓ Lytics: stream default: a data model named 'default' (used by proof-to-lytics)",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, out)
    assert "confirms dam.pages.first_page" in out
    summary = out.splitlines()[-2:]
    assert summary[0].endswith("none overridden (BRIDGE_LYTHO_PROFILE is not set)")
    assert " of " in summary[0] and "profile entries confirmed" in summary[0]
    # The number of requests is said before they are sent, and kept to.
    planned = int(out.splitlines()[0].split("at most ")[1].split(" ")[0])
    sent = int(summary[1].split(" ")[0])
    assert 0 < sent <= planned
    # Read-only: no write reached any API (the token exchange is the one POST), and the
    # DAM's state is as it was.
    for url in (boxes.dam, boxes.workflow, boxes.lytics):
        writes = [
            (r["method"], r["path"])
            for r in boxes.requests(url)
            if r["method"] in WRITES and r["path"] != "/oauth/token"
        ]
        assert writes == []
    assert boxes.dam_state() == before
    total = sum(len(boxes.requests(url)) for url in (boxes.dam, boxes.workflow, boxes.lytics))
    assert total == sent


def test_a_sandbox_of_another_dialect_shows_exactly_the_mismatches_and_the_override_fixes_them(
    env: dict[str, str],
    stack: ExitStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    boxes = start(stack, dialect=DIALECT, ignores_modified_since=True)
    configure(monkeypatch, boxes)

    code, out, err = doctor(capsys)

    assert (code, err) == (1, ""), out
    failed = [line for line in check_lines(out) if line.startswith("✗ ")]
    assert len(failed) == 4, out
    first, shape, add_tags, since = failed
    assert first.startswith("✗ Lytho DAM: first page: page 0 answers 400")
    assert "pages count from 1; expected pages counted from 0" in first
    assert first.endswith("[dam.pages.first_page]")
    assert shape.startswith("✗ Lytho DAM: page shape: items under 'data'")
    assert "set dam.pages.items: data" in shape
    assert add_tags.startswith("✗ Lytho DAM: operation add_tags: OPTIONS /v1/assets/")
    assert "the path does not allow POST" in add_tags
    assert since.startswith("✗ Lytho Workflow: modified-since filter: GET /v1/task/search?")
    assert "the API ignores modifiedSince: the poller falls back to full passes" in since
    assert not [
        line for line in check_lines(out) if line.startswith("? ") and "headers" not in line
    ]

    code, found = report(capsys)
    assert code == 1
    failed_keys = [c["key"] for c in found["checks"] if c["status"] == "fail"]
    assert failed_keys == [
        "dam.pages.first_page",
        "dam.pages.items",
        "dam.operations.add_tags",
        "workflow.search.modified_since",
    ]

    override = tmp_path / "lytho-profile.yaml"
    override.write_text(OVERRIDE)
    monkeypatch.setenv("BRIDGE_LYTHO_PROFILE", str(override))
    code, out, err = doctor(capsys)

    assert (code, err) == (0, ""), out
    assertions = check_lines(out)
    assert all(line.startswith("✓ ") for line in assertions), "\n".join(assertions)
    assert any(
        line.startswith("✓ Lytho DAM: first page: page 1 holds asset") for line in assertions
    )
    assert any(
        line.startswith("✓ Lytho DAM: operation add_tags: OPTIONS /v1/assets/")
        and "/tag-ids" in line
        for line in assertions
    )
    assert out.splitlines()[-2].endswith(f"4 overridden by {override}")


def test_json_lists_each_check_with_what_it_saw_and_the_entries_it_confirms(
    env: dict[str, str],
    stack: ExitStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure(monkeypatch, start(stack))

    code, found = report(capsys)

    assert code == 0
    assert set(found) == {
        "ok",
        "checks",
        "requests",
        "requests_per_api",
        "planned_requests",
        "rate_limiter",
        "profile",
    }
    assert found["ok"] is True
    assert 0 < found["requests"] <= found["planned_requests"]
    assert set(found["requests_per_api"]) == {"Lytho DAM", "Lytho Workflow", "Lytics"}
    assert found["rate_limiter"].startswith("requests are booked on the shared rate limits")
    for check in found["checks"]:
        assert set(check) == {
            "api",
            "key",
            "title",
            "status",
            "saw",
            "expected",
            "entries",
            "confirmed",
        }
        assert check["status"] in ("ok", "unknown")
        assert check["confirmed"] == (check["entries"] if check["status"] == "ok" else [])
    [first] = [c for c in found["checks"] if c["key"] == "dam.pages.first_page"]
    assert first["confirmed"] == ["dam.pages.first_page"]
    profile = found["profile"]
    assert profile["file"] is None and profile["overridden"] == []
    assert "dam.pages.first_page" in profile["confirmed"]
    assert "workflow.search.modified_since" in profile["confirmed"]
    assert len(profile["confirmed"]) < profile["entries"]


def test_an_api_without_credentials_is_not_configured_and_none_at_all_is_a_usage_error(
    env: dict[str, str],
    stack: ExitStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = doctor(capsys)
    assert code == 2
    assert check_lines(out) == [
        f"{DASH} Lytho DAM: not configured (LYTHO_API_KEY not set)",
        f"{DASH} Lytho Workflow: not configured "
        "(LYTHO_CLIENT_ID, LYTHO_CLIENT_SECRET, LYTHO_TOKEN_URL not set)",
        f"{DASH} Lytics: not configured (LYTICS_API_TOKEN not set)",
    ]
    assert err.startswith("bridge doctor: no API is configured: set LYTHO_API_KEY")

    boxes = start(stack)
    monkeypatch.setenv("LYTICS_API_TOKEN", TOKEN)
    monkeypatch.setenv("LYTICS_API_URL", boxes.lytics)
    monkeypatch.setenv("LYTHO_CLIENT_ID", CLIENT)
    code, out, err = doctor(capsys)

    assert (code, err) == (0, ""), out
    lines = check_lines(out)
    assert f"{DASH} Lytho DAM: not configured (LYTHO_API_KEY not set)" in lines
    assert (
        f"{DASH} Lytho Workflow: not configured (LYTHO_CLIENT_SECRET, LYTHO_TOKEN_URL not set)"
        in lines
    )
    assert any(line.startswith("✓ Lytics: account:") for line in lines)
    assert out.splitlines()[0].startswith("bridge doctor: at most 2 requests (Lytics 2)")
    assert boxes.requests(boxes.dam) == [] and boxes.requests(boxes.workflow) == []


def test_refused_credentials_are_a_failure_with_the_hint_and_no_secret_shown(
    env: dict[str, str],
    stack: ExitStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    boxes = start(stack)
    wrong = ("dam-key-wrong", CLIENT, "secret-wrong", "lytics-wrong")
    configure(monkeypatch, boxes, wrong)

    code, out, err = doctor(capsys)

    assert (code, err) == (1, "")
    lines = check_lines(out)
    [dam] = [line for line in lines if line.startswith("✗ Lytho DAM")]
    assert dam.startswith(
        "✗ Lytho DAM: authentication: GET /v1/assets?page=0&size=1 → 401: the key was "
        "refused (sent in header x-api-key as the bare key); expected a 2xx answer; check "
        "LYTHO_API_KEY"
    )
    [workflow] = [line for line in lines if line.startswith("✗ Lytho Workflow")]
    assert workflow.startswith(
        "✗ Lytho Workflow: token exchange: POST /oauth/token → 401: Client authentication "
        "failed: the client id and secret were refused (sent as HTTP Basic); expected an "
        "access_token; check LYTHO_CLIENT_ID, LYTHO_CLIENT_SECRET and LYTHO_TOKEN_URL"
    )
    [lytics] = [line for line in lines if line.startswith("✗ Lytics")]
    assert "GET /api/account → 401: the token in the Authorization header was refused" in lytics
    for secret in wrong:
        if secret != CLIENT:
            assert secret not in out
    # After a refused key, nothing more is asked of that API.
    assert len(boxes.requests(boxes.dam)) == 1


def test_a_broken_override_file_is_a_usage_error_with_its_place(
    env: dict[str, str],
    stack: ExitStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    boxes = start(stack)
    configure(monkeypatch, boxes)
    override = tmp_path / "profile.yaml"
    override.write_text("dam:\n  pages:\n    first_page: one\n")
    monkeypatch.setenv("BRIDGE_LYTHO_PROFILE", str(override))

    code, out, err = doctor(capsys)

    assert (code, out) == (2, "")
    assert f"{override}:3:17: dam.pages.first_page must be a whole number" in err
    assert boxes.requests(boxes.dam) == []


def test_beside_bridge_dev_the_doctor_checks_its_sandboxes(
    env: dict[str, str],
    stack: ExitStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    boxes = start(stack, keys=(DEV_LYTHO_KEY, DEV_CLIENT_ID, DEV_CLIENT_SECRET, DEV_LYTICS_TOKEN))
    # What `bridge dev` records once it listens, with its sandboxes in the settings.
    dev = Settings.from_env(
        {
            **env,
            "LYTHO_API_KEY": DEV_LYTHO_KEY,
            "LYTHO_API_URL": f"{boxes.dam}/v1/",
            "LYTHO_CLIENT_ID": DEV_CLIENT_ID,
            "LYTHO_CLIENT_SECRET": DEV_CLIENT_SECRET,
            "LYTHO_TOKEN_URL": f"{boxes.workflow}/oauth/token",
            "LYTHO_WORKFLOW_API_URL": f"{boxes.workflow}/v1/",
            "LYTICS_API_TOKEN": DEV_LYTICS_TOKEN,
            "LYTICS_API_URL": boxes.lytics,
        }
    )
    stack.enter_context(single_instance())
    write_state(
        DevState(pid=1, url="http://127.0.0.1:1", env={**state_env(dev), **sandbox_env(dev)})
    )

    code, out, err = doctor(capsys)

    assert (code, err) == (0, ""), out
    assertions = check_lines(out)
    assert len(assertions) > 30
    assert all(line.startswith("✓ ") for line in assertions), "\n".join(assertions)
    assert boxes.requests(boxes.dam) and boxes.requests(boxes.lytics)


def test_real_credentials_are_never_recorded_for_the_commands_beside_dev() -> None:
    real = Settings.from_env(
        {"LYTHO_API_KEY": "real-key", "LYTICS_API_TOKEN": "real-token", "LYTHO_CLIENT_ID": "x"}
    )
    assert sandbox_env(real) == {}


def test_every_request_is_booked_on_the_shared_rate_limits(
    env: dict[str, str],
    stack: ExitStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    redis_url: str,
    key_prefix: str,
) -> None:
    configure(monkeypatch, start(stack))
    # One request a millisecond, spaced: each booking moves the schedule on by 1 ms.
    monkeypatch.setenv("BRIDGE_RATE_LIMIT_LYTHO", "1000/1s:1")
    client = redis.Redis.from_url(redis_url)
    stack.callback(client.close)
    key = f"{key_prefix}ratelimit:{{lytho}}:1000per1s"

    code, found = report(capsys)

    assert code == 0
    booked_until = int(client.get(key) or 0)
    seconds, micros = client.time()
    now = seconds * 1_000_000 + micros
    # The schedule holds at least the last booking's slot, so it is ahead of a clock read
    # after the run by at most one interval per request sent.
    assert booked_until > 0
    assert booked_until - now <= found["requests_per_api"]["Lytho DAM"] * 1000


def test_without_redis_the_limits_are_kept_in_process_and_said_so(
    env: dict[str, str],
    stack: ExitStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure(monkeypatch, start(stack))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")

    code, out, err = doctor(capsys)

    assert (code, err) == (0, ""), out
    assert (
        "Redis at redis://127.0.0.1:1/0 cannot be reached (ConnectionError): requests are "
        "spaced by a limiter in this process, at the same rates"
    ) in out.splitlines()[0]


def test_the_in_process_limiter_spaces_requests_like_the_shared_one() -> None:
    clock = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    limiter = LocalLimiter(
        {"lytho": (Limit(20, 63, burst=1), Limit(30_000, 86_400))},
        clock=lambda: clock[0],
        sleep=sleep,
    )

    async def three() -> list[float]:
        return [await limiter.acquire("lytho") for _ in range(3)]

    assert asyncio.run(three()) == pytest.approx([0.0, 3.15, 6.3])
    assert slept == pytest.approx([3.15, 6.3])
    assert asyncio.run(limiter.acquire("lytics")) == 0.0


def test_the_workflow_pollers_finding_is_shown_beside_the_filter_check(
    env: dict[str, str],
    stack: ExitStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    redis_url: str,
    key_prefix: str,
) -> None:
    from tests.pollers.support import make_context, poll, poller

    boxes = start(stack, ignores_modified_since=True)
    configure(monkeypatch, boxes)

    async def two_polls() -> None:
        workflow_env = {
            "LYTHO_WORKFLOW_API_URL": f"{boxes.workflow}/v1/",
            "LYTHO_TOKEN_URL": f"{boxes.workflow}/oauth/token",
            "LYTHO_CLIENT_ID": CLIENT,
            "LYTHO_CLIENT_SECRET": SECRET,
        }
        context = await make_context(redis_url, key_prefix, workflow_env)
        try:
            workflow = poller(context, "lytho_workflow")
            for _ in range(2):
                assert (await poll(workflow)).done
        finally:
            await context.close()

    asyncio.run(two_polls())
    code, out, err = doctor(capsys)

    assert (code, err) == (1, "")
    lines = check_lines(out)
    [since] = [i for i, line in enumerate(lines) if ": modified-since filter:" in line]
    assert lines[since].startswith("✗ ")
    # Right after the check: what the poller of this bridge found and does.
    finding = lines[since + 1]
    assert finding.startswith("? Lytho Workflow: poller: what the Workflow poller of this ")
    assert "campaign: ignored (full passes)" in finding
    assert "workrequest: timeless (full passes)" in finding


def test_a_429_stops_the_checks_of_that_api_and_says_why(
    env: dict[str, str],
    stack: ExitStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A DAM that allows one request a minute, while this bridge's limits are set far higher.
    server = ThreadedServer(create_lytho_app(KEY, rate_limit_per_minute=1))
    server.start()
    stack.callback(server.stop)
    boxes = start(stack)
    configure(monkeypatch, boxes)
    monkeypatch.setenv("LYTHO_API_URL", f"{server.url}/v1/")

    code, out, err = doctor(capsys)

    assert (code, err) == (0, ""), out
    dam = [line for line in check_lines(out) if line.startswith(("✓ Lytho DAM", "? Lytho DAM"))]
    assert dam[-2].startswith(
        "? Lytho DAM: rate limit: GET /v1/assets?page=1&size=1 → 429 (Retry-After: 60) "
        "although the shared limiter spaced the requests"
    )
    assert dam[-1].startswith("? Lytho DAM: rate-limit headers: Retry-After: 60 (in 2 answers)")
    assert len(httpx.get(f"{server.url}/_sandbox/requests").json()["requests"]) == 2


def test_a_write_path_that_does_not_exist_or_does_not_say_what_it_allows(
    env: dict[str, str],
    stack: ExitStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    boxes = start(stack)
    configure(monkeypatch, boxes)
    override = tmp_path / "profile.yaml"
    override.write_text(
        'dam.operations.add_to_collection: {path: "collections/{collection_id}/members"}\n'
    )
    monkeypatch.setenv("BRIDGE_LYTHO_PROFILE", str(override))

    code, out, err = doctor(capsys)

    assert (code, err) == (1, "")
    [failed] = [line for line in check_lines(out) if line.startswith("✗ ")]
    assert failed.startswith(
        "✗ Lytho DAM: operation add_to_collection: OPTIONS /v1/collections/501/members → 404: "
        "no such path; expected POST collections/{collection_id}/members to exist"
    )

    # A DAM whose OPTIONS answers say nothing of the methods: no write path can be told.
    dam = create_lytho_app(KEY, rate_limit_per_minute=None)

    async def silent_options(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await dam(scope, receive, send)

    server = ThreadedServer(silent_options)
    server.start()
    stack.callback(server.stop)
    monkeypatch.delenv("BRIDGE_LYTHO_PROFILE")
    monkeypatch.setenv("LYTHO_API_URL", f"{server.url}/v1/")

    code, out, err = doctor(capsys)

    assert (code, err) == (0, ""), out
    writes = [
        line for line in check_lines(out) if ": operation " in line and "get_metadata" not in line
    ]
    assert len(writes) == 11
    for line in writes:
        assert line.startswith("? Lytho DAM: operation ")
        assert "→ 200 without an Allow header: cannot tell without writing" in line


def test_without_the_rules_folder_the_streams_cannot_be_checked_and_it_says_so(
    env: dict[str, str],
    stack: ExitStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    boxes = start(stack)
    monkeypatch.setenv("LYTICS_API_TOKEN", TOKEN)
    monkeypatch.setenv("LYTICS_API_URL", boxes.lytics)
    monkeypatch.setenv("BRIDGE_RULES_DIR", str(tmp_path / "elsewhere"))

    code, out, err = doctor(capsys)

    assert (code, err) == (0, ""), out
    assert (
        f"? Lytics: streams: no rules folder {tmp_path / 'elsewhere'} (BRIDGE_RULES_DIR) here: "
        "the streams your rules collect to cannot be checked; run bridge doctor where the "
        "rules are"
    ) in check_lines(out)
    assert out.splitlines()[0].startswith("bridge doctor: at most 1 request (Lytics 1)")


def serve_page(stack: ExitStack, status: int) -> str:
    """A server that answers every path with a login page (200) or a server error."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, PlainTextResponse, Response
    from starlette.routing import Route

    async def any_path(request: Request) -> Response:
        if status == 200:
            return HTMLResponse("<html><body>Sign in with SSO</body></html>")
        return PlainTextResponse("Internal error", status_code=status)

    methods = ["GET", "POST", "OPTIONS"]
    server = ThreadedServer(Starlette(routes=[Route("/{p:path}", any_path, methods=methods)]))
    server.start()
    stack.callback(server.stop)
    return server.url


def test_an_html_page_proves_no_authentication_and_a_5xx_refuses_nothing(
    env: dict[str, str],
    stack: ExitStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Review R2, S7: any 200 (an SSO login page, a wrong base URL) gave ✓ authentication.
    page = serve_page(stack, 200)
    boxes = start(stack)
    configure(monkeypatch, boxes)
    monkeypatch.setenv("LYTHO_API_URL", f"{page}/v1/")
    monkeypatch.setenv("LYTHO_WORKFLOW_API_URL", f"{page}/wf/")  # the token is the sandbox's
    monkeypatch.setenv("LYTICS_API_URL", page)

    code, out, err = doctor(capsys)

    assert (code, err) == (1, "")
    lines = check_lines(out)
    assert [line for line in lines if "authentication" in line] == [
        "✗ Lytho DAM: authentication: GET /v1/assets?page=0&size=1 answered 200 with "
        "text/html, not JSON: is LYTHO_API_URL the API's base URL?",
        "✗ Lytho Workflow: authentication: GET /wf/workrequest/search?page=1&pageSize=30 "
        "answered 200 with text/html, not JSON: is LYTHO_WORKFLOW_API_URL the API's base URL?",
        "✗ Lytics: authentication: GET /api/account answered 200 with text/html, not JSON: is "
        "LYTICS_API_URL the API's base URL?",
    ]
    assert not any("confirms dam.auth" in line for line in lines)

    # A token URL that answers 500 refused nothing; one that answers a page is not one.
    for status, saw in (
        (
            500,
            "POST /oauth/token → 500: Internal error: answered 500 (server error), so the "
            "credentials were not checked (sent as HTTP Basic)",
        ),
        (
            200,
            "POST /oauth/token answered 200 with text/html, not JSON: is LYTHO_TOKEN_URL the "
            "tenant's token URL?",
        ),
    ):
        monkeypatch.setenv("LYTHO_TOKEN_URL", f"{serve_page(stack, status)}/oauth/token")
        code, out, err = doctor(capsys)
        [token] = [line for line in check_lines(out) if "token exchange" in line]
        assert token.startswith(f"✗ Lytho Workflow: token exchange: {saw}; expected "), token


def test_an_id_that_is_no_path_segment_is_a_failure_not_a_request_elsewhere(
    env: dict[str, str],
    stack: ExitStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Review R2, M1: `assets/..` is `assets`' parent; the doctor reports it, sends nothing.
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    asked: list[str] = []

    async def dam(request: Request) -> JSONResponse:
        asked.append(f"{request.method} {request.url.path}")
        return JSONResponse({"content": [{"id": "..", "name": "odd"}], "last": True})

    server = ThreadedServer(Starlette(routes=[Route("/{p:path}", dam, methods=["GET"])]))
    server.start()
    stack.callback(server.stop)
    boxes = start(stack)
    configure(monkeypatch, boxes)
    monkeypatch.setenv("LYTHO_API_URL", f"{server.url}/v1/")

    code, out, err = doctor(capsys)

    assert (code, err) == (1, "")
    assert (
        "✗ Lytho DAM: object paths: asset_id '..' is not an id: an empty, '.' or '..' segment "
        "would send the request to another path"
    ) in check_lines(out)
    assert set(asked) == {"GET /v1/assets"}  # its pages only: nothing sent to another path
