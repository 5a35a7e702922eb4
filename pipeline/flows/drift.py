"""The base drift flow (SPEC section 7), run periodically: for every cluster with kube access in
the default branch's cluster.yaml files, read the MCO's machine-config-osimageurl ConfigMap ->
the core compares it with baseImage -> record the drift for the dashboard, `layering status`
and /metrics. A cluster that cannot be read is recorded as unknown, with the reason; it never
hides the others. Does I/O only through the ports it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pipeline.core import drift, ports, repo
from pipeline.core.errors import PipelineError

log = logging.getLogger(__name__)


def check_base_drift(
    cluster: repo.Cluster, reader: ports.ClusterReader, *, store: ports.PromotionStore, now: float
) -> drift.Drift:
    checked = drift.check(cluster, reader.base_image(), now=now)
    store.record_drift(checked)
    return checked


def run(
    *,
    default_branch: str,
    branches: ports.EnvBranches,
    clusters: ports.Clusters,
    store: ports.PromotionStore,
    now: Callable[[], float],
    on_drift: Callable[[repo.Cluster, drift.Drift], object] | None = None,
) -> dict[str, bool]:
    """ "layering.base_drift": cluster -> whether it drifted (False when it could not be read).
    `on_drift` is told of each drifted cluster (flows/upgrade.on_drift opens its upgrade pull
    request); its failure is logged and retried on the next run, never hiding other clusters."""
    repository = branches.at_branch(default_branch)
    drifted: dict[str, bool] = {}
    for name, cluster in sorted(repository.clusters.items()):
        if cluster.kube_context is None:
            continue
        # one unreachable or misconfigured cluster must not hide the others' drift; the next
        # periodic run checks it again
        try:
            with clusters.connect(cluster.kube_context) as reader:
                checked = check_base_drift(cluster, reader, store=store, now=now())
        except PipelineError as exc:
            checked = drift.unreadable(cluster, str(exc), now=now())
            store.record_drift(checked)
        drifted[name] = checked.drifted
        if checked.drifted and on_drift is not None:
            try:
                on_drift(cluster, checked)
            except PipelineError as exc:
                log.warning("cluster %s: upgrade pull request not opened: %s", name, exc)
    return drifted
