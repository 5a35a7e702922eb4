"""The ports of a cluster upgrade (flows/upgrade.py): read a release payload's node OS image,
push the upgrade branch, open or update its pull request, claim a new base once. No I/O."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pipeline.core import promotion_commit, release_payload, repo

# (default branch head, its repository, the cluster.yaml bytes there or None) -> the change
UpgradeChangeFor = Callable[[str, repo.Repository, bytes | None], promotion_commit.Change | None]


class ReleaseReader(Protocol):
    """adapters/release_payload.ReleasePayloads."""

    def node_image(self, release: str, *, tag: str | None = None) -> release_payload.NodeImage: ...


class UpgradeBranches(Protocol):
    """adapters/upgrade_requests.UpgradeBranches: `branch` made from `base_branch`'s head plus
    one commit; force-pushed only when its tree or parent differ from what is there."""

    def push(
        self, branch: str, *, base_branch: str, path: str, change_for: UpgradeChangeFor
    ) -> promotion_commit.WriteResult: ...


class UpgradeRequests(Protocol):
    """The one open pull request from `branch` into `base` (GitHub), opened or updated."""

    def open_or_update(self, *, branch: str, base: str, title: str, body: str) -> int: ...


class UpgradeClaims(Protocol):
    """Once per (cluster, new base) across beat runs and workers (Redis). A claim lapses soon
    unless settled: a worker killed between claiming and opening the pull request does not
    keep the upgrade from being opened by the next drift run."""

    def claim(self, cluster: str, new_base: str) -> bool: ...

    def settle(self, cluster: str, new_base: str) -> None: ...

    def release(self, cluster: str, new_base: str) -> None: ...
