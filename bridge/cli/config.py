"""What a command runs with: settings from the environment or beside `bridge dev`, masked."""

from __future__ import annotations

import base64
import json
import secrets
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bridge.errors import ConfigError
from bridge.settings import Secret, Settings

if TYPE_CHECKING:
    from bridge.cli.dev_state import DevState

# The development secret `bridge dev` uses when no BRIDGE_WEBHOOK_SECRET is set, and that
# `bridge send` signs with by default. It is public, so it is refused outside `bridge dev`.
DEV_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"lytbridge-dev-secret-not-for-prod").decode()
# Likewise the Slack signing secret of `bridge dev` (POST /hooks/slack, the /dev/slack page
# and `bridge send --slack-action` sign with it) when no SLACK_SIGNING_SECRET is set.
DEV_SLACK_SIGNING_SECRET = "lytbridge-dev-slack-signing-secret-not-for-prod"  # noqa: S105


def env_settings() -> Settings:
    """The settings of the environment (ConfigError names a variable that is wrong)."""
    return Settings.from_env()


def companion_settings(*, redis: bool = True) -> tuple[Settings, DevState | None]:
    """Settings of a command run beside `bridge dev`: the environment, then dev's state file.

    The variables `bridge dev` wrote to `.bridge/dev.json` (its Redis, prefix, webhook secret
    and admin token) apply where the environment sets none; a stale file is noted and ignored.
    A command that uses Redis (`redis`) in a folder where `bridge dev` ran but runs no more,
    with no REDIS_URL, is refused: the default Redis is not that bridge's.
    """
    from bridge.cli.dev_state import REDIS_DIR, read_state

    state, note = read_state()
    if note:
        print(note, file=sys.stderr)
    if state is None:
        settings = env_settings()
        if redis and not settings.redis_url_set and REDIS_DIR.is_dir():
            raise ConfigError(
                f"bridge dev is not running in this folder (its data is kept in {REDIS_DIR}/); "
                "start `bridge dev` here, or set REDIS_URL to the bridge's Redis"
            )
        return settings, None
    return Settings.from_env(defaults=state.env), state


def dev_settings(settings: Settings) -> Settings:
    """Settings for `bridge dev`: loopback by default, a known development webhook secret."""
    changes: dict[str, Any] = {}
    if not settings.host_set:
        changes["host"] = "127.0.0.1"
    if settings.webhook_secret is None and not settings.allow_unsigned:
        changes["webhook_secret"] = Secret(DEV_WEBHOOK_SECRET)
    if settings.slack_signing_secret is None:
        changes["slack_signing_secret"] = Secret(DEV_SLACK_SIGNING_SECRET)
    if settings.admin_token is None:
        # A token for this run only, printed at start, so the dashboard works at once.
        changes["admin_token"] = Secret(f"dev-{secrets.token_urlsafe(18)}")
    return replace(settings, **changes)


def redacted(text: str, settings: Settings) -> str:
    """`text` with every configured secret masked (also as JSON writes it)."""
    from bridge.redaction import redact

    values = settings.secrets()
    escaped = [json.dumps(value)[1:-1] for value in values]
    shown: str = redact(text, [*values, *escaped])
    return shown
