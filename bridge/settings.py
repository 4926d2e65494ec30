"""Settings: read once from the environment into a frozen object; secrets masked."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from bridge.errors import ConfigError
from bridge.webhook_secrets import check_standard_secrets

_SOURCE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RULE_VAR_PREFIX = "BRIDGE_VAR_"


def rule_var_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The `BRIDGE_VAR_*` variables: the only ones rule `vars:` may read (never secrets)."""
    env = os.environ if environ is None else environ
    return {name: value for name, value in env.items() if name.startswith(RULE_VAR_PREFIX)}


class Secret:
    """A secret value that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """The real value: call it only where the secret is sent or used to sign."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def source_env_suffix(source: str) -> str:
    """The environment-variable suffix of a webhook source: upper-cased, `-` as `_`."""
    return source.upper().replace("-", "_")


def is_valid_source(source: str) -> bool:
    """Whether `source` is a legal path segment for `/hooks/{source}`."""
    return bool(_SOURCE_RE.match(source))


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw in ("0", "1"):
        return raw == "1"
    raise ConfigError(f"{name} has value {raw!r}; use 0 or 1")


def _int(
    env: Mapping[str, str], name: str, default: int, *, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} has value {raw!r}; expected a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name} has value {value}; the minimum is {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} has value {value}; the maximum is {maximum}")
    return value


MAX_WEB_CONCURRENCY = 64
MAX_PORT = 65535


def _web_concurrency(env: Mapping[str, str]) -> int:
    return _int(env, "WEB_CONCURRENCY", 1, minimum=1, maximum=MAX_WEB_CONCURRENCY)


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} has value {raw!r}; expected a number") from None
    if value < minimum:
        raise ConfigError(f"{name} has value {value}; the minimum is {minimum}")
    return value


_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LIMIT_RE = re.compile(r"^(\d+)/(\d*)([smhd])(?::(\d+))?$")


def parse_rate_limits(name: str, raw: str) -> tuple[tuple[int, float, int | None], ...]:
    """`20/1m:1,30000/1d` → ((20, 60.0, 1), (30000, 86400.0, None)): count/period[:burst]."""
    limits = []
    for part in raw.split(","):
        match = _LIMIT_RE.match(part.strip())
        if not match:
            raise ConfigError(
                f"{name} has value {raw!r}; expected limits like 20/1m:1,30000/1d "
                "(count/period[:burst], period in s, m, h or d)"
            )
        count, amount, unit, burst = match.groups()
        period = int(amount or 1) * _PERIODS[unit]
        if (
            int(count) < 1
            or period < 1
            or (burst is not None and not 1 <= int(burst) <= int(count))
        ):
            raise ConfigError(
                f"{name} has value {raw!r}; counts, periods and bursts must be "
                "positive, and a burst at most its count"
            )
        limits.append((int(count), float(period), int(burst) if burst else None))
    return tuple(limits)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(env: Mapping[str, str], name: str) -> tuple[IPNetwork, ...]:
    raw = env.get(name) or ""
    networks = []
    for part in raw.split(","):
        if not part.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"{name} has value {raw!r}; expected addresses or CIDR networks separated "
                "by commas, like 10.0.0.0/8,192.0.2.7"
            ) from None
    return tuple(networks)


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    raw = env.get(name)
    return Secret(raw) if raw else None


def _url(env: Mapping[str, str], name: str, default: str, *, trailing_slash: bool) -> str:
    raw = env.get(name) or default
    if not re.match(r"^https?://[^/\s]+", raw):
        raise ConfigError(f"{name} has value {raw!r}; expected an http(s):// URL")
    if trailing_slash and not raw.endswith("/"):
        raw += "/"
    if not trailing_slash:
        raw = raw.rstrip("/")
    return raw


