"""Promotion through pull requests (pull-request mode, GitHub). Does I/O: Git, Redis, GitHub.

`PullRequestWriter` is a ports.BranchWriter with the same `write(branch, change_for)` contract
as the commit-mode writer, for env branches that only accept pull requests (branch protection
requiring `layering/gate/<environment>`): it renders the change as one commit on the env
branch's current head, force-pushes it to `layering/promote/<environment>` (the service's own
branch) and opens or updates the one pull request from there into `env/<environment>`. With
nothing to change, the pull request is closed. Merging it is the promotion.

`writer.merging("env/nonprod")` is the same writer for the next environment's promotion (a
digest verified upstream and soaked): the promotion branch starts from env/<environment>'s
head MERGED with the upstream branch's head (a real merge commit, never a fast-forward), the
MachineConfigs are rendered on that merge, and conflicting paths raise
core/downstream.MergeConflict (no pull request).

`GitHubPromotionRequests` is ports.PromotionRequests: merge a promotion pull request through
the API (`sha=` guards against a head that moved) and close one that is no longer needed.

    requests = GitHubPromotionRequests(github_client)
    writer = PullRequestWriter(requests=requests, url=..., workdir=..., lock=...)
    result = writer.write("env/nonprod", change_for)   # result.pull_request: its number
"""

from __future__ import annotations

from pathlib import Path

import git

from pipeline.adapters import branch_writer, git_merge, github
from pipeline.adapters import git as gitadapter
from pipeline.core import downstream, promotion_commit, promotion_request
from pipeline.core.errors import PermanentError, TemporaryError
from pipeline.core.settings import Settings


class GitHubPromotionRequests:
    """One open pull request per environment, `layering/promote/<e>` -> `env/<e>`."""

    def __init__(self, client: github.GitHubClient) -> None:
        self._client = client

    def open_or_update(self, environment: str, *, title: str, body: str) -> int:
        """The environment's promotion pull request, updated in place (or opened); any
        duplicate is closed as superseded by it."""
        head = promotion_request.branch_for(environment)
        base = f"{promotion_request.ENV_PREFIX}{environment}"
        numbers = self._client.open_pulls(head=head, base=base)
        if not numbers:
            return self._client.create_pull(head=head, base=base, title=title, body=body)
        number, *duplicates = numbers
        self._client.edit_pull(number, title=title, body=body)
        for duplicate in duplicates:
            self._close(duplicate, f"Superseded by #{number}.")
        return number

    def merge(self, number: int, *, head_sha: str) -> bool:
        return self._client.merge_pull(
            number, sha=head_sha, title=f"layering: merge promotion pull request #{number}"
        )

    def close(self, environment: str, *, reason: str) -> None:
        head = promotion_request.branch_for(environment)
        base = f"{promotion_request.ENV_PREFIX}{environment}"
        for number in self._client.open_pulls(head=head, base=base):
            self._close(number, reason)

    def _close(self, number: int, reason: str) -> None:
        self._client.comment(number, f"Closed by coreos-layering-pipeline: {reason}")
        self._client.edit_pull(number, closed=True)


