"""A step's trace entry holds the parameters as they were sent (rendered, escaped, masked,
cut when large), so nothing has to render a rule's templates again to show them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import Bridge, running_bridge, wait_for

RULE = """
id: tell-sales
on: shop.order.paid
actions:
  - id: notify
    uses: slack.post
    with:
      channel: "#sales"
      text: "order {{ data.order }} by {{ data.by }}{{ data.padding | default('') }}"
"""


@pytest.fixture
def bridge(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Bridge]:
    with running_bridge(redis_url, key_prefix, tmp_path) as b:
        b.write_rule("sales.yaml", RULE)
        b.start_slack()
        b.start_web()
        b.start_worker()
        yield b


def test_the_step_entry_holds_the_params_as_sent(bridge: Bridge) -> None:
    body = {"id": "s-1", "type": "shop.order.paid", "data": {"order": 1, "by": "<!channel> & co"}}
    assert bridge.post(body).status_code == 202
    [message] = wait_for(lambda: bridge.slack.received("#sales"), what="the message")
    step = wait_for(lambda: bridge.trace_has("s-1", "step", status="succeeded"), what="the step")
    assert step["params"] == {"channel": "#sales", "text": message["text"]}
    assert message["text"] == "order 1 by &lt;!channel&gt; &amp; co"


def test_a_failed_step_entry_holds_its_params_too(bridge: Bridge) -> None:
    httpx.post(
        f"{bridge.slack_url}/_sandbox/scenario",
        json={"kind": "error", "error": "channel_not_found"},
    )
    bridge.post({"id": "s-2", "type": "shop.order.paid", "data": {"order": 2, "by": "Ana"}})
    step = wait_for(lambda: bridge.trace_has("s-2", "step", status="failed"), what="the failure")
    assert step["params"] == {"channel": "#sales", "text": "order 2 by Ana"}


def test_large_params_are_traced_as_a_bounded_preview(bridge: Bridge) -> None:
    padding = "x" * 30_000
    data = {"order": 3, "by": "Ana", "padding": padding}
    bridge.post({"id": "s-3", "type": "shop.order.paid", "data": data})
    [message] = wait_for(lambda: bridge.slack.received("#sales"), what="the long message")
    assert message["text"] == "order 3 by Ana" + padding
    step = wait_for(lambda: bridge.trace_has("s-3", "step", status="succeeded"), what="the step")
    params = step["params"]
    assert params["_truncated"] is True
    assert params["bytes"] == len('{"channel":"#sales","text":"order 3 by Ana"}') + 30_000
    assert params["preview"].startswith('{"channel":"#sales","text":"order 3 by Ana')
    assert len(params["preview"]) == 2048


SLOW = """
id: slow-template
on: shop.order.paid
actions:
  - id: notify
    uses: slack.post
    with:
      channel: "#sales"
      text: >-
        {% for i in range(10000) %}{% for j in range(10000) %}{% if i == j %}{% endif
        %}{% endfor %}{% endfor %}done
"""


def test_rendering_counts_inside_the_step_timeout(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """A template slower than the step's whole budget fails the step (for good, a clear
    message) instead of running on outside the step timeout and posting anyway."""
    # 0.1 s: no Jinja runs the templates' million operations that fast, so the step's time
    # is what runs out, as it would for any slow template with a longer timeout.
    with running_bridge(redis_url, key_prefix, tmp_path, BRIDGE_STEP_TIMEOUT="0.1") as bridge:
        bridge.write_rule("slow.yaml", SLOW)
        bridge.start_slack()
        bridge.start_web()
        bridge.start_worker()
        assert bridge.post({"id": "t-1", "type": "shop.order.paid", "data": {}}).status_code
        [letter] = wait_for(bridge.dead_letters, what="the slow template's dead letter")
        assert letter["step"] == "notify"
        assert "exceeded its budget of" in letter["error"]
        assert letter["error"].endswith(
            "(a step has 0.1 s in all, BRIDGE_STEP_TIMEOUT, for its if:, its parameters "
            "and its action)"
        )
        assert letter["attempts"] == 1  # a template error is not tried again
        assert bridge.slack.received() == []
