"""What a Standard Webhooks secret is: its HMAC key, and the check of the configured ones
when the settings are read (→ settings, ingress.signatures).

A secret read only when a webhook comes would answer every signed one with a 500 if it
could not be decoded; the settings refuse it at start-up instead, naming the variable and
never showing its value.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from bridge.errors import ConfigError

WHSEC_PREFIX = "whsec_"


def standard_secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: the base64 part of `whsec_…` (the
    prefix may be left out). ConfigError when it is not base64."""
    try:
        return base64.b64decode(secret.removeprefix(WHSEC_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            "a webhook secret for the standard scheme must be whsec_ followed by base64"
        ) from None


def check_standard_secrets(
    default: str, per_source: Mapping[str, str], schemes: Mapping[str, str]
) -> None:
    """Refuse a Standard Webhooks secret that is not `whsec_` and base64: the default one
    (`BRIDGE_WEBHOOK_SECRET`) and each standard source's (`BRIDGE_WEBHOOK_SECRET_<SUFFIX>`,
    keyed by suffix, as `schemes`)."""
    # The default secret is checked unless a GitHub-signed source relies on it (DESIGN.md:
    # "default webhook secret for every source"); a standard source then gets a 500 that
    # says so (ingress/webhooks.py).
    github_default = any(
        scheme == "github" and suffix not in per_source for suffix, scheme in schemes.items()
    )
    named = [] if github_default else [("BRIDGE_WEBHOOK_SECRET", default)]
    named += [
        (f"BRIDGE_WEBHOOK_SECRET_{suffix}", secret)
        for suffix, secret in per_source.items()
        if schemes.get(suffix, "standard") == "standard"
    ]
    for name, value in named:
        if not value:
            continue
        try:
            if standard_secret_key(value):
                continue
        except ConfigError:
            pass  # told below, with the variable's name
        hint = (
            "; a GitHub secret goes in BRIDGE_WEBHOOK_SECRET_<SOURCE>, with "
            "BRIDGE_WEBHOOK_SCHEME_<SOURCE>=github"
            if name == "BRIDGE_WEBHOOK_SECRET"
            else f"; or set BRIDGE_WEBHOOK_SCHEME_{name.removeprefix('BRIDGE_WEBHOOK_SECRET_')}"
            "=github if the sender signs the GitHub way"
        )
        raise ConfigError(
            f"{name} is not a Standard Webhooks secret: expected whsec_ followed by base64 "
            f"(whsec_ and the output of `openssl rand -base64 32`){hint}"
        )
