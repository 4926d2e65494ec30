"""The shared Redis client: arq-compatible, and Heroku's self-signed rediss:// accepted."""

from __future__ import annotations

import ssl

from bridge.operate.context import create_redis
from bridge.settings import Settings


async def test_rediss_urls_accept_self_signed_certificates() -> None:
    settings = Settings.from_env({"REDIS_URL": "rediss://:pw@redis.example.com:6380/0"})
    redis = create_redis(settings)
    try:
        kwargs = redis.connection_pool.connection_kwargs
        assert kwargs["ssl_cert_reqs"] == "none"
        assert redis.connection_pool.connection_class.__name__ == "SSLConnection"
        connection = redis.connection_pool.make_connection()
        assert connection.cert_reqs == ssl.CERT_NONE  # type: ignore[attr-defined]
    finally:
        await redis.aclose()


async def test_plain_urls_keep_the_database_and_use_json_jobs() -> None:
    redis = create_redis(Settings.from_env({"REDIS_URL": "redis://127.0.0.1:6379/13"}))
    try:
        assert redis.connection_pool.connection_kwargs["db"] == 13
        assert "ssl_cert_reqs" not in redis.connection_pool.connection_kwargs
        assert redis.job_serializer({"a": [1]}) == b'{"a":[1]}'
    finally:
        await redis.aclose()
