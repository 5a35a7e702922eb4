"""Upgrade branches and pull requests (flows/upgrade.py). Does I/O: Git, Redis, GitHub.

`UpgradeBranches` is ports_upgrade.UpgradeBranches on the promotion writer's machinery
(branch_writer.py: a private scratch repository, the branch's Redis lock, a credential helper
for the remote): the default branch's head plus one commit bumping baseImage, force-pushed to
`layering/upgrade-<cluster>-<digest>` unless that branch already holds the same change on the
same head (then nothing is pushed and the pull request keeps its head and checks).

`GitHubUpgradeRequests` keeps one open pull request per upgrade branch (updated in place, never
a second). `RedisUpgradeClaims`: `SET NX` of `layering:upgrade:<cluster>:<base digest>`, so a
drift opens its pull request once per new base across beat runs and workers.

    branches = UpgradeBranches(url=..., workdir=..., lock=RedisBranchLock(client))
    result = branches.push("layering/upgrade-nonprod-1f0c…", base_branch="main", path=...,
                           change_for=...)
"""

from __future__ import annotations

import contextlib

import git
import redis

from pipeline.adapters import branch_writer, github
from pipeline.adapters import git as gitadapter
from pipeline.core import ports_upgrade, promotion_commit
from pipeline.core.errors import TemporaryError

CLAIM_SECONDS = 90 * 24 * 3600
# how long an unsettled claim lasts: longer than opening a pull request takes, short enough that
# a worker killed before it settled the claim delays the upgrade by one drift run or two
PENDING_CLAIM_SECONDS = 600


class UpgradeBranches(branch_writer.BranchWriter):
    def push(
        self,
        branch: str,
        *,
        base_branch: str,
        path: str,
        change_for: ports_upgrade.UpgradeChangeFor,
    ) -> promotion_commit.WriteResult:
        with self._lock.hold(branch), self._scratch() as scratch:
            head = self._fetch(scratch, base_branch)
            with gitadapter.GitRepo.open(str(scratch.git_dir)) as reader:
                model = reader.load(head)
            change = change_for(head, model, self._blob(scratch, head, path))
            commit = None if change is None else self._commit(scratch, head, change)
            if commit is None:
                return promotion_commit.WriteResult(head, None, 1, change)
            tip = self._fetch_tip(scratch, branch)
            if tip is not None and self._same_change(scratch, tip, commit):
                return promotion_commit.WriteResult(head, tip, 1, change)
            if not self._push(scratch, commit, branch, force=True):
                raise TemporaryError(
                    f"force-push to {self._safe_url} {branch} was rejected; will retry",
                    retry_after=5,
                )
            return promotion_commit.WriteResult(head, commit, 1, change)

    def _blob(self, scratch: git.Repo, head: str, path: str) -> bytes | None:
        try:
            data: bytes = scratch.git.cat_file("blob", f"{head}:{path}", stdout_as_string=False)
        except git.GitCommandError:
            return None
        return data

    def _same_change(self, scratch: git.Repo, tip: str, commit: str) -> bool:
        shape = ("log", "-1", "--format=%T %P")
        return bool(
            self._git(scratch, "git log", *shape, tip)
            == self._git(scratch, "git log", *shape, commit)
        )


class GitHubUpgradeRequests:
    def __init__(self, client: github.GitHubClient) -> None:
        self._client = client

    def open_or_update(self, *, branch: str, base: str, title: str, body: str) -> int:
        numbers = self._client.open_pulls(head=branch, base=base)
        if not numbers:
            return self._client.create_pull(head=branch, base=base, title=title, body=body)
        number = numbers[0]
        self._client.edit_pull(number, title=title, body=body)
        return number


class RedisUpgradeClaims:
    def __init__(
        self,
        client: redis.Redis[bytes],
        *,
        ttl: int = CLAIM_SECONDS,
        pending_ttl: int = PENDING_CLAIM_SECONDS,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._pending_ttl = pending_ttl

    @staticmethod
    def _key(cluster: str, new_base: str) -> str:
        return f"layering:upgrade:{cluster}:{new_base.rpartition('@')[2]}"

    def claim(self, cluster: str, new_base: str) -> bool:
        try:
            key = self._key(cluster, new_base)
            return bool(self._client.set(key, b"pending", nx=True, ex=self._pending_ttl))
        except redis.RedisError as exc:
            raise TemporaryError(f"claiming the upgrade of {cluster}: Redis: {exc}") from exc

    def settle(self, cluster: str, new_base: str) -> None:
        """The pull request is open: keep the claim for CLAIM_SECONDS."""
        try:
            self._client.set(self._key(cluster, new_base), b"opened", ex=self._ttl)
        except redis.RedisError as exc:
            raise TemporaryError(f"settling the upgrade of {cluster}: Redis: {exc}") from exc

    def release(self, cluster: str, new_base: str) -> None:
        with contextlib.suppress(redis.RedisError):
            self._client.delete(self._key(cluster, new_base))


def origin_url(checkout: str) -> str | None:
    """The `origin` remote of a checkout (where `layering upgrade --open-pr` pushes when
    LAYERING_REPO_URL is not set); None without one."""
    try:
        with git.Repo(checkout) as repository:
            return str(repository.remotes.origin.url) if "origin" in repository.remotes else None
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
