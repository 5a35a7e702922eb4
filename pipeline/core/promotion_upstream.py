"""Whether a digest may go to a cluster that promotes from another (SPEC section 7): built on the
same base as upstream, verified there, healthy, and soaked for the cluster's `soak`. The
cluster, its upstream and the soak are the rules in force (core/promotion_policy.py says which).
No I/O; promotion.plan turns a problem found here into a Refusal."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.core import commit_status, repo, verification

UNVERIFIED = "unverified"
SOAKING = "soaking"
BASE_DIFFERS = "base-differs"


@dataclass(frozen=True)
class Unproven:
    """Why a digest cannot go to a cluster yet; `kind` is a promotion.RefusalKind value."""

    reason: str
    kind: str = UNVERIFIED


def problem(
    repository: repo.Repository,
    cluster: repo.Cluster,
    *,
    image: str,
    digest: str,
    verifications: Mapping[tuple[str, str], verification.Verification],
    now: float,
) -> Unproven | None:
    """None when `digest` of `image` is proven on `cluster`'s upstream for long enough."""
    upstream_name = cluster.promotes_from
    if upstream_name is None:
        return None
    upstream = repository.clusters.get(upstream_name)
    named = f"{image}@sha256:{commit_status.short_digest(digest)}"
    if upstream is None:
        return Unproven(f"promotesFrom names unknown cluster {upstream_name!r}")
    if upstream.base_digest != cluster.base_digest:
        return Unproven(
            f"base image differs from {upstream.name}'s "
            f"({commit_status.short_digest(cluster.base_digest)} vs "
            f"{commit_status.short_digest(upstream.base_digest)}), "
            "so the build key differs: the tested bits cannot be promoted; align baseImage",
            BASE_DIFFERS,
        )
    proven = verifications.get((upstream.name, digest))
    if proven is None:
        return Unproven(f"{named} is not verified on {upstream.name}")
    if not proven.healthy:
        message = f": {proven.message}" if proven.message else ""
        return Unproven(f"{named} failed on {upstream.name}{message}")
    remaining = proven.verified_at + cluster.soak_seconds - now
    if remaining > 0:
        return Unproven(
            f"{named} soaking on {upstream.name}: "
            f"{format_duration(remaining)} of {format_duration(cluster.soak_seconds)} left",
            SOAKING,
        )
    return None


def format_duration(seconds: float) -> str:
    """3725 -> '1h2m5s'; rounds up so a remaining wait never shows as 0s."""
    total = max(0, int(-(-seconds // 1)))
    if total == 0:
        return "0s"
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{value}{unit}" for value, unit in parts if value)
