"""The EventMetrics port: queue latency of event tasks, recorded as a Redis histogram
(adapters/metrics.py) that the web process exposes on /metrics. Does network I/O (Redis); an
observation lost to a Redis fault is not an error."""

from __future__ import annotations

import redis

from pipeline.adapters import metrics


class RedisEventMetrics:
    def __init__(self, client: redis.Redis[bytes]) -> None:
        self._client = client

    def queue_latency(self, seconds: float) -> None:
        metrics.observe(self._client, metrics.QUEUE_LATENCY, seconds, label="events")
