"""Building ahead of a cluster upgrade: a release payload (or the base the cluster already
runs, seen by the drift check) -> the new base -> what it rebuilds -> a branch bumping the
cluster's baseImage and one pull request into the default branch, whose normal builds then run
on the new base. Does I/O only through the ports it is given (core/ports_upgrade.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core import changes, drift, ports_upgrade, promotion_commit, release_payload, repo
from pipeline.core import upgrade as upgrade_core
from pipeline.core.errors import PermanentError

PLAIN_GIT_HINT = (
    "this Git server has no pull request API here: open a merge request from {branch} into "
    "{base} by hand (or set LAYERING_GITHUB_TOKEN and LAYERING_GITHUB_REPOSITORY)"
)


@dataclass(frozen=True)
class Opened:
    """What `open_request` did: the branch, its commit (None: the default branch already has
    the new base), the pull request (None on a plain Git server), and what to tell the user."""

    upgrade: upgrade_core.Upgrade
    branch: str
    commit_sha: str | None
    pull_request: int | None
    message: str


def from_release(
    repository: repo.Repository,
    cluster: str,
    *,
    release: str,
    payloads: ports_upgrade.ReleaseReader,
    tag: str | None = None,
) -> tuple[upgrade_core.Upgrade, release_payload.NodeImage]:
    current = upgrade_core.cluster_of(repository, cluster)
    node = payloads.node_image(release, tag=tag)
    return (
        upgrade_core.Upgrade(
            cluster=current.name,
            current_base=str(current.base_image),
            new_base=str(node.image),
            release=release,
            node_image_tag=node.tag,
        ),
        node,
    )


def open_request(
    upgrade: upgrade_core.Upgrade,
    *,
    default_branch: str,
    branches: ports_upgrade.UpgradeBranches,
    requests: ports_upgrade.UpgradeRequests | None,
) -> Opened:
    """Push `upgrade.branch` (the default branch's head with baseImage bumped) and open or
    update its pull request. Safe to repeat: the same head and base push nothing new."""
    seen: list[tuple[upgrade_core.Upgrade, changes.Plan]] = []

    def change_for(
        head: str, model: repo.Repository, raw: bytes | None
    ) -> promotion_commit.Change | None:
        cluster = model.clusters.get(upgrade.cluster)
        if cluster is None or raw is None:
            raise PermanentError(
                f"{upgrade.path} is not on {default_branch} at {head[:12]}; nothing to upgrade"
            )
        at_head = upgrade_core.Upgrade(
            upgrade.cluster,
            str(cluster.base_image),
            upgrade.new_base,
            upgrade.release,
            upgrade.node_image_tag,
        )
        seen.append((at_head, upgrade_core.rebuilds(model, at_head)))
        if not at_head.changed:
            return None
        return promotion_commit.Change(
            message=upgrade_core.commit_message(at_head),
            writes={upgrade.path: upgrade_core.bumped_cluster_file(raw, at_head)},
        )

    result = branches.push(
        upgrade.branch, base_branch=default_branch, path=upgrade.path, change_for=change_for
    )
    if result.commit_sha is None:
        return Opened(
            upgrade,
            upgrade.branch,
            None,
            None,
            f"{default_branch} already has baseImage {upgrade.new_base} for cluster "
            f"{upgrade.cluster}; nothing to open",
        )
    if requests is None:
        hint = PLAIN_GIT_HINT.format(branch=upgrade.branch, base=default_branch)
        return Opened(
            upgrade,
            upgrade.branch,
            result.commit_sha,
            None,
            f"pushed branch {upgrade.branch}; {hint}",
        )
    at_head, plan = seen[-1]
    number = requests.open_or_update(
        branch=upgrade.branch,
        base=default_branch,
        title=upgrade_core.title(at_head),
        body=upgrade_core.body(at_head, plan),
    )
    return Opened(
        upgrade,
        upgrade.branch,
        result.commit_sha,
        number,
        f"pull request #{number} from {upgrade.branch} into {default_branch}",
    )


def on_drift(
    cluster: repo.Cluster,
    checked: drift.Drift,
    *,
    default_branch: str,
    branches: ports_upgrade.UpgradeBranches,
    requests: ports_upgrade.UpgradeRequests | None,
    claims: ports_upgrade.UpgradeClaims,
) -> Opened | None:
    """A cluster runs another base than cluster.yaml says: open its upgrade pull request, once
    per new base (a claim in Redis: later beat runs and other workers skip it; a failure gives
    the claim back so the next run tries again, and a claim never settled because its worker
    was killed lapses on its own)."""
    if not checked.drifted:
        return None
    source = f"cluster {cluster.name}: ConfigMap machine-config-osimageurl baseOSContainerImage"
    new_base = str(upgrade_core.new_base_ref(checked.actual, source=source))
    if not claims.claim(cluster.name, new_base):
        return None
    upgrade = upgrade_core.Upgrade(
        cluster=cluster.name,
        current_base=str(cluster.base_image),
        new_base=new_base,
        release=f"{checked.release_version} (running on the cluster)"
        if checked.release_version
        else "",
    )
    try:
        opened = open_request(
            upgrade, default_branch=default_branch, branches=branches, requests=requests
        )
    except BaseException:
        claims.release(cluster.name, new_base)
        raise
    claims.settle(cluster.name, new_base)
    return opened
