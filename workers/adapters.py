"""The adapters of one worker process, built once and handed to the task shims: one Redis
client (one connection pool) per process instead of one per call. A prefork child gets fresh
ones: `worker_process_init` drops what the parent built before the fork. Does no I/O itself
(redis-py connects lazily)."""

from __future__ import annotations

from typing import Any

import redis
from celery.signals import worker_process_init

from pipeline.core.settings import Settings

_built: dict[str, Any] = {}


def redis_client(settings: Settings) -> redis.Redis[bytes]:
    """The process's Redis client for the configured URL."""
    client = _built.get("redis")
    if client is None:
        client = redis.Redis.from_url(
            settings.redis_url.get_secret_value(), socket_timeout=30, socket_connect_timeout=10
        )
        _built["redis"] = client
    assert isinstance(client, redis.Redis)
    return client


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _forget_the_parents(**_: Any) -> None:
    _built.clear()