class PullRequestWriter(branch_writer.BranchWriter):
    """ports.BranchWriter for pull-request mode (see the module docstring)."""

    def __init__(
        self,
        *,
        requests: GitHubPromotionRequests,
        url: str,
        workdir: Path,
        mirror: Path | None = None,
        lock: branch_writer.BranchLock | None = None,
        identity: branch_writer.Identity | None = None,
        merge_from: str | None = None,
    ) -> None:
        super().__init__(
            url=url,
            workdir=workdir,
            mirror=mirror,
            lock=lock,
            identity=identity or branch_writer.Identity(),
        )
        self._requests = requests
        self._merge_from = merge_from
        self._mirror_path = mirror

    def merging(self, upstream_branch: str) -> PullRequestWriter:
        """This writer for a downstream promotion: env/<e> merged with `upstream_branch`."""
        return PullRequestWriter(
            requests=self._requests,
            url=self._url,
            workdir=self._workdir,
            mirror=self._mirror_path,
            lock=self._lock,
            identity=self._identity,
            merge_from=upstream_branch,
        )

    def write(
        self, branch: str, change_for: promotion_commit.ChangeFor
    ) -> promotion_commit.WriteResult:
        environment = promotion_request.environment_of(branch)
        if environment is None or not branch.startswith(promotion_request.ENV_PREFIX):
            raise PermanentError(
                f"pull-request mode promotes into env/<environment> branches, not {branch!r}"
            )
        promote_branch = promotion_request.branch_for(environment)
        # the env branch's lock: one writer of its promotion branch and pull request at a time
        with self._lock.hold(branch), self._scratch() as scratch:
            head = self._fetch(scratch, branch)
            if self._merge_from is not None:
                head = self._merged(scratch, branch, head, environment)
            with gitadapter.GitRepo.open(str(scratch.git_dir)) as reader:
                base = reader.load(head)
            change = change_for(head, base)
            commit = None
            if change is not None and not change.empty:
                commit = self._commit(scratch, head, change)
            if change is None or commit is None:
                self._requests.close(
                    environment,
                    reason=f"nothing to promote: {branch} at {head[:12]} already holds what "
                    "the pipeline renders, or the promotion is blocked (see the "
                    "layering/promote/<cluster> statuses).",
                )
                return promotion_commit.WriteResult(head, None, 1, change)
            tip = self._fetch_tip(scratch, promote_branch)
            if tip is not None and self._same_promotion(scratch, tip, commit):
                commit = tip  # already there: no force-push, the pull request keeps its head
            elif not self._push(scratch, commit, promote_branch, force=True):
                raise TemporaryError(
                    f"force-push to {self._safe_url} {promote_branch} was rejected; will retry",
                    retry_after=5,
                )
            number = self._requests.open_or_update(
                environment,
                title=promotion_request.title(environment, change),
                body=promotion_request.body(environment, change, base),
            )
            return promotion_commit.WriteResult(head, commit, 1, change, pull_request=number)

    def _merged(self, scratch: git.Repo, branch: str, head: str, environment: str) -> str:
        """The merge commit of the upstream branch's head into `head` (no fast-forward; fixed
        identity and dates, so the same heads give the same commit and an unchanged pull
        request is not force-pushed again)."""
        assert self._merge_from is not None
        upstream_head = self._fetch(scratch, self._merge_from)
        merge = git_merge.compute(
            scratch.git,
            head,
            upstream_head,
            where=Path(scratch.git_dir),
            message=f"Merge {self._merge_from} into {branch}",
        )
        if merge.commit_sha is None:
            # the environment's clusters on either side (a new one may come from upstream)
            with gitadapter.GitRepo.open(str(scratch.git_dir)) as reader:
                clusters = {
                    cluster.name
                    for sha in (head, upstream_head)
                    for cluster in reader.load(sha).clusters_in(environment)
                }
            raise downstream.MergeConflict(
                environment=environment,
                upstream=self._merge_from.removeprefix(promotion_request.ENV_PREFIX),
                head_sha=head,
                conflicts=merge.conflicts,
                clusters=tuple(sorted(clusters)),
            )
        return merge.commit_sha

    def _same_promotion(self, scratch: git.Repo, tip: str, commit: str) -> bool:
        """Whether `tip` is the same change on the same head as `commit` (tree and parents)."""
        shape = ("log", "-1", "--format=%T %P")
        return bool(
            self._git(scratch, "git log", *shape, tip)
            == self._git(scratch, "git log", *shape, commit)
        )


def writer_for(
    settings: Settings,
    *,
    url: str,
    client: github.GitHubClient | None,
    lock: branch_writer.BranchLock,
) -> branch_writer.BranchWriter:
    """The promotion writer LAYERING_PROMOTION_MODE asks for: commit mode pushes to the env
    branch; pull-request mode needs the GitHub client (credentials and a repository)."""
    workdir = settings.workdir / "promotions"
    mirror = gitadapter.mirror_path(settings.workdir, url)
    if settings.resolved_promotion_mode == "commit":
        return branch_writer.BranchWriter(url=url, workdir=workdir, mirror=mirror, lock=lock)
    if client is None:
        raise PermanentError(
            "LAYERING_PROMOTION_MODE=pull-request needs GitHub: set LAYERING_GITHUB_TOKEN (or "
            "the App's id, key and installation) and LAYERING_GITHUB_REPOSITORY, or use "
            "LAYERING_PROMOTION_MODE=commit on a plain Git server"
        )
    return PullRequestWriter(
        requests=GitHubPromotionRequests(client), url=url, workdir=workdir, mirror=mirror, lock=lock
    )
