"""The GitOps repository as the promotion stage reads it (ports.EnvBranches): a promotion commit,
the head of a branch, and what merging a pull request into its env branch gives, from the
worker's bare mirror (cloned on first use, fetched as needed). Does I/O: Git, files, network.

Each call opens the mirror and closes it again: a GitRepo keeps `git cat-file` processes and
is not thread-safe, and the mirror is shared with the event and build tasks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.adapters import git as gitadapter
from pipeline.core import gate, repo


class MirrorBranches:
    def __init__(self, *, path: Path, url: str) -> None:
        self._path = path
        self._url = url

    @classmethod
    def for_url(cls, workdir: Path, url: str) -> MirrorBranches:
        """The mirror every worker keeps of `url` under `workdir`."""
        return cls(path=gitadapter.mirror_path(workdir, url), url=url)

    @contextmanager
    def _mirror(self) -> Iterator[gitadapter.GitRepo]:
        with gitadapter.GitRepo.ensure_mirror(self._path, self._url) as mirror:
            yield mirror

    def at_commit(self, commit_sha: str, *, branch: str) -> repo.Repository:
        with self._mirror() as mirror:
            if not mirror.exists(commit_sha):
                mirror.fetch(branch)
            return mirror.load(commit_sha)

    def at_branch(self, branch: str) -> repo.Repository:
        with self._mirror() as mirror:
            mirror.fetch(branch)
            return mirror.load(f"refs/heads/{branch}")

    def pull_request_merge(self, head_sha: str, *, branch: str, pr_number: int) -> gate.MergeResult:
        """The merge of the pull request's head into the current `branch` head (SPEC section 3:
        the gate judges what the merge would promote, not the head alone): GitHub's
        refs/pull/<n>/merge when it is that merge, else computed here."""
        with self._mirror() as mirror:
            # refs/pull/<n>/* (GitHub's head and merge refs) as a pattern: no error where
            # there are none (plain Git servers)
            mirror.fetch(branch, f"refs/pull/{pr_number}/*")
            if not mirror.exists(head_sha):
                mirror.fetch()
            merge = mirror.merge(
                f"refs/heads/{branch}", head_sha, offered=f"refs/pull/{pr_number}/merge"
            )
            return gate.MergeResult(
                repository=mirror.load(merge.commit_sha) if merge.commit_sha else None,
                commit_sha=merge.commit_sha,
                conflicts=merge.conflicts,
                source=merge.source,
                unrelated=merge.unrelated,
            )
