"""Log lines: one record is one line, and no configured secret is ever written."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bridge.logs import configure_logging
from bridge.settings import Settings

SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-log-secret-5521",
    "LYTICS_API_TOKEN": 'lytics"quoted\\token',
    "BRIDGE_ADMIN_TOKEN": "admin-log-token-7781",
    "BRIDGE_WEBHOOK_SECRET": "whsec_bG9nLXNlY3JldA==",
    "BRIDGE_WEBHOOK_SECRET_SHOP": "whsec_c2hvcC1zZWNyZXQ=",
    "LYTHO_API_KEY": "lytho-key-0042",
    "LYTHO_CLIENT_SECRET": "lytho-client-secret-0043",
}
FORGED = "e-1\n2026-12-06 12:00:00,000 INFO    bridge.jobs: event e-2 matched rule pay\x1b[2K\r"


@pytest.fixture
def log(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging(Settings.from_env({**SECRETS, "BRIDGE_LOG_FORMAT": request.param}))
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    try:
        yield logging.getLogger("bridge.test"), stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


@pytest.mark.parametrize("log", ["text"], indirect=True)
def test_text_lines_cannot_be_forged_by_what_they_carry(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = log
    logger.info("event %s matched rule %s", FORGED, "r\u2028x")
    try:
        raise ValueError(f"bad id {FORGED}")
    except ValueError:
        logger.exception("event %s failed", "e-3")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 7, lines
    assert lines[0].endswith(
        "INFO    bridge.test: event e-1\\n2026-12-06 12:00:00,000 INFO    bridge.jobs: event "
        "e-2 matched rule pay\\u001b[2K\\r matched rule r\\u2028x"
    )
    assert lines[1].endswith("ERROR   bridge.test: event e-3 failed")
    # The traceback follows, every line of it indented: none can pass for a record.
    assert lines[2] == "    Traceback (most recent call last):"
    assert all(line.startswith("    ") for line in lines[2:])
    assert lines[-2] == "    ValueError: bad id e-1"
    assert lines[-1] == (
        "    2026-12-06 12:00:00,000 INFO    bridge.jobs: event e-2 matched rule pay\\u001b[2K\\r"
    )
    assert "\x1b" not in stream.getvalue() and "\r" not in stream.getvalue()


@pytest.mark.parametrize("log", ["text", "json"], indirect=True)
def test_no_configured_secret_is_written_in_either_format(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = log
    everything = " ".join(SECRETS.values())
    logger.warning("upstream said %s", {"body": everything, SECRETS["LYTHO_API_KEY"]: 1})
    try:
        raise RuntimeError(everything)
    except RuntimeError:
        logger.exception("step failed: %s", SECRETS["LYTICS_API_TOKEN"])
    written = stream.getvalue()
    for name, secret in SECRETS.items():
        for form in (secret, json.dumps(secret)[1:-1], secret.removeprefix("whsec_")):
            assert form not in written, name
    assert written.count("**********") >= 2 * len(SECRETS) + 2
