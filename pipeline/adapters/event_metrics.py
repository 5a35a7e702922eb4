"""The EventMetrics port: queue latency of event tasks and build durations, recorded as Redis
histograms (adapters/metrics.py) that the web process exposes on /metrics. Does network I/O
(Redis); an observation lost to a Redis fault is not an error."""

from __future__ import annotations

import redis

from pipeline.adapters import metrics


class RedisEventMetrics:
    def __init__(self, client: redis.Redis[bytes]) -> None:
        self._client = client

    def queue_latency(self, seconds: float) -> None:
        metrics.observe(self._client, metrics.QUEUE_LATENCY, seconds, label="events")

    def build_duration(self, seconds: float, *, outcome: str) -> None:
        metrics.observe(self._client, metrics.BUILD_DURATION, seconds, label=outcome)
