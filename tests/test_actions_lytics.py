"""lytics.lookup, lytics.segment_membership and lytics.collect's lists, against the Lytics
sandbox over loopback; then a rule that enriches a Slack message, end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.actions import ActionDeps, StepCall, registry
from bridge.cli.main import main
from bridge.clients import LyticsClient, RetryPolicy
from bridge.errors import PermanentError
from bridge.sandbox.lytics import create_lytics_app
from bridge.sandbox.server import ThreadedServer
from bridge.settings import Secret
from tests.helpers import Bridge, running_bridge, wait_for

TOKEN = "lytics-actions-token"


class Sandbox:
    def __init__(self, server: ThreadedServer) -> None:
        self.url = server.url
        self.state = server._server.config.app.state.sandbox

    def control(self, path: str, body: Any = None) -> None:
        httpx.post(f"{self.url}/_sandbox/{path}", json=body).raise_for_status()

    def requests(self) -> list[tuple[str, str, int]]:
        found = httpx.get(f"{self.url}/_sandbox/requests").json()["requests"]
        return [(r["method"], r["path"], r["status"]) for r in found]


@pytest.fixture(scope="module")
def running() -> Iterator[Sandbox]:
    server = ThreadedServer(create_lytics_app(TOKEN))
    server.start()
    yield Sandbox(server)
    server.stop()


@pytest.fixture
def sandbox(running: Sandbox) -> Sandbox:
    running.control("reset")
    return running


@pytest.fixture
async def deps(sandbox: Sandbox) -> AsyncIterator[ActionDeps]:
    async with httpx.AsyncClient() as http:
        retry = RetryPolicy(attempts=1)
        lytics = LyticsClient(http, sandbox.url, Secret(TOKEN), retry=retry)
        # These actions never use the shared limiter; the client is built without one.
        yield ActionDeps(None, http, retry, httpx.Timeout(5.0), lytics=lytics)  # type: ignore[arg-type]


async def run(deps: ActionDeps, action: str, **params: Any) -> dict[str, Any]:
    return await registry()[action].run(deps, StepCall(params, {}, "e-1", "r-1", "s"))


async def test_lookup_returns_the_profile(deps: ActionDeps, sandbox: Sandbox) -> None:
    result = await run(deps, "lytics.lookup", field="email", value="ben1@example.com")

    assert result["found"] is True
    assert result["profile"]["first_name"] == "Ben"
    assert result["profile"]["segments"] == ["all_users"]
    assert {k: result[k] for k in ("table", "field", "value")} == {
        "table": "user",
        "field": "email",
        "value": "ben1@example.com",
    }
    assert sandbox.requests() == [("GET", "/api/entity/user/email/ben1@example.com", 200)]


async def test_lookup_of_a_missing_profile_is_found_false(deps: ActionDeps) -> None:
    result = await run(deps, "lytics.lookup", field="email", value="nobody@example.com")

    assert result == {
        "found": False,
        "profile": None,
        "table": "user",
        "field": "email",
        "value": "nobody@example.com",
    }


async def test_lookup_with_fields_a_number_and_an_awkward_value(
    deps: ActionDeps, sandbox: Sandbox
) -> None:
    sandbox.control("profiles", {"_uid": "odd", "external_id": "crm/42 a@b", "score": 7})

    odd = await run(deps, "lytics.lookup", field="external_id", value="crm/42 a@b")
    assert odd["found"] is True and odd["profile"]["_uid"] == "odd"

    narrow = await run(
        deps, "lytics.lookup", field="score", value=7, fields=["_uid", "score"], table="user"
    )
    assert narrow["profile"] == {"_uid": "odd", "score": 7}
    assert narrow["value"] == "7"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"field": "email", "value": "a@b", "fields": "email"},
            "lytics.lookup 'fields' must be a list of field names",
        ),
        ({"field": "email", "value": True}, "lytics.lookup 'value' must be a non-empty string"),
        ({"field": "", "value": "x"}, "lytics.lookup 'field' must be a non-empty string"),
        ({"field": "x", "value": "y", "table": 3}, "lytics.lookup 'table' must be a non-empty"),
    ],
)
async def test_lookup_refuses_bad_parameters_before_asking(
    deps: ActionDeps, sandbox: Sandbox, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(PermanentError, match=f"^{message}"):
        await run(deps, "lytics.lookup", **params)
    assert sandbox.requests() == []


async def test_lookup_errors_other_than_404_are_raised(deps: ActionDeps, sandbox: Sandbox) -> None:
    sandbox.control("fail", {"status": 403, "count": 1, "message": "forbidden"})

    with pytest.raises(PermanentError) as caught:
        await run(deps, "lytics.lookup", field="email", value="ben1@example.com")

    assert str(caught.value) == (
        "GET /api/entity/user/email/ben1@example.com → 403 Forbidden; the credentials lack "
        "permission for this; check LYTICS_API_TOKEN"
    )


async def test_membership_by_slug_takes_one_request(deps: ActionDeps, sandbox: Sandbox) -> None:
    result = await run(
        deps, "lytics.segment_membership", segment="high_value_users", field="_uid", value="uid003"
    )

    assert result == {
        "member": True,
        "found": True,
        "slug": "high_value_users",
        "segment": "high_value_users",
        "table": "user",
        "field": "_uid",
        "value": "uid003",
    }
    assert [path for _, path, _ in sandbox.requests()] == ["/api/entity/user/_uid/uid003"]


async def test_membership_by_id_and_a_non_member(deps: ActionDeps, sandbox: Sandbox) -> None:
    segment_id = sandbox.state.segments["cart_abandoners"]["id"]

    member = await run(
        deps, "lytics.segment_membership", segment=segment_id, field="_uid", value="uid004"
    )
    outside = await run(
        deps, "lytics.segment_membership", segment=segment_id, field="_uid", value="uid001"
    )

    assert (member["member"], member["slug"], member["segment"]) == (
        True,
        "cart_abandoners",
        segment_id,
    )
    assert (outside["member"], outside["found"]) == (False, True)
    # An id is not among the profile's slugs: one more request resolves it.
    assert [path for _, path, _ in sandbox.requests()] == [
        "/api/entity/user/_uid/uid004",
        f"/api/segment/{segment_id}",
        "/api/entity/user/_uid/uid001",
        f"/api/segment/{segment_id}",
    ]


async def test_membership_follows_the_segment_as_it_changes(
    deps: ActionDeps, sandbox: Sandbox
) -> None:
    params = {"segment": "cart_abandoners", "field": "email", "value": "ben1@example.com"}
    assert (await run(deps, "lytics.segment_membership", **params))["member"] is False

    sandbox.control("segments/cart_abandoners/members", {"add": ["uid001"]})

    assert (await run(deps, "lytics.segment_membership", **params))["member"] is True


async def test_membership_of_a_missing_profile_is_false(deps: ActionDeps) -> None:
    result = await run(
        deps, "lytics.segment_membership", segment="all_users", field="_uid", value="ghost"
    )

    assert (result["member"], result["found"], result["slug"]) == (False, False, None)


async def test_membership_in_an_unknown_segment_is_refused(deps: ActionDeps) -> None:
    with pytest.raises(PermanentError) as caught:
        await run(
            deps, "lytics.segment_membership", segment="vip_typo", field="_uid", value="uid000"
        )

    assert str(caught.value) == (
        "lytics.segment_membership: Lytics has no segment 'vip_typo'; give its slug or id"
    )


async def test_membership_without_a_segments_list_says_it_cannot_tell(
    deps: ActionDeps, sandbox: Sandbox
) -> None:
    sandbox.control("profiles", {"_uid": "bare", "segments": None})

    with pytest.raises(PermanentError) as caught:
        await run(
            deps, "lytics.segment_membership", segment="all_users", field="_uid", value="bare"
        )

    assert str(caught.value) == (
        "lytics.segment_membership: Lytics answered the user profile with _uid = 'bare' "
        "without a 'segments' list, so membership cannot be told; check with bridge doctor"
    )
    assert deps.lytics is not None
    sizes = {s["slug_name"]: s["size"] for s in await deps.lytics.list_segments()}
    assert sizes["all_users"] == 24


async def test_collect_a_list_is_one_request(deps: ActionDeps, sandbox: Sandbox) -> None:
    events = [{"event": "viewed", "n": n} for n in range(5)]

    result = await run(deps, "lytics.collect", stream="web", data=events)

    assert result == {"stream": "web", "message_count": 5, "rejected_count": 0}
    assert sandbox.state.collected == {"web": events}
    assert sandbox.requests() == [("POST", "/api/collect", 200)]


async def test_collect_past_the_bound_is_refused_and_sends_nothing(
    deps: ActionDeps, sandbox: Sandbox
) -> None:
    with pytest.raises(PermanentError) as caught:
        await run(deps, "lytics.collect", stream="web", data=[{"n": n} for n in range(1001)])

    assert str(caught.value) == (
        "lytics.collect: 1001 items are more than the 1000 sent in one request; split the "
        "list over several steps, or load it with Lytics' bulk upload"
    )
    assert sandbox.requests() == []
    assert sandbox.state.collected == {}


RULES = """
id: vip-order
on: shop.order.paid
actions:
  - id: who
    uses: lytics.lookup
    with: {field: email, value: "{{ data.email }}", fields: [first_name, segments]}
  - id: vip
    uses: lytics.segment_membership
    if: steps.who.found
    with: {segment: high_value_users, field: email, value: "{{ data.email }}"}
  - uses: slack.post
    if: steps.who.found
    with:
      channel: "#sales"
      text: >-
        Order {{ data.id }} by {{ steps.who.profile.first_name }}
        ({{ 'high value' if steps.vip.member else 'regular' }})
  - uses: slack.post
    if: not steps.who.found
    with: {channel: "#sales", text: "Order {{ data.id }} by someone Lytics does not know"}
