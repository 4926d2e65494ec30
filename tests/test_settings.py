"""Settings from the environment: defaults, per-source overrides, clear errors, masked secrets."""

from __future__ import annotations

import pytest

from bridge.errors import ConfigError
from bridge.settings import Secret, Settings


def test_defaults_follow_the_design() -> None:
    s = Settings.from_env({})
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.port == 8000
    assert s.host == "0.0.0.0"
    assert str(s.rules_dir) == "rules"
    assert s.slack_api_url == "https://slack.com/api/"
    assert s.lytho_api_url == "https://openapi.lytho.io/v1/"
    assert s.max_body_bytes == 1024 * 1024
    assert s.allow_unsigned is False
    assert s.web_read_timeout == 15.0
    assert s.web_max_connections == 1000


def test_the_web_servers_bounds_can_be_set() -> None:
    s = Settings.from_env({"BRIDGE_WEB_READ_TIMEOUT": "2.5", "BRIDGE_WEB_MAX_CONNECTIONS": "50"})
    assert (s.web_read_timeout, s.web_max_connections) == (2.5, 50)


def test_per_source_secret_wins_over_the_default() -> None:
    s = Settings.from_env(
        {
            "BRIDGE_WEBHOOK_SECRET": "whsec_ZGVmYXVsdA==",
            "BRIDGE_WEBHOOK_SECRET_MY_SHOP": "whsec_c2hvcA==",
            "BRIDGE_WEBHOOK_SCHEME_MY_SHOP": "github",
        }
    )
    assert s.secret_for("my-shop") == Secret("whsec_c2hvcA==")
    assert s.scheme_for("my-shop") == "github"
    assert s.secret_for("other") == Secret("whsec_ZGVmYXVsdA==")
    assert s.scheme_for("other") == "standard"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BRIDGE_ALLOW_UNSIGNED": "yes"}, "BRIDGE_ALLOW_UNSIGNED has value 'yes'; use 0 or 1"),
        ({"PORT": "eighty"}, "PORT has value 'eighty'; expected a whole number"),
        ({"PORT": "99999"}, "PORT has value 99999; the maximum is 65535"),
        ({"PORT": "-1"}, "PORT has value -1; the minimum is 0"),
        ({"BRIDGE_POLL_INTERVAL": "2"}, "BRIDGE_POLL_INTERVAL has value 2; the minimum is 5"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY has value 0; the minimum is 1"),
        ({"WEB_CONCURRENCY": "65"}, "WEB_CONCURRENCY has value 65; the maximum is 64"),
        (
            {"BRIDGE_WEB_READ_TIMEOUT": "soon"},
            "BRIDGE_WEB_READ_TIMEOUT has value 'soon'; expected a number",
        ),
        (
            {"BRIDGE_WEB_MAX_CONNECTIONS": "1"},
            "BRIDGE_WEB_MAX_CONNECTIONS has value 1; the minimum is 2",
        ),
        (
            {"BRIDGE_WEBHOOK_SCHEME_SHOP": "hmac"},
            "BRIDGE_WEBHOOK_SCHEME_SHOP has value 'hmac'; use standard or github",
        ),
        (
            {"SLACK_API_URL": "slack.com"},
            "SLACK_API_URL has value 'slack.com'; expected an http(s):// URL",
        ),
        (
            {"REDIS_URL": "localhost:6379"},
            "REDIS_URL must start with redis://, rediss:// or unix://",
        ),
        (
            {"BRIDGE_WEBHOOK_SECRET": "whsec_!!!notbase64"},
            "BRIDGE_WEBHOOK_SECRET is not a Standard Webhooks secret: expected whsec_ followed "
            "by base64 (whsec_ and the output of `openssl rand -base64 32`); a GitHub secret "
            "goes in BRIDGE_WEBHOOK_SECRET_<SOURCE>, with BRIDGE_WEBHOOK_SCHEME_<SOURCE>=github",
        ),
        (
            {"BRIDGE_WEBHOOK_SECRET_SHOP": "short"},
            "BRIDGE_WEBHOOK_SECRET_SHOP is not a Standard Webhooks secret: expected whsec_ "
            "followed by base64 (whsec_ and the output of `openssl rand -base64 32`); or set "
            "BRIDGE_WEBHOOK_SCHEME_SHOP=github if the sender signs the GitHub way",
        ),
        (
            {"BRIDGE_WEBHOOK_SECRET_SHOP": "whsec_"},
            "BRIDGE_WEBHOOK_SECRET_SHOP is not a Standard Webhooks secret: expected whsec_ "
            "followed by base64 (whsec_ and the output of `openssl rand -base64 32`); or set "
            "BRIDGE_WEBHOOK_SCHEME_SHOP=github if the sender signs the GitHub way",
        ),
    ],
)
def test_bad_values_say_which_variable_and_what_is_expected(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert str(info.value) == message


def test_a_github_secret_is_any_text_and_a_standard_one_may_omit_its_prefix() -> None:
    s = Settings.from_env(
        {
            "BRIDGE_WEBHOOK_SECRET": "ZGVmYXVsdA==",
            "BRIDGE_WEBHOOK_SECRET_GH": "gh secret, any text",
            "BRIDGE_WEBHOOK_SCHEME_GH": "github",
        }
    )
    assert s.secret_for("gh") == Secret("gh secret, any text")
    assert s.secret_for("shop") == Secret("ZGVmYXVsdA==")


def test_a_default_secret_that_a_github_source_relies_on_may_be_any_text() -> None:
    # DESIGN.md: the default secret is every source's; a github-scheme source without one
    # of its own takes it, so it is not refused at start-up (a standard source then gets a
    # 500 that says why: tests/test_webhooks.py).
    s = Settings.from_env(
        {"BRIDGE_WEBHOOK_SECRET": "a github secret", "BRIDGE_WEBHOOK_SCHEME_GH": "github"}
    )
    assert s.secret_for("gh") == Secret("a github secret")
    with pytest.raises(ConfigError, match="BRIDGE_WEBHOOK_SECRET is not a Standard Webhooks"):
        Settings.from_env(
            {
                "BRIDGE_WEBHOOK_SECRET": "a github secret",
                "BRIDGE_WEBHOOK_SCHEME_GH": "github",
                "BRIDGE_WEBHOOK_SECRET_GH": "its own",
            }
        )


def test_secrets_never_show_in_repr() -> None:
    s = Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-very-secret", "LYTHO_API_KEY": "k-secret-1"})
    text = repr(s) + str(s)
    assert "xoxb-very-secret" not in text and "k-secret-1" not in text
    assert "**********" in text
    assert set(s.secrets()) == {"xoxb-very-secret", "k-secret-1"}


def test_rate_limits_per_api_can_be_configured() -> None:
    s = Settings.from_env(
        {"BRIDGE_RATE_LIMIT_LYTHO": "20/1m:1, 30000/1d", "BRIDGE_RATE_LIMIT_X": "5/s"}
    )
    assert s.rate_limits == {
        "lytho": ((20, 60.0, 1), (30000, 86400.0, None)),
        "x": ((5, 1.0, None),),
    }
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"BRIDGE_RATE_LIMIT_LYTHO": "twenty a minute"})
    assert str(info.value) == (
        "BRIDGE_RATE_LIMIT_LYTHO has value 'twenty a minute'; expected limits like "
        "20/1m:1,30000/1d (count/period[:burst], period in s, m, h or d)"
    )
    with pytest.raises(ConfigError, match="a burst at most its count"):
        Settings.from_env({"BRIDGE_RATE_LIMIT_LYTHO": "2/1m:5"})