@dataclass(frozen=True)
class Settings:
    """Everything configurable, from the environment variables of DESIGN.md."""

    redis_url: str = "redis://localhost:6379/0"
    redis_url_set: bool = False
    port: int = 8000
    host: str = "0.0.0.0"  # noqa: S104 - a platform's router reaches the web process here
    # `bridge web` processes (uvicorn workers); Heroku's Python buildpack sets it per dyno size.
    web_concurrency: int = 1
    host_set: bool = False
    rules_dir: Path = Path("rules")
    templates_dir: Path = Path("templates")
    admin_token: Secret | None = None
    webhook_secret: Secret | None = None
    webhook_secrets: Mapping[str, Secret] = field(default_factory=dict)
    webhook_schemes: Mapping[str, str] = field(default_factory=dict)
    allow_unsigned: bool = False
    http_allow: tuple[str, ...] = ()
    poll_interval: int = 60
    poll_intervals: Mapping[str, int] = field(default_factory=dict)
    # Outbound rate limits per API, overriding the documented ones (other plans, tests).
    rate_limits: Mapping[str, tuple[tuple[int, float, int | None], ...]] = field(
        default_factory=dict
    )
    slack_bot_token: Secret | None = None
    slack_api_url: str = "https://slack.com/api/"
    # Verifies POST /hooks/slack (Slack's X-Slack-Signature); without it that endpoint is off.
    slack_signing_secret: Secret | None = None
    lytics_api_token: Secret | None = None
    lytics_api_url: str = "https://api.lytics.io"
    lytho_api_key: Secret | None = None
    lytho_api_url: str = "https://openapi.lytho.io/v1/"
    lytho_client_id: str | None = None
    lytho_client_secret: Secret | None = None
    lytho_token_url: str | None = None
    lytho_workflow_api_url: str = "https://openapi.wf.lytho.us/v1/"
    # A YAML file overriding entries of the Lytho API profile (docs/lytho-api.md).
    lytho_profile: Path | None = None
    # Operational knobs beyond DESIGN.md, each with a safe default.
    key_prefix: str = "bridge:"
    queue_name: str = "bridge:queue"
    max_body_bytes: int = 1024 * 1024
    dedup_ttl_seconds: int = 7 * 24 * 3600
    trace_ttl_seconds: int = 7 * 24 * 3600
    webhook_tolerance_seconds: int = 300
    # Seconds a client has to send one whole request, and connections per web process.
    web_read_timeout: float = 15.0
    web_max_connections: int = 1000
    # Proxies whose X-Forwarded-For names the client (the admin login throttle); on Heroku
    # (DYNO set) the router, which every request comes through, is trusted as well.
    trusted_proxies: tuple[IPNetwork, ...] = ()
    on_heroku: bool = False
    worker_poll_delay: float = 0.5
    worker_max_jobs: int = 50
    step_timeout_seconds: float = 10.0
    log_format: str = "text"
    log_level: str = "info"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, defaults: Mapping[str, str] | None = None
    ) -> Settings:
        """Read the settings; raise ConfigError naming the variable that is wrong.

        `defaults` apply to variables the environment leaves unset or empty (the commands
        beside `bridge dev` take its Redis, secret and token this way).
        """
        env = os.environ if environ is None else environ
        if defaults:
            env = {**defaults, **{name: value for name, value in env.items() if value}}
        secrets: dict[str, Secret] = {}
        schemes: dict[str, str] = {}
        intervals: dict[str, int] = {}
        rate_limits: dict[str, tuple[tuple[int, float, int | None], ...]] = {}
        for name, value in env.items():
            if name.startswith("BRIDGE_RATE_LIMIT_") and value:
                api = name.removeprefix("BRIDGE_RATE_LIMIT_").lower()
                rate_limits[api] = parse_rate_limits(name, value)
            if name.startswith("BRIDGE_WEBHOOK_SECRET_") and value:
                secrets[name.removeprefix("BRIDGE_WEBHOOK_SECRET_")] = Secret(value)
            elif name.startswith("BRIDGE_WEBHOOK_SCHEME_"):
                if value not in ("standard", "github"):
                    raise ConfigError(f"{name} has value {value!r}; use standard or github")
                schemes[name.removeprefix("BRIDGE_WEBHOOK_SCHEME_")] = value
            elif name.startswith("BRIDGE_POLL_INTERVAL_"):
                intervals[name.removeprefix("BRIDGE_POLL_INTERVAL_").lower()] = _int(
                    env, name, 60, minimum=5
                )
        check_standard_secrets(
            env.get("BRIDGE_WEBHOOK_SECRET") or "",
            {suffix: secret.get() for suffix, secret in secrets.items()},
            schemes,
        )
        log_format = env.get("BRIDGE_LOG_FORMAT", "text")
        if log_format not in ("text", "json"):
            raise ConfigError(f"BRIDGE_LOG_FORMAT has value {log_format!r}; use text or json")
        log_level = (env.get("BRIDGE_LOG_LEVEL") or "info").lower()
        if log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(
                f"BRIDGE_LOG_LEVEL has value {log_level!r}; use debug, info, warning or error"
            )
        prefix = env.get("BRIDGE_KEY_PREFIX", "bridge:")
        redis_url = env.get("REDIS_URL") or "redis://localhost:6379/0"
        if not re.match(r"^(redis|rediss|unix)://", redis_url):
            raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
        return cls(
            redis_url=redis_url,
            redis_url_set=bool(env.get("REDIS_URL")),
            port=_int(env, "PORT", 8000, minimum=0, maximum=MAX_PORT),
            web_concurrency=_web_concurrency(env),
            host=env.get("HOST") or "0.0.0.0",  # noqa: S104
            host_set=bool(env.get("HOST")),
            rules_dir=Path(env.get("BRIDGE_RULES_DIR") or "rules"),
            templates_dir=Path(env.get("BRIDGE_TEMPLATES_DIR") or "templates"),
            admin_token=_secret(env, "BRIDGE_ADMIN_TOKEN"),
            webhook_secret=_secret(env, "BRIDGE_WEBHOOK_SECRET"),
            webhook_secrets=secrets,
            webhook_schemes=schemes,
            allow_unsigned=_flag(env, "BRIDGE_ALLOW_UNSIGNED", False),
            http_allow=tuple(
                part.strip() for part in env.get("BRIDGE_HTTP_ALLOW", "").split(",") if part.strip()
            ),
            poll_interval=_int(env, "BRIDGE_POLL_INTERVAL", 60, minimum=5),
            poll_intervals=intervals,
            rate_limits=rate_limits,
            slack_bot_token=_secret(env, "SLACK_BOT_TOKEN"),
            slack_api_url=_url(env, "SLACK_API_URL", "https://slack.com/api/", trailing_slash=True),
            slack_signing_secret=_secret(env, "SLACK_SIGNING_SECRET"),
            lytics_api_token=_secret(env, "LYTICS_API_TOKEN"),
            lytics_api_url=_url(
                env, "LYTICS_API_URL", "https://api.lytics.io", trailing_slash=False
            ),
            lytho_api_key=_secret(env, "LYTHO_API_KEY"),
            lytho_api_url=_url(
                env, "LYTHO_API_URL", "https://openapi.lytho.io/v1/", trailing_slash=True
            ),
            lytho_client_id=env.get("LYTHO_CLIENT_ID") or None,
            lytho_client_secret=_secret(env, "LYTHO_CLIENT_SECRET"),
            lytho_token_url=env.get("LYTHO_TOKEN_URL") or None,
            lytho_profile=Path(env["BRIDGE_LYTHO_PROFILE"])
            if env.get("BRIDGE_LYTHO_PROFILE")
            else None,
            lytho_workflow_api_url=_url(
                env,
                "LYTHO_WORKFLOW_API_URL",
                "https://openapi.wf.lytho.us/v1/",
                trailing_slash=True,
            ),
            key_prefix=prefix,
            queue_name=env.get("BRIDGE_QUEUE_NAME") or f"{prefix}queue",
            max_body_bytes=_int(env, "BRIDGE_MAX_BODY_BYTES", 1024 * 1024, minimum=1),
            dedup_ttl_seconds=_int(env, "BRIDGE_DEDUP_TTL", 7 * 24 * 3600, minimum=60),
            trace_ttl_seconds=_int(env, "BRIDGE_TRACE_TTL", 7 * 24 * 3600, minimum=60),
            webhook_tolerance_seconds=_int(env, "BRIDGE_WEBHOOK_TOLERANCE", 300, minimum=1),
            web_read_timeout=_float(env, "BRIDGE_WEB_READ_TIMEOUT", 15.0, minimum=0.1),
            web_max_connections=_int(env, "BRIDGE_WEB_MAX_CONNECTIONS", 1000, minimum=2),
            trusted_proxies=_networks(env, "BRIDGE_TRUSTED_PROXIES"),
            on_heroku=bool(env.get("DYNO")),
            worker_poll_delay=_float(env, "BRIDGE_WORKER_POLL_DELAY", 0.5, minimum=0.001),
            worker_max_jobs=_int(env, "BRIDGE_WORKER_MAX_JOBS", 50, minimum=1),
            step_timeout_seconds=_float(env, "BRIDGE_STEP_TIMEOUT", 10.0, minimum=0.1),
            log_format=log_format,
            log_level=log_level,
        )

    @property
    def lytho_workflow_client_missing(self) -> bool:
        """Whether any of the Lytho Workflow credentials is missing."""
        return not (self.lytho_client_id and self.lytho_client_secret and self.lytho_token_url)

    def secret_for(self, source: str) -> Secret | None:
        """The webhook secret of a source: its own wins over the default."""
        return self.webhook_secrets.get(source_env_suffix(source), self.webhook_secret)

    def scheme_for(self, source: str) -> str:
        """The signature scheme of a source: `standard` unless configured `github`."""
        return self.webhook_schemes.get(source_env_suffix(source), "standard")

    def secrets(self) -> list[str]:
        """Every secret value set, so that logs and messages can redact them."""
        found: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret) and value:
                found.append(value.get())
        found.extend(s.get() for s in self.webhook_secrets.values() if s)
        return found
