"""Histograms that worker processes record in Redis and the web process exposes on /metrics
(queue latency, build durations): Celery workers have no HTTP endpoint of their own. Does
network I/O (Redis).

Each histogram is one Redis hash: `count`, `sum` and one cumulative-free field per bucket
upper bound; a Prometheus collector turns it into a histogram family at scrape time. A build's
duration is observed by BuildStore.save (adapters/build_records.py) when its record first turns
terminal, whichever path ends it; queue latency by the event tasks (adapters/event_metrics.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

import redis
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.client import Pipeline
from redis.exceptions import RedisError

PREFIX = "layering:metrics:"
QUEUE_LATENCY = "layering_queue_latency_seconds"
BUILD_DURATION = "layering_build_duration_seconds"
BUCKETS: dict[str, tuple[float, ...]] = {
    QUEUE_LATENCY: (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    BUILD_DURATION: (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
}
# the BuildState values counted as finished builds: a cancelled build was superseded, and
# counting it would water down the failure rate LayeringBuildFailureRateHigh computes
BUILD_OUTCOMES = ("failed", "skipped", "succeeded")
# each histogram's one label: which queue waited, how a build ended
LABEL_NAMES = {QUEUE_LATENCY: "queue", BUILD_DURATION: "outcome"}
# label values shown at zero before their first observation: an alert's rate() sees the first
# failure as an increase rather than as a series that appears
INITIAL_LABELS: dict[str, tuple[str, ...]] = {
    QUEUE_LATENCY: ("events",),
    BUILD_DURATION: BUILD_OUTCOMES,
}
HELP = {
    QUEUE_LATENCY: "Time from a delivery being queued to a worker starting on it",
    BUILD_DURATION: "Build durations (queued to finished) by outcome",
}


def _field(bound: float) -> str:
    return f"le:{bound:g}"


def observe(client: redis.Redis[bytes], name: str, value: float, *, label: str = "") -> None:
    """Record one observation; losing one to a Redis fault is acceptable (best effort)."""
    try:
        with client.pipeline(transaction=True) as pipe:
            add(pipe, name, value, label=label)
            pipe.execute()
    except RedisError:
        pass


def add(pipe: Pipeline[bytes], name: str, value: float, *, label: str = "") -> None:
    """Queue one observation on `pipe`: it lands with what the rest of its transaction writes."""
    buckets = BUCKETS[name]
    index = bisect.bisect_left(buckets, value)
    key = f"{PREFIX}{name}:{label}"
    pipe.hincrby(key, "count", 1)
    pipe.hincrbyfloat(key, "sum", value)
    pipe.hincrby(key, _field(buckets[index]) if index < len(buckets) else "le:+Inf", 1)
    pipe.sadd(f"{PREFIX}{name}", label)


class RedisHistograms(Collector):
    def __init__(self, client: redis.Redis[bytes]) -> None:
        self._client = client

    def _family(self, name: str, labels: Sequence[str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, HELP[name], labels=[LABEL_NAMES[name]])
        for label in labels:
            raw = self._client.hgetall(f"{PREFIX}{name}:{label}")
            values = {k.decode(): float(v) for k, v in raw.items()}
            running = 0.0
            buckets: list[tuple[str, float]] = []
            for bound in BUCKETS[name]:
                running += values.get(_field(bound), 0.0)
                buckets.append((f"{bound:g}", running))
            buckets.append(("+Inf", values.get("count", 0.0)))
            family.add_metric([label], buckets, values.get("sum", 0.0))
        return family

    def collect(self) -> Iterator[Metric]:
        for name in BUCKETS:
            try:
                labels = {m.decode() for m in self._client.smembers(f"{PREFIX}{name}")}
                yield self._family(name, sorted(labels | set(INITIAL_LABELS[name])))
            except RedisError:
                continue
