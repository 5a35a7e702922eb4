"""A stored verification checked against the upstream cluster as it is now (issue 10): where the
upstream has kube access, the gate and the promotion do not take the store's word alone. The
upstream's pools, read afresh, must show the digest on a pool that is Updated, with no pool on
it degraded; otherwise the verification counts as failed, and says what the cluster runs
instead. No I/O: flows/promotion_inputs.py reads the pools through ports.ClusterReader.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from pipeline.core import commit_status, promotion, repo, rollout, verification


def pools_to_read(repository: repo.Repository, environment: str) -> dict[str, list[str]]:
    """Upstream cluster -> the pools to read, for every upstream with kube access of a cluster
    in `environment` (the rules in force say which clusters those are)."""
    found: dict[str, list[str]] = {}
    for name in sorted(promotion.upstreams(repository, environment)):
        upstream = repository.clusters.get(name)
        if upstream is not None and upstream.kube_context:
            found[name] = sorted(upstream.pools)
    return found


def confirmed(
    proven: verification.Verification, running: Sequence[rollout.Running]
) -> verification.Verification:
    """`proven` as it stands once the upstream's pools (`running`) have been read."""
    if not proven.healthy:
        return proven
    on_it = [
        pool
        for pool in running
        if pool.os_image_url and verification.digest_of(pool.os_image_url) == proven.digest
    ]
    degraded = [pool for pool in on_it if pool.state.phase is rollout.Phase.DEGRADED]
    if degraded:
        pool = degraded[0]
        return _failed(proven, f"pool {pool.pool} on it is degraded now: {pool.state.message}")
    if any(pool.state.phase is rollout.Phase.UPDATED for pool in on_it):
        return proven
    if on_it:
        pool = on_it[0]
        return _failed(
            proven,
            f"pool {pool.pool} is still updating to it "
            f"({pool.state.updated}/{pool.state.total} machines)",
        )
    return _failed(proven, f"no pool runs it now ({_what_runs(running)})")


def confirm_all(
    verifications: Mapping[tuple[str, str], verification.Verification],
    running: Mapping[str, Sequence[rollout.Running]],
) -> dict[tuple[str, str], verification.Verification]:
    """Every verification of a cluster in `running` (cluster -> its pools read afresh)
    confirmed; the others as stored."""
    return {
        (cluster, digest): (confirmed(proven, running[cluster]) if cluster in running else proven)
        for (cluster, digest), proven in verifications.items()
    }


def unreadable(
    verifications: Mapping[tuple[str, str], verification.Verification],
    cluster: str,
    reason: str,
) -> dict[tuple[str, str], verification.Verification]:
    """The verifications of a cluster whose pools cannot be read (its kube context is not in
    the kubeconfig): none can be confirmed, so none counts."""
    return {
        key: _failed(proven, f"its pools cannot be read: {reason}")
        if key[0] == cluster and proven.healthy
        else proven
        for key, proven in verifications.items()
    }


def _what_runs(running: Sequence[rollout.Running]) -> str:
    if not running:
        return "none of its pools was found"
    return ", ".join(
        f"{pool.pool} runs "
        + (
            f"sha256:{commit_status.short_digest(verification.digest_of(pool.os_image_url))}"
            if pool.os_image_url
            else "an unreadable config"
        )
        for pool in running[:2]
    )


def _failed(proven: verification.Verification, why: str) -> verification.Verification:
    return dataclasses.replace(proven, healthy=False, message=why)
