"""Celery tasks of cluster upgrades (flows/upgrade.py), queue `promotions` (they write a branch
of the watched repository, as promotions do). Thin: build the adapters, call the flow.

- "layering.upgrade"(cluster, release, os_tag=None): the node OS image of release payload
  `release` as `cluster`'s new base, through the upgrade pull request (or a pushed branch on a
  plain Git server). Enqueued by the API (POST /api/upgrades).
- `drift_upgrades(settings)`: what "layering.base_drift" calls for a drifted cluster: the same
  pull request, with the base the cluster runs, once per new base.

Does I/O (through the adapters it builds).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from celery import Task

from pipeline.adapters import branch_writer, env_branches, release_payload, upgrade_requests
from pipeline.core import drift, repo, tasks
from pipeline.core.errors import PermanentError
from pipeline.core.settings import Settings
from pipeline.flows import upgrade as upgrade_flow
from workers import adapters
from workers.app import app, settings_of


def _url(settings: Settings) -> str:
    if not settings.repo_url:
        raise PermanentError("LAYERING_REPO_URL is not set: no repository to open the upgrade in")
    return settings.repo_url


def _branches(settings: Settings) -> upgrade_requests.UpgradeBranches:
    url = _url(settings)
    return adapters.once(
        "upgrade_branches",
        lambda: upgrade_requests.UpgradeBranches(
            url=url,
            workdir=settings.workdir / "upgrades",
            lock=branch_writer.RedisBranchLock(
                adapters.redis_client(settings), ttl=settings.promotion_lock_seconds
            ),
        ),
    )


def _requests(settings: Settings) -> upgrade_requests.GitHubUpgradeRequests | None:
    client = adapters.github_client(settings)
    return None if client is None else upgrade_requests.GitHubUpgradeRequests(client)


def _summary(opened: upgrade_flow.Opened) -> dict[str, Any]:
    return {
        "cluster": opened.upgrade.cluster,
        "new_base": opened.upgrade.new_base,
        "branch": opened.branch,
        "commit_sha": opened.commit_sha,
        "pull_request": opened.pull_request,
        "message": opened.message,
    }


@app.task(name=tasks.Upgrade.NAME, bind=True)  # type: ignore[untyped-decorator]
def upgrade(self: Task, cluster: str, release: str, os_tag: str | None = None) -> dict[str, Any]:
    settings = settings_of(self.app)
    mirror = env_branches.MirrorBranches.for_url(settings.workdir, _url(settings))
    repository = mirror.at_branch(settings.default_branch)
    wanted, _ = upgrade_flow.from_release(
        repository,
        cluster,
        release=release,
        payloads=release_payload.ReleasePayloads.from_settings(settings),
        tag=os_tag,
    )
    opened = upgrade_flow.open_request(
        wanted,
        default_branch=settings.default_branch,
        branches=_branches(settings),
        requests=_requests(settings),
    )
    return {**_summary(opened), "started_at": time.time()}


def drift_upgrades(settings: Settings) -> Callable[[repo.Cluster, drift.Drift], object] | None:
    """The drift check's `on_drift`: None without a repository URL to push to."""
    if not settings.repo_url:
        return None
    claims = upgrade_requests.RedisUpgradeClaims(adapters.redis_client(settings))

    def on_drift(cluster: repo.Cluster, checked: drift.Drift) -> object:
        return upgrade_flow.on_drift(
            cluster,
            checked,
            default_branch=settings.default_branch,
            branches=_branches(settings),
            requests=_requests(settings),
            claims=claims,
        )

    return on_drift
