"""What is waiting, for /metrics, read from Redis at scrape time (the workers write it; the web
process exposes it, so every web replica shows the same figures): the messages on each task
queue, the commit statuses parked after GitHub refused them, and the environments whose
promotion waits (since when, against their soak). Does network I/O (Redis); what cannot be read
yields no samples, never an error on /metrics.

Label values are bounded: `queue` by core/tasks.QUEUES, `environment` and `upstream` by the
repository's environments; never a build id, a digest or a commit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.adapters import parked_statuses, promotion_waits
from pipeline.core import tasks
from pipeline.core.errors import TemporaryError

# kombu's Redis transport keeps a queue's messages of priority p > 0 in `<queue>\x06\x16<p>`
# (kombu/transport/redis.py, Channel._q_for_pri and PRIORITY_STEPS); without a priority, in
# `<queue>` itself, where the receiver's LPUSH puts them too
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)


def queue_keys(queue: str) -> list[str]:
    return [f"{queue}{PRIORITY_SEPARATOR}{step}" if step else queue for step in PRIORITY_STEPS]


class BacklogCollector(Collector):
    def __init__(self, client: redis.Redis[bytes]) -> None:
        self._client = client
        self._waits = promotion_waits.PromotionWaits(client)

    def collect(self) -> Iterator[Metric]:
        found: list[Metric] = []
        with contextlib.suppress(redis.RedisError):
            found += [self._queues(), self._parked()]
        with contextlib.suppress(TemporaryError):
            found += self._pending()
        yield from found

    def _queues(self) -> Metric:
        family = GaugeMetricFamily(
            "layering_queue_messages",
            "Task messages waiting on each queue (not yet taken by a worker)",
            labels=["queue"],
        )
        with self._client.pipeline(transaction=False) as pipe:
            for queue in tasks.QUEUES:
                for key in queue_keys(queue):
                    pipe.llen(key)
            lengths = iter(pipe.execute())
        for queue in tasks.QUEUES:
            family.add_metric([queue], float(sum(next(lengths) for _ in PRIORITY_STEPS)))
        return family

    def _parked(self) -> Metric:
        family = GaugeMetricFamily(
            "layering_parked_statuses",
            "Commit statuses GitHub refused through their retries, parked until beat resends them",
        )
        family.add_metric([], float(self._client.zcard(parked_statuses.DUE)))
        return family

    def _pending(self) -> list[Metric]:
        waits = self._waits.waits()
        since = self._waits.pending_since()
        began = GaugeMetricFamily(
            "layering_promotion_pending_since_timestamp_seconds",
            "When the environment's promotion began waiting (builds, an upstream rollout, a soak)",
            labels=["environment", "upstream"],
        )
        soak = GaugeMetricFamily(
            "layering_promotion_soak_seconds",
            "The soak of a waiting environment (the longest of its clusters' cluster.yaml soak)",
            labels=["environment", "upstream"],
        )
        for wait in waits:
            labels = [wait.environment, wait.from_upstream]
            # a wait recorded before its start was kept: the last time it was recorded
            began.add_metric(labels, since.get(wait.slot, wait.recorded_at))
            soak.add_metric(labels, wait.soak_seconds)
        return [began, soak]
