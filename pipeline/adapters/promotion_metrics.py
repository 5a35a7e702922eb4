"""Promotion figures for /metrics, read from the promotion store at scrape time (the workers
record them; the web process exposes them): base drift per cluster (and since when it is
unresolved), the promoted image of each pool and where its last rollout stands. Label values
are cluster and pool names (bounded by the repository), image names in `_info` only; never a
build id or a commit. Does network I/O (Redis); a store that cannot be read yields no samples."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.adapters import promotion_store
from pipeline.core import rollout
from pipeline.core.errors import TemporaryError


class PromotionCollector(Collector):
    def __init__(self, store: promotion_store.PromotionStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        try:
            drift = self._store.drift()
            drift_since = self._store.drift_since()
            clusters = self._store.promoted_clusters()
            promoted = {cluster: self._store.promoted(cluster) for cluster in clusters}
            rollouts = {cluster: self._store.rollouts(cluster) for cluster in clusters}
        except TemporaryError:
            return
        drifted = GaugeMetricFamily(
            "layering_base_drift",
            "1 when the cluster's MCO base image differs from cluster.yaml baseImage",
            labels=["cluster"],
        )
        check_failed = GaugeMetricFamily(
            "layering_base_drift_check_failed",
            "1 when the last base drift check could not read the cluster's ConfigMap",
            labels=["cluster"],
        )
        checked = GaugeMetricFamily(
            "layering_base_drift_checked_timestamp_seconds",
            "When base drift was last checked",
            labels=["cluster"],
        )
        since = GaugeMetricFamily(
            "layering_base_drift_since_timestamp_seconds",
            "When the cluster's base drift, still unresolved, was first found (drifted only)",
            labels=["cluster"],
        )
        for cluster, found in sorted(drift.items()):
            drifted.add_metric([cluster], 1.0 if found.drifted else 0.0)
            check_failed.add_metric([cluster], 1.0 if found.error else 0.0)
            checked.add_metric([cluster], found.checked_at)
            if found.drifted and cluster in drift_since:
                since.add_metric([cluster], drift_since[cluster])
        pools = GaugeMetricFamily(
            "layering_promoted_pool_info",
            "The image and digest each pool was last promoted to (value 1)",
            labels=["cluster", "pool", "image", "digest"],
        )
        promoted_at = GaugeMetricFamily(
            "layering_promoted_timestamp_seconds",
            "When each pool's image was last promoted",
            labels=["cluster", "pool"],
        )
        count = GaugeMetricFamily(
            "layering_promoted_pools", "Pools with a promoted image", labels=["cluster"]
        )
        for cluster, by_pool in promoted.items():
            count.add_metric([cluster], float(len(by_pool)))
            for pool, record in sorted(by_pool.items()):
                pools.add_metric([cluster, pool, record.image, record.digest], 1.0)
                promoted_at.add_metric([cluster, pool], record.promoted_at)
        yield from (drifted, check_failed, checked, since, count, pools, promoted_at)
        yield from _rollouts(rollouts)


def _rollouts(rollouts: dict[str, dict[str, rollout.RolloutRecord]]) -> Iterator[Metric]:
    """The last state a rollout watch recorded for each pool (kept until the next promotion)."""
    degraded = GaugeMetricFamily(
        "layering_rollout_degraded",
        "1 when the pool's last rollout of a promoted image ended Degraded (MCO condition)",
        labels=["cluster", "pool"],
    )
    machines = GaugeMetricFamily(
        "layering_rollout_machines",
        "Machines in the pool at its last rollout observation",
        labels=["cluster", "pool"],
    )
    updated = GaugeMetricFamily(
        "layering_rollout_updated_machines",
        "Machines on the promoted image at the pool's last rollout observation",
        labels=["cluster", "pool"],
    )
    for cluster, by_pool in sorted(rollouts.items()):
        for pool, record in sorted(by_pool.items()):
            is_degraded = record.phase == rollout.Phase.DEGRADED.value
            degraded.add_metric([cluster, pool], 1.0 if is_degraded else 0.0)
            machines.add_metric([cluster, pool], float(record.total))
            updated.add_metric([cluster, pool], float(record.updated))
    yield from (degraded, machines, updated)
