"""Promotion to the next environment (issue 11 item 2): which environments promote from a
cluster, and the error a downstream promotion gives when env/<downstream> and env/<upstream>
conflict. Pure: no I/O.

A digest verified on an upstream cluster (and soaked) is eligible for the environments whose
clusters name that cluster in `promotesFrom`. Their promotion pull request brings the upstream
environment's content: env/<downstream> merged with env/<upstream>, plus the MachineConfigs
rendered on that merge (flows/downstream.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.core import repo
from pipeline.core.errors import PermanentError


def downstream_of(repository: repo.Repository, clusters: Iterable[str]) -> list[str]:
    """The environments with a cluster that promotes from one of `clusters`, sorted."""
    upstream = set(clusters)
    return sorted(
        {
            cluster.environment
            for cluster in repository.clusters.values()
            if cluster.promotes_from is not None and cluster.promotes_from in upstream
        }
    )


def downstream_of_environment(repository: repo.Repository, environment: str) -> list[str]:
    """The environments that promote from any cluster of `environment` (itself excluded)."""
    names = [cluster.name for cluster in repository.clusters_in(environment)]
    return [found for found in downstream_of(repository, names) if found != environment]


class MergeConflict(PermanentError):
    """env/<upstream> does not merge cleanly into env/<downstream>: a person must resolve it."""

    def __init__(
        self,
        *,
        environment: str,
        upstream: str,
        head_sha: str,
        conflicts: tuple[str, ...],
        clusters: tuple[str, ...],
    ) -> None:
        self.environment = environment
        self.upstream = upstream
        self.head_sha = head_sha  # env/<environment>'s head: where its statuses go
        self.conflicts = conflicts
        self.clusters = clusters  # env/<environment>'s clusters
        super().__init__(conflict_message(environment, upstream, conflicts))


def conflict_message(environment: str, upstream: str, conflicts: tuple[str, ...]) -> str:
    """The fix first: a commit status keeps only 140 characters."""
    listed = ", ".join(conflicts) if conflicts else "(unrelated histories)"
    return (
        f"merge env/{upstream} into env/{environment} by hand: no promotion pull request, "
        f"env/{upstream} conflicts with env/{environment} in {listed}"
    )