"""


def test_validate_accepts_the_rule_and_names_a_wrong_parameter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "templates").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRIDGE_RULES_DIR", "rules")
    monkeypatch.setenv("BRIDGE_TEMPLATES_DIR", "templates")
    (tmp_path / "rules" / "vip.yaml").write_text(RULES)
    assert main(["validate"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")

    (tmp_path / "rules" / "vip.yaml").write_text(
        RULES.replace("fields: [first_name, segments]", "fields: first_name").replace(
            "segment: high_value_users, ", ""
        )
    )
    assert main(["validate"]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == (
        "",
        "rules/vip.yaml:7:61: fields expects a list, but 'first_name' is a string "
        "(lytics.lookup in rule 'vip-order'); write it as a list: fields: [first_name]\n"
        "rules/vip.yaml:11:11: lytics.segment_membership needs parameter 'segment' "
        "(rule 'vip-order')\n"
        "2 problem(s) found\n",
    )


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    lytics = ThreadedServer(create_lytics_app(TOKEN))
    lytics.start()
    try:
        env = {"LYTICS_API_URL": lytics.url, "LYTICS_API_TOKEN": TOKEN}
        with running_bridge(redis_url, key_prefix, tmp_path, **env) as b:
            b.write_rule("vip.yaml", RULES)
            b.slack.channels = (*b.slack.channels, "sales")
            b.start_slack()
            b.start_web()
            yield b
    finally:
        lytics.stop()


def test_a_rule_enriches_its_slack_message_from_lytics(bridge: Bridge) -> None:
    bridge.start_worker()
    orders = [
        {"id": "o-1", "type": "shop.order.paid", "data": {"id": 1, "email": "dev3@example.com"}},
        {"id": "o-2", "type": "shop.order.paid", "data": {"id": 2, "email": "ben1@example.com"}},
        {"id": "o-3", "type": "shop.order.paid", "data": {"id": 3, "email": "who@example.com"}},
    ]
    for order in orders:
        assert bridge.post(order).status_code == 202

    messages = wait_for(
        lambda: len(bridge.slack.received("#sales")) == 3 and bridge.slack.received("#sales"),
        timeout=30,
        what="three Slack messages",
    )
    assert sorted(m["text"] for m in messages) == [
        "Order 1 by Dev (high value)",
        "Order 2 by Ben (regular)",
        "Order 3 by someone Lytics does not know",
    ]
    step = bridge.trace_has("o-3", "step", step="who", status="succeeded")
    assert step is not None and step["result"]["found"] is False
