"""Promotion figures for /metrics, read from the promotion store at scrape time (the workers
record them; the web process exposes them): base drift per cluster and the promoted image of
each pool. Does network I/O (Redis); a store that cannot be read yields no samples."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.adapters import promotion_store
from pipeline.core.errors import TemporaryError


class PromotionCollector(Collector):
    def __init__(self, store: promotion_store.PromotionStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        try:
            drift = self._store.drift()
            promoted = {
                cluster: self._store.promoted(cluster)
                for cluster in self._store.promoted_clusters()
            }
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
        for cluster, found in sorted(drift.items()):
            drifted.add_metric([cluster], 1.0 if found.drifted else 0.0)
            check_failed.add_metric([cluster], 1.0 if found.error else 0.0)
            checked.add_metric([cluster], found.checked_at)
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
        yield from (drifted, check_failed, checked, count, pools, promoted_at)
