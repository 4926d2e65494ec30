"""Property-based fuzz of POST /hooks/{source} on a real server: no 5xx, nothing invalid stored."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.ingress.signatures import sign_standard
from tests.helpers import SECRET, running_bridge, signed_headers
from tests.reliability.conftest import Figures

MAX_EXAMPLES = 200

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**30, max_value=10**300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
event_types = st.sampled_from(["shop.order.paid", "lytho.asset.updated", "a.b"])


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {"id": f"fz-{uuid.uuid4().hex}", "type": draw(event_types)}
    if draw(st.booleans()):
        event["data"] = draw(json_values)
    return event


def _deep(n: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * n + b"]" * n
    return b'{"type": "a.b", "data": ' + b'{"a": ' * n + b"1" + b"}" * n + b"}"


hostile_bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"id": json_values, "type": json_values},
        optional={"data": json_values, "subject": json_values, "time": json_values},
    ).map(lambda v: json.dumps(v).encode()),
    st.lists(json_values, max_size=5).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=512),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.tuples(st.integers(1, 20_000), st.sampled_from(["list", "object"])).map(lambda a: _deep(*a)),
    st.integers(1, 20_000).map(lambda n: b'{"type": "a.b", "n": ' + b"9" * n + b"}"),
    st.sampled_from(
        [
            b'{"type": "a.b", "n": 1e999999}',
            b'{"type": "a.b", "n": -Infinity}',
            b'{"type": "a.b", "n": NaN}',
            b'{"type": "a.b", "type": ["x"]}',
            b"\xef\xbb\xbf{}",
            b"",
            b"null",
            b'{"type": "a.b", "data": "\\ud800"}',
            b'{"specversion": "1.0", "id": 1, "source": {}, "type": []}',
            b'{"data": {"segment_events": [{"event": null}]}}',
            b" " * (1024 * 1024 + 1),
        ]
    ),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "application/json; charset=utf-16",
        "*/*",
    ]
)
sources = st.sampled_from(["demo", "shop", "lytics", "cloudevents", "x" * 200, "bad.name"])
printable = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=60)
SIGNATURES = ("valid", "wrong_secret", "other_body", "missing", "stale", "future", "garbage")


def headers_for(body: bytes, how: str, content_type: str, junk: str) -> dict[str, str]:
    msg_id = f"msg_{uuid.uuid4().hex}"
    now = int(time.time())
    if how == "missing":
        headers = {}
    elif how == "garbage":
        headers = {"webhook-id": junk or "x", "webhook-timestamp": junk, "webhook-signature": junk}
    else:
        stamp = {"stale": now - 3600, "future": now + 3600}.get(how, now)
        secret = "whsec_" + "b" * 32 if how == "wrong_secret" else SECRET
        signed = body + b" " if how == "other_body" else body
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign_standard(secret, msg_id, stamp, signed),
        }
    if content_type:
        headers["content-type"] = content_type
    return headers


def test_fuzzed_webhooks_never_5xx_and_never_store_invalid_requests(
    redis_url: str, key_prefix: str, tmp_path: Path, figures: Figures
) -> None:
    statuses: Counter[int] = Counter()
    stored_by_fuzz = 0
    with running_bridge(redis_url, key_prefix, tmp_path) as bridge:
        bridge.start_web()
        url = bridge.web_url
        client = httpx.Client(timeout=10)

        def counts() -> tuple[int, int]:
            return bridge.stored_events(), bridge.queued()

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(
            body=hostile_bodies,
            how=st.sampled_from(SIGNATURES),
            content_type=content_types,
            source=sources,
            junk=printable,
            valid=valid_events(),
        )
        def one_request(
            body: bytes, how: str, content_type: str, source: str, junk: str, valid: dict[str, Any]
        ) -> None:
            nonlocal stored_by_fuzz
            before = counts()
            headers = headers_for(body, how, content_type, junk)
            response = client.post(f"{url}/hooks/{source}", content=body, headers=headers)
            statuses[response.status_code] += 1
            assert response.status_code < 500, (response.status_code, response.text[:300])
            after = counts()
            if 200 <= response.status_code < 300:
                # Only a correctly signed request may be stored, and only what it says it stored.
                assert how == "valid", (how, response.text[:300])
                accepted = len(response.json()["accepted"])
                assert after == (before[0] + accepted, before[1] + accepted)
                stored_by_fuzz += accepted
            else:
                assert after == before, (response.status_code, response.text[:300])
                assert response.json()["error"]

            # A well-formed, correctly signed event is still stored next to all this.
            raw = json.dumps(valid).encode()
            good = client.post(f"{url}/hooks/demo", content=raw, headers=signed_headers(raw))
            statuses[good.status_code] += 1
            assert good.status_code == 202, good.text[:300]
            assert good.json()["accepted"] == [valid["id"]]
            assert counts() == (after[0] + 1, after[1] + 1)

        began = time.monotonic()
        try:
            one_request()
        finally:
            client.close()
        figures(
            examples=MAX_EXAMPLES,
            requests=sum(statuses.values()),
            statuses={str(k): v for k, v in sorted(statuses.items())},
            server_errors=sum(v for k, v in statuses.items() if k >= 500),
            signed_fuzz_events_stored=stored_by_fuzz,
            seconds=round(time.monotonic() - began, 1),
        )
        assert not any(k >= 500 for k in statuses)
