"""Shared fixtures: a real Redis (the machine's on 6379, or an embedded one) and key isolation."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from bridge.cli.redis_server import EmbeddedRedis, redis_answers

# Tests never flush the machine's Redis: they use this database with a key prefix per test
# and delete only their own keys afterwards.
TEST_DB = 13


@pytest.fixture(scope="session")
def redis_base_url() -> Iterator[str]:
    """The URL of a Redis the whole session may use (keys isolated per test by prefix)."""
    configured = os.environ.get("BRIDGE_TEST_REDIS_URL")
    if configured:
        yield configured
    elif redis_answers("127.0.0.1", 6379):
        yield f"redis://127.0.0.1:6379/{TEST_DB}"
    else:
        with EmbeddedRedis() as server:
            yield server.url


@pytest.fixture
def key_prefix() -> str:
    """A fresh key prefix for one test."""
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def redis_url(redis_base_url: str, key_prefix: str) -> Iterator[str]:
    """The session Redis; every key of this test's prefix is deleted afterwards."""
    yield redis_base_url
    client = redis.Redis.from_url(redis_base_url)
    try:
        for pattern in (f"{key_prefix}*", f"arq:*{key_prefix}*"):
            batch = list(client.scan_iter(match=pattern, count=500))
            if batch:
                client.delete(*batch)
    finally:
        client.close()


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A private redis-server for tests that stop, restart or flood Redis."""
    with EmbeddedRedis() as server:
        yield server
