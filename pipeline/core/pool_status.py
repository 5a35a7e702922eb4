"""Where every pool stands, as rows for `layering status` and the dashboard: per cluster and
pool, the promoted digest, its verification (rollout- or time-based), the last rollout state and
the base image check. No I/O: the caller loads the repository and the store's records
(`PromotionStore.pool_records`) and hands them in.

    rows = pool_status.status_rows(repository, store.pool_records(repository.clusters), now=now)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.core import drift, promotion, repo, rollout, verification


@dataclass(frozen=True)
class PoolRecords:
    """What the promotion store holds about a set of clusters."""

    # (cluster, digest) -> its verification
    verifications: Mapping[tuple[str, str], verification.Verification] = field(default_factory=dict)
    promoted: Mapping[str, Mapping[str, verification.Promoted]] = field(
        default_factory=dict
    )  # cluster -> pool ->
    rollouts: Mapping[str, Mapping[str, rollout.RolloutRecord]] = field(
        default_factory=dict
    )  # cluster -> pool ->
    drift: Mapping[str, drift.Drift] = field(default_factory=dict)  # cluster ->


def status_rows(
    repository: repo.Repository, records: PoolRecords, *, now: float
) -> list[Mapping[str, str]]:
    """Per cluster and pool: promoted digest, verification (rollout- or time-based), rollout."""
    rows: list[Mapping[str, str]] = []
    for name, cluster in sorted(repository.clusters.items()):
        promoted = records.promoted.get(name, {})
        rollouts = records.rollouts.get(name, {})
        images = rollout.expected_images(repository, name)
        for pool, image in sorted(cluster.pools.items()):
            url = images.get(pool) or (promoted[pool].os_image_url if pool in promoted else "")
            digest = verification.digest_of(url)
            proven = records.verifications.get((name, digest)) if digest else None
            rows.append(
                {
                    "cluster": name,
                    "environment": cluster.environment,
                    "pool": pool,
                    "image": image,
                    "digest": digest or "-",
                    "verification": _verification_text(proven, now=now),
                    "rollout": _rollout_text(rollouts.get(pool), url),
                    "base": _drift_text(records.drift.get(name)),
                }
            )
    return rows


def _verification_text(proven: verification.Verification | None, *, now: float) -> str:
    if proven is None:
        return "not verified"
    age = promotion.format_duration(now - proven.verified_at)
    if not proven.healthy:
        return f"failed {age} ago: {proven.message}"
    if proven.method is verification.VerificationMethod.TIME:
        return f"time-based (no kube access): promoted {age} ago"
    return f"rolled out {age} ago"


def _rollout_text(record: rollout.RolloutRecord | None, url: str) -> str:
    if record is None or (url and record.os_image_url != url):
        return "-"
    text = f"{record.phase} {record.updated}/{record.total}"
    return f"{text}: {record.message}" if record.message else text


def _drift_text(checked: drift.Drift | None) -> str:
    if checked is None:
        return "-"
    if checked.error:
        return f"unknown: {checked.error}"
    if checked.drifted:
        return f"DRIFT: cluster runs {checked.actual} ({checked.release_version})"
    return f"matches ({checked.release_version})"
