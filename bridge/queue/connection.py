"""A process's Redis client: arq's, with JSON jobs, lazy connections and lean writes (→ queue)."""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool

from bridge.queue.codec import job_deserializer, job_serializer
from bridge.queue.redis_io import direct_send


def connect(redis_url: str, queue_name: str) -> ArqRedis:
    """The Redis client of a process: arq-compatible, JSON jobs, lazy connections.

    Heroku's `rediss://` URLs use self-signed certificates, so TLS is not verified there
    (NOTES.md); the connection is still encrypted.
    """
    options: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}
    if redis_url.startswith("rediss://"):
        options["ssl_cert_reqs"] = "none"
    pool = ConnectionPool.from_url(redis_url, **options)
    pool.connection_class = direct_send(pool.connection_class)
    return ArqRedis(
        pool,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
        default_queue_name=queue_name,
    )
