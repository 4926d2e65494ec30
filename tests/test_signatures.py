"""Webhook signatures: Standard Webhooks (official vector) and GitHub style, over raw bytes."""

from __future__ import annotations

import pytest

from bridge.errors import ConfigError
from bridge.ingress.signatures import (
    SignatureError,
    sign_github,
    sign_standard,
    verify_github,
    verify_standard,
)

# The official Standard Webhooks test vector (NOTES.md).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
STAMP = 1614265330
BODY = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def headers(signature: str = EXPECTED, stamp: int = STAMP) -> dict[str, str]:
    return {"webhook-id": MSG_ID, "webhook-timestamp": str(stamp), "webhook-signature": signature}


def test_official_vector_signs_and_verifies() -> None:
    assert sign_standard(SECRET, MSG_ID, STAMP, BODY) == EXPECTED
    assert verify_standard(SECRET, headers(), BODY, now=STAMP + 10) == MSG_ID


def test_any_one_of_several_signatures_passes() -> None:
    assert verify_standard(SECRET, headers(f"v1,bm9wZQ== {EXPECTED}"), BODY, now=STAMP) == MSG_ID


def test_a_changed_byte_fails() -> None:
    # Re-serialised JSON with other spacing is a different body: verification is over bytes.
    with pytest.raises(SignatureError, match=r"^webhook-signature does not match the body$"):
        verify_standard(SECRET, headers(), b'{"test":2432232314}', now=STAMP)


@pytest.mark.parametrize(("offset", "shown"), [(301, 301), (-301, -301)])
def test_timestamps_more_than_five_minutes_off_are_refused(offset: int, shown: int) -> None:
    with pytest.raises(SignatureError, match=f"^webhook-timestamp is {shown} s off; at most 300"):
        verify_standard(SECRET, headers(), BODY, now=STAMP + offset)


def test_missing_and_malformed_headers_name_the_problem() -> None:
    with pytest.raises(SignatureError, match=r"^missing header webhook-signature$"):
        verify_standard(SECRET, {"webhook-id": "x", "webhook-timestamp": "1"}, BODY)
    with pytest.raises(SignatureError, match="not a whole number"):
        verify_standard(SECRET, headers() | {"webhook-timestamp": "soon"}, BODY)
    with pytest.raises(SignatureError, match="does not match"):
        verify_standard(SECRET, headers("garbage-without-version"), BODY, now=STAMP)


def test_a_secret_that_is_not_base64_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="whsec_ followed by base64"):
        sign_standard("whsec_not*base64", MSG_ID, STAMP, BODY)


def test_github_scheme() -> None:
    secret = "It's a Secret to Everybody"
    body = b"Hello, World!"
    # GitHub's documented example signature for this secret and payload.
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign_github(secret, body) == expected
    assert (
        verify_github(secret, {"x-hub-signature-256": expected, "x-github-delivery": "d1"}, body)
        == "d1"
    )
    with pytest.raises(SignatureError, match=r"^X-Hub-Signature-256 does not match the body$"):
        verify_github(secret, {"x-hub-signature-256": expected}, body + b" ")
    with pytest.raises(SignatureError, match=r"^missing header X-Hub-Signature-256$"):
        verify_github(secret, {}, body)
